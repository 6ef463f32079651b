"""Where a command will write, checked before it does any work: a bad output path is bad input (exit 2, one line
naming the option and the path), found before anything is computed or half written."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from nas.errors import InputError


def output_file(path: str | Path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as a file this process can create or replace; ``option`` names it in the error (``-o``).
    ``suffixes``: the formats the command writes, told by the file's suffix (any when empty)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a directory; name a file")
    if suffixes and path.suffix not in suffixes:
        raise InputError(f"{option} {path}: unknown format {path.suffix!r}; use {', '.join(suffixes)}")
    parent = path.parent
    if not parent.exists():
        raise InputError(f"{option} {path}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"{option} {path}: {parent} is not a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{option} {path}: not writable")
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot create files in {parent}")
    return path


def output_dir(path: str | Path, option: str) -> Path:
    """``path`` as a folder this process can create (with its parents) or write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: is a file, not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot write in {existing}")
    return path


def distinct_outputs(outputs: Sequence[tuple[str, Path | None]],
                     reads: Sequence[tuple[str, Path | None]] = ()) -> None:
    """Each output a file of its own: not a file the command reads (``reads``: what names it, and the file, as
    ``nas.io.file_read`` finds it behind a path, ``zoo:NAME`` or a shipped space's name), which writing would
    destroy, nor another output, which would keep only the last one written."""
    seen: dict[Path, str] = {}
    for what, path in reads:
        if path is not None and path.is_file():
            seen.setdefault(path.resolve(), what)
    for option, path in outputs:
        if path is None:
            continue
        if path.resolve() in seen:
            raise InputError(f"{option} {path}: the same file as {seen[path.resolve()]}; name another")
        seen[path.resolve()] = option


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write to, which replaces ``path`` once written whole: a crash, a kill
    or Ctrl-C while writing leaves the old file as it was (and readers never see half of one), and no temporary
    file behind but after a SIGKILL."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a device or a pipe (-o /dev/null): written, never replaced
        yield path
        return
    target = path.resolve()  # through a symlink: the file it names is replaced and the link kept
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if target.exists():
            shutil.copymode(target, tmp)  # the new file keeps the old one's permissions
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, text: str) -> None:
    """``text`` to ``path`` through ``replacing``."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
