"""Deploying compiled genomes: ONNX export, running the result under onnxruntime, and which genomes
``torch.export`` cannot capture.

The export goes through PyTorch's current exporter, ``torch.onnx.export(..., dynamo=True)``: ``torch.export``
captures the graph, then ONNX Script translates it. There is no fallback to the deprecated TorchScript exporter,
so that one genome always exports the same way. The batch axis is dynamic (named ``batch``); the input's
channels and resolution are fixed at the genome's.

``module_session`` is the piece a latency runtime needs: a module and an input shape in, an
``onnxruntime.InferenceSession`` out, with no file written, for that shape alone.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from nas.compiler import compile_model
from nas.errors import InputError
from nas.genome import Genome
from nas.io import load_genome
from nas.outputs import replacing

if TYPE_CHECKING:
    import onnxruntime

# The exported graph agrees with PyTorch when the largest absolute difference of the outputs is at most this
# fraction of the output's scale (its largest magnitude). float32 rounds at ~1e-7 relative, and onnxruntime fuses
# and reorders sums differently from PyTorch, so ~1e-6 relative is expected after a few dozen layers (the zoo:
# 3e-7 to 4e-6); a wrong operator, weight or layout moves the output by 1e-2 or more. 1e-4 lies between.
TOLERANCE = 1e-4

# Zoo genomes that torch.export.export(model, (x,)) cannot capture, with the reason; tests/test_onnx.py checks
# that every other zoo genome exports and that each one listed here still fails.
TORCH_EXPORT_EXCEPTIONS: dict[str, str] = {}

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
              "tensorrt": "TensorrtExecutionProvider"}
_MAX_BATCH = 4096  # the dynamic batch axis's upper bound; torch.export wants one, any size a user runs fits


class OnnxExportError(InputError):
    """A genome the exporter cannot express; the message names the genome and the reason in one line."""


def export_module(model: nn.Module, input_shape: Sequence[int], *, dynamic_batch: bool = True,
                  label: str = "model") -> torch.onnx.ONNXProgram:
    """``model`` (in eval mode, restored afterwards) as an ONNX program for inputs of ``input_shape``
    (batch first). With ``dynamic_batch``, any batch size runs; otherwise only ``input_shape``'s.
    Raises OnnxExportError, naming ``label``, when the exporter cannot express the model."""
    shape = tuple(int(n) for n in input_shape)
    dynamic_shapes = None
    if dynamic_batch:
        # torch.export specialises a dimension it sees as 1, so the example batch is 2; batch 1 still runs.
        shape = (max(shape[0], 2), *shape[1:])
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=_MAX_BATCH)},)
    example = torch.zeros(shape)
    was_training = model.training
    model.eval()
    try:
        with _quiet_exporter():
            program = torch.onnx.export(model, (example,), dynamo=True, verbose=False, input_names=["input"],
                                        output_names=["output"], dynamic_shapes=dynamic_shapes)
    except Exception as err:  # the exporter's errors have many types, all meaning the same to a user
        raise OnnxExportError(f"{label}: cannot export to ONNX: {_reason(err)}") from err
    finally:
        model.train(was_training)
    return program


def export_onnx(genome: Genome | str | Path | dict[str, Any], path: str | Path, *, seed: int = 0,
                dynamic_batch: bool = True) -> Path:
    """Compile ``genome`` (a Genome, a mapping, a YAML path or ``zoo:NAME``) with weights from ``seed`` and
    write it to ``path`` as ONNX, at the genome's input resolution. Weights over the exporter's limit (1.5 GiB)
    go to ``path.data``, which must be new or this path's own from an earlier export."""
    label = str(genome) if isinstance(genome, (str, Path)) else None
    genome = load_genome(genome)
    model = compile_model(genome, seed=seed)
    program = export_module(model, _input_shape(genome), dynamic_batch=dynamic_batch, label=label or genome.name)
    path = Path(path)
    _save(program, path)
    return path


