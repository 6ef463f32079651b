"""Latency gets its device to itself.

The rule: on each host, every device has a readers-writer lock (two ``flock`` files). Building, scoring and
training a trial hold it shared; measuring latency holds it exclusively. So a measurement never overlaps another
trial's compute on the same device, whether that trial runs in this process, in a ``--workers`` process, in a
Ray worker on the same node, or in another ``nas search`` on the machine. Devices on other hosts, or other GPUs,
do not wait. A waiting measurement blocks new shared holders (writer preference), so it cannot starve.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

LOCK_DIR_ENV = "NAS_LOCK_DIR"


def lock_dir() -> Path:
    path = Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"nas-locks-{os.getuid()}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_key(device: str) -> str:
    """One name per physical device: CUDA devices by UUID (indices change with CUDA_VISIBLE_DEVICES)."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            index = torch.device(device).index
            index = torch.cuda.current_device() if index is None else index
            uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
            if uuid is not None:
                return f"cuda-{uuid}"
            return f"cuda-{index}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", device)


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def device_slot(device: str, exclusive: bool) -> Iterator[None]:
    """Hold ``device`` shared (compute) or exclusively (a latency measurement)."""
    base = lock_dir() / device_key(device)
    gate, main = base.with_suffix(".gate"), base.with_suffix(".lock")
    if exclusive:
        with _flock(gate, fcntl.LOCK_EX), _flock(main, fcntl.LOCK_EX):
            yield
    else:
        with _flock(gate, fcntl.LOCK_EX):  # waits behind a queued measurement
            pass
        with _flock(main, fcntl.LOCK_SH):
            yield