def _save(program: torch.onnx.ONNXProgram, path: Path) -> None:
    """``program`` written through ``nas.outputs.replacing``, by way of a fresh folder beside ``path``: the
    exporter alone decides whether the weights go to ``NAME.data`` (a name it writes into the model), so what it
    wrote is looked at before anything of the user's is replaced."""
    with replacing(path) as out:
        if out == path:  # a device or a pipe: written, never replaced
            with _quiet_exporter():
                program.save(path)
            return
        target = path.resolve()
        data = target.with_name(f"{target.name}.data")
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            with _quiet_exporter():
                program.save(staging / target.name)
            if (staging / data.name).exists():
                if data.exists() and not _keeps_weights_in(target, data):
                    raise InputError(f"{path}: the weights go to {data}, which exists and is no earlier export's; "
                                     "move it or name another output")
                os.replace(staging / data.name, data)
            os.replace(staging / target.name, out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _keeps_weights_in(model: Path, data: Path) -> bool:
    """Whether the ONNX file ``model`` reads its weights from ``data``: a file an earlier export wrote, which the
    new one may replace (anything else there is the user's)."""
    import onnx

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:  # no model there, or not ONNX: nothing of an export's
        return False
    return any(entry.key == "location" and entry.value == data.name
               for tensor in proto.graph.initializer for entry in tensor.external_data)


def onnx_session(model: str | Path | bytes, providers: Sequence[str] | None = None, *,
                 threads: int | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime session for an ONNX file (or its bytes). ``providers``: names such as ``cpu``, ``cuda``,
    ``tensorrt`` or onnxruntime's own (``CUDAExecutionProvider``), in order of preference; the CPU provider
    when None, and always last, for the operators others lack. ``threads`` sets intra-op threads."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen = [_PROVIDERS.get(p.lower(), p) for p in (providers or ["cpu"])]
    missing = [p for p in chosen if p not in available]
    if missing:
        raise InputError(f"onnxruntime {ort.__version__} on this machine lacks {', '.join(missing)}; "
                         f"it has {', '.join(available)}")
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
    if threads is not None:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=chosen)


def module_session(model: nn.Module, input_shape: Sequence[int], providers: Sequence[str] | None = None, *,
                   threads: int | None = None, dynamic_batch: bool = False) -> onnxruntime.InferenceSession:
    """``model`` exported for ``input_shape`` (batch first) and loaded in onnxruntime, without touching disk.
    ``providers`` and ``threads`` as for ``onnx_session``. The batch is fixed unless ``dynamic_batch``: a
    timing runs one shape, and a symbolic batch slows the export of long unrolled graphs (torch.export of a
    VMamba cut to one block per stage: 31 s with a fixed batch, 433 s with a dynamic one)."""
    program = export_module(model, input_shape, dynamic_batch=dynamic_batch, label=type(model).__name__)
    return onnx_session(program.model_proto.SerializeToString(), providers, threads=threads)


def run_onnx(session: onnxruntime.InferenceSession, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The session's first output for input ``x``."""
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return session.run(None, {session.get_inputs()[0].name: array.astype(np.float32, copy=False)})[0]


@dataclass(frozen=True)
class OnnxCheck:
    """How a genome's ONNX export under onnxruntime's CPU provider agrees with PyTorch, over the batch sizes
    tried (1, and 2 for the dynamic batch axis)."""

    max_abs_diff: float
    scale: float  # the largest magnitude of PyTorch's outputs
    export_seconds: float

    @property
    def equal(self) -> bool:
        return self.max_abs_diff <= TOLERANCE * self.scale


def check_onnx(genome: Genome | str | Path | dict[str, Any], *, seed: int = 0,
               batches: Sequence[int] = (1, 2)) -> OnnxCheck:
    """Export ``genome``, run it under onnxruntime's CPU provider and compare with the PyTorch model in eval
    mode on the same random input, at each of ``batches``. Raises OnnxExportError when it cannot be exported."""
    label = str(genome) if isinstance(genome, (str, Path)) else None
    genome = load_genome(genome)
    model = compile_model(genome, seed=seed).eval()
    _spread_weights(model, seed)
    start = time.perf_counter()
    program = export_module(model, _input_shape(genome), label=label or genome.name)
    seconds = time.perf_counter() - start
    session = onnx_session(program.model_proto.SerializeToString())
    generator = torch.Generator().manual_seed(seed)
    diff = scale = 0.0
    for batch in batches:
        x = torch.randn((batch, *_input_shape(genome)[1:]), generator=generator)
        with torch.inference_mode():
            expected = model(x).numpy()
        diff = max(diff, float(np.abs(run_onnx(session, x) - expected).max()))
        scale = max(scale, float(np.abs(expected).max()))
    return OnnxCheck(max_abs_diff=diff, scale=scale, export_seconds=seconds)


def _spread_weights(model: nn.Module, seed: int) -> None:
    """Add small noise to every weight. Layer scales start at 1e-6 and some projections at zero, which would
    leave their branches out of the output, and so out of the comparison; with noise every branch counts."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.is_floating_point():
                param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * 0.02)


def _input_shape(genome: Genome) -> tuple[int, int, int, int]:
    height, width = genome.input.resolution
    return 1, genome.input.channels, height, width


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs, warns and prints as it goes (missing torchvision ops, deprecations, the traced graph on
    failure); a command's output should hold its own lines only, and a failure one line. torch's loggers are
    created lazily with levels of their own, so logging is paused for the export rather than tuned per logger."""
    paused = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(paused)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(err: BaseException) -> str:
    """The innermost cause's first line: the exporter wraps the real reason in advice about its steps."""
    while (inner := err.__cause__ or err.__context__) is not None and inner is not err:
        err = inner
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
