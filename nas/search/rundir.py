"""A run directory and its storage, checked before anything is opened or written.

A run's trials live in its Optuna storage (``study.db`` unless ``--storage`` says otherwise). Opening a missing
SQLite file creates an empty one, and a resumed or reported run on an empty storage would start over and
overwrite its results. So a storage a run needs is checked first, read-only, and refused (exit 2, one line
naming the file) when it is missing, unreadable or not an Optuna study. A new run writes its files only once it
is ready to start, and removes what it wrote when it fails before its first trial (:class:`NewRun`).
"""
from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import yaml
from pydantic import ValidationError

from nas.errors import InputError, from_validation_error
from nas.io import parse_yaml
from nas.outputs import write_atomic
from nas.search.options import SearchOptions
from runners.storage import JOURNAL, StorageUnreachable, open_storage

RUN_FILE, SPACE_FILE, DB_FILE = "run.yaml", "space.yaml", "study.db"
REFERENCES_FILE = "references.json"  # the reference architectures' scores (nas.search.references)
WINNER_LATENCY_FILE = "winner_latency.json"  # a winner whose latency came from the table, timed end to end
WEIGHTS_FILE, WEIGHTS_INFO = "best_weights.pt", "best_weights.yaml"  # a supernet search's winner, with its weights
OBJECTIVE_ATTR = "nas.objective"  # the study's record of the proxy objective's fit (objective_identity)
# What a finished (or interrupted) search leaves; a new run never writes over any of them.
RESULTS = (DB_FILE, "trials.csv", "report.md", "best.yaml", "best_model.py", "pareto.png", "pareto",
           REFERENCES_FILE, WINNER_LATENCY_FILE, WEIGHTS_FILE, WEIGHTS_INFO)
# Folders a run makes for its workers' logs and Ray's files, removed with the run's files when no trial ran.
RUN_FOLDERS = ("workers", "ray")
SQLITE = "sqlite:///"
SQLITE_MAGIC = b"SQLite format 3\x00"
# Tables every Optuna RDB storage has; a database without them is not a study's.
OPTUNA_TABLES = {"studies", "trials", "version_info"}


def storage_url(run_dir: Path, options: SearchOptions) -> str:
    return options.storage or f"{SQLITE}{(run_dir / DB_FILE).resolve()}"


def storage_file(url: str | None) -> Path | None:
    """The file an SQLite or journal storage lives in; None for a database server."""
    for prefix in (SQLITE, JOURNAL):
        if url and url.startswith(prefix):
            return Path(url[len(prefix):])
    return None


def default_run_dir(options: SearchOptions) -> Path:
    """Workers given one ``--storage`` share one run directory: beside a SQLite file, else runs/STUDY."""
    if options.storage and options.storage.startswith(SQLITE):
        return Path(options.storage[len(SQLITE):]).parent
    if options.storage:
        return Path("runs") / _folder_name(options.study)
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _folder_name(study: str) -> str:
    """``--study`` as the name of a folder in runs/: one name, so the run cannot land outside runs/ (``..``, a
    path) or be runs/ itself (empty)."""
    if study in ("", ".", "..") or any(sep in study for sep in {"/", os.sep, os.altsep or "/", "\0"}):
        raise InputError(f"--study {study!r}: names the run's folder, runs/STUDY, so it must be a plain name (no "
                         f"'/', not '.', '..' or empty); name another --study, or give --out")
    return study


def open_study(run_dir: Path, options: SearchOptions, sampler: optuna.samplers.BaseSampler | None = None,
               create: bool = False) -> optuna.Study:
    """The run's study; unless ``create``, it must exist, and its storage is checked before it is opened (a
    missing SQLite file would otherwise be created empty)."""
    directions = ["maximize", "minimize"] if options.multi_objective else ["maximize"]
    # n_min_trials: three trainings that reached the epoch, not three completed trials of any kind (a cascade's
    # zero-cost stage completes trials that report no epochs)
    pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0, n_min_trials=3),
              "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=options.epochs),
              "none": optuna.pruners.NopPruner()}[options.pruner]
    url = storage_url(run_dir, options)
    if create:
        return optuna.create_study(storage=connect(url), study_name=options.study, directions=directions,
                                   sampler=sampler, pruner=pruner, load_if_exists=True)
    check_storage(url, options.study, must_exist=True)
    return load_stored_study(url, options.study, sampler=sampler, pruner=pruner)


def read_run(run_dir: Path) -> tuple[SearchOptions, dict[str, Any]]:
    """The options and the space a run directory was started with; a damaged file is bad input naming it."""
    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        raise InputError(f"{run_dir}: not a search run directory (no {RUN_FILE})")
    data = parse_yaml(_read(run_file), str(run_file))
    if isinstance(data, dict):  # written before --reduction-factor, whose promotions took the top third
        data.setdefault("reduction_factor", 3)
        data.setdefault("shortlist_growth", 0)  # ... and before --shortlist-growth, whose short-list was fixed
    try:
        options = SearchOptions.model_validate(data)
    except ValidationError as err:
        problems = from_validation_error(err, data).located(str(run_file), _read(run_file)).problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"{run_file}: {problems[0]}{more}") from None
    try:
        options.check()
    except InputError as err:
        raise InputError(f"{run_file}: {err}") from None
    space_file = run_dir / SPACE_FILE
    if not space_file.is_file():
        raise InputError(f"{space_file}: missing; the run's space is gone, so the run cannot be read")
    return options, parse_yaml(_read(space_file), str(space_file))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None


def latest_run(root: Path = Path("runs")) -> Path:
    runs = sorted((p for p in root.glob("*") if (p / RUN_FILE).is_file()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise InputError(f"--resume: no run directory with a {RUN_FILE} under {root}/; name one")
    return runs[-1]


def refuse_results(run_dir: Path, keep: Path | None = None) -> None:
    """A new run never writes over a file that is there (another run's, or a user's ``space.yaml``); ``keep`` is
    a shared storage file the run may use."""
    from nas.search.cascade import SCREEN_FILE  # here, not above: `nas report` need not load the cascade

    if (run_dir / RUN_FILE).exists():
        raise InputError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --out")
    kept = keep.resolve() if keep is not None else None
    found = [name for name in (SPACE_FILE, SCREEN_FILE, *RESULTS)
             if (run_dir / name).exists() and (run_dir / name).resolve() != kept]
    if found:
        raise InputError(f"{run_dir} already holds files a search writes ({', '.join(found)}); a new run never "
                         f"writes over them: pick another --out")


# ---------------------------------------------------------------------------------------------------------------
# The storage, read-only

def shown(url: str) -> str:
    """The URL as an error message may show it: no password."""
    if url.startswith((SQLITE, JOURNAL)):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - unparsable: shown as given, it holds no readable password
        return url


def check_storage(url: str, study: str | None, *, must_exist: bool) -> None:
    """Refuse a storage that is not what a run needs, opening nothing that could create it. ``must_exist``: the
    storage of a run being resumed or reported, which must hold study ``study``; otherwise a new run's storage,
    which may be absent (it is created) but must not be a file of something else."""
    _check_url(url)
    if url.startswith(SQLITE):
        _check_sqlite(Path(url[len(SQLITE):]), study if must_exist else None, must_exist)
    elif url.startswith(JOURNAL):
        _check_journal(Path(url[len(JOURNAL):]), must_exist)
    if must_exist and study is not None and not url.startswith(SQLITE):
        load_stored_study(url, study)


def load_stored_study(url: str, study: str, **kwargs) -> optuna.Study:
    """``optuna.load_study`` with its failures as bad input naming the storage."""
    storage = connect(url)
    try:
        return optuna.load_study(storage=storage, study_name=study, **kwargs)
    except KeyError:
        raise InputError(f"{shown(url)}: no study {study!r} in it") from None


def connect(url: str) -> optuna.storages.BaseStorage:
    """``runners.storage.open_storage`` with a storage that cannot be opened as bad input naming it."""
    _check_url(url)
    try:
        return open_storage(url)
    except StorageUnreachable as err:
        raise InputError(f"{shown(url)}: {err}") from None
    except Exception as err:  # noqa: BLE001 - sqlalchemy, a driver or the file system: one line, the storage named
        raise InputError(f"{shown(url)}: cannot open the storage: {_first_line(err)}") from None


def _check_url(url: str) -> None:
    schemes = "sqlite:///PATH, postgresql://..., mysql://... or journal:PATH"
    if _in_memory(url):
        raise InputError(f"--storage {shown(url)}: an in-memory SQLite database, whose trials would be gone when "
                         f"the process ends (and no worker could share it); use sqlite:///PATH")
    if url.startswith((SQLITE, JOURNAL)):
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url).get_dialect()
    except ArgumentError:  # also NoSuchModuleError, its subclass: a scheme SQLAlchemy has no dialect for
        scheme = url.partition("://")[0] if "://" in url else ""
        what = f"unknown scheme {scheme!r}" if scheme else "not a storage URL"
        raise InputError(f"--storage {shown(url)}: {what}; use {schemes}") from None
    except ImportError as err:
        raise InputError(f"--storage {shown(url)}: its database driver is not installed ({err})") from None


def _in_memory(url: str) -> bool:
    """Whether ``url`` is an SQLite database in the process's memory: ``sqlite:///:memory:``, ``sqlite://`` (no
    path), ``mode=memory``. (After ``sqlite:///``, ``open_storage`` takes the rest as a file name.)"""
    if url.startswith(SQLITE):
        return url[len(SQLITE):] in ("", ":memory:")
    if url.startswith(JOURNAL):
        return False
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    return database in ("", ":memory:") or parsed.query.get("mode") == "memory" or "mode=memory" in database


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _exists(path: Path, must_exist: bool) -> bool:
    """Whether the storage file is there to check; a missing one is refused where the run needs it, and a new
    one needs its folder."""
    if path.exists():
        return True
    if must_exist:
        raise InputError(f"{path}: missing; the run's trials are not there, so it cannot be resumed or "
                         f"reported (nothing was changed)")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist")
    return False


def _check_sqlite(path: Path, study: str | None, must_exist: bool) -> None:
    if not _exists(path, must_exist):
        return
    if not path.is_file() or not os.access(path, os.R_OK):
        raise InputError(f"{path}: not a readable file")
    with path.open("rb") as f:
        head = f.read(100)
    if not head:
        if must_exist:
            raise InputError(f"{path}: empty, not an Optuna study")
        return
    if not head.startswith(SQLITE_MAGIC):
        raise InputError(f"{path}: not an SQLite database (garbage or another kind of file)")
    tables, studies = _sqlite_contents(path, head)
    if (tables or must_exist) and not OPTUNA_TABLES <= tables:
        missing = ", ".join(sorted(OPTUNA_TABLES - tables))
        raise InputError(f"{path}: an SQLite database, but not an Optuna storage (no {missing} table)")
    if study is not None and study not in studies:
        raise InputError(f"{path}: no study {study!r} in it (it holds {', '.join(map(repr, studies)) or 'none'})")


def _sqlite_contents(path: Path, head: bytes) -> tuple[set[str], list[str]]:
    """The tables and study names of an SQLite file, read without writing a byte: read-only, and without the
    ``-shm`` and ``-wal`` files SQLite would create beside a WAL database when none is open (no ``-wal``)."""
    wal_mode = len(head) > 18 and head[18] == 2
    immutable = wal_mode and not Path(f"{path}-wal").exists()
    uri = path.resolve().as_uri() + ("?immutable=1" if immutable else "?mode=ro")
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=60)
        try:
            damage = connection.execute("PRAGMA quick_check").fetchone()[0]
            if damage != "ok":
                raise InputError(f"{path}: damaged SQLite database ({damage})")
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            studies = []
            if "studies" in tables:
                studies = [row[0] for row in connection.execute("SELECT study_name FROM studies")]
            return tables, studies
        finally:
            connection.close()
    except sqlite3.Error as err:
        raise InputError(f"{path}: unreadable SQLite database ({err}); truncated or damaged?") from None


def _check_journal(path: Path, must_exist: bool) -> None:
    """Every complete line of an Optuna journal is a JSON operation; only a last, unterminated one (a write cut
    short) may be partial, and Optuna skips it."""
    if not _exists(path, must_exist):
        return
    if not path.is_file():  # a FIFO or a device would block the read, or never end
        raise InputError(f"{path}: not a regular file; a journal storage is a file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    lines = data.split(b"\n")[:-1]  # the part after the last newline is a write in progress, if any
    if data and not lines:
        raise InputError(f"{path}: not an Optuna journal (no complete line)")
    for number, line in enumerate(lines, start=1):
        try:
            op = json.loads(line)
        except ValueError:
            op = None
        if not isinstance(op, dict) or "op_code" not in op:
            raise InputError(f"{path}: not an Optuna journal (line {number} is not a journal operation)")


# ---------------------------------------------------------------------------------------------------------------
# A new run's files

class NewRun:
    """The files a new run writes into its directory, written when it is ready to start and removed again if it
    fails before any trial ran, so that the same ``--out`` works next time. Made when the directory is checked,
    it notes what is there then: nothing of that is written over or removed (not a user's file, not a directory
    or a ``workers`` folder that existed), nor a shared ``--storage`` (other workers may be starting on it)."""

    def __init__(self, run_dir: Path, url: str, default_storage: bool):
        self.run_dir = run_dir
        self.created_dir = not run_dir.exists()
        self.before = _present(run_dir)
        self.written: list[Path] = []
        db = storage_file(url) if default_storage else None
        self.db = db if db is not None and not db.exists() else None

    def write(self, name: str, text: str) -> None:
        path = self.run_dir / name
        if path in self.before:  # checked already (refuse_results); this holds for a file appearing since, too
            raise InputError(f"{path}: there before this run started; a new run never writes over a file, so "
                             f"pick another --out")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
        self.written.append(path)

    def owns(self, name: str) -> None:
        """A file the run writes itself later (a cache): removed with the others, unless it is already there."""
        if not (self.run_dir / name).exists():
            self.written.append(self.run_dir / name)

    def undo(self, study: optuna.Study | None) -> bool:
        """Remove what this run created, if no trial has run (a queued one has not); True when it did."""
        try:
            started = study is not None and any(t.state != optuna.trial.TrialState.WAITING
                                                for t in study.get_trials(deepcopy=False))
        except Exception:  # noqa: BLE001 - the storage itself failed: whether a trial ran is unknown, so keep all
            return False
        if started:
            return False
        paths = list(self.written)
        if self.db is not None:
            paths += [Path(f"{self.db}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")]
        for path in paths:
            path.unlink(missing_ok=True)
        for folder in (self.run_dir,) if self.created_dir else (self.run_dir / name for name in RUN_FOLDERS):
            _remove_empty_tree(folder, self.before)
        return True


def _present(run_dir: Path) -> frozenset[Path]:
    """What is in ``run_dir`` before a run writes there: its entries, and everything in the folders a run makes."""
    if not run_dir.is_dir():
        return frozenset()
    inside = [p for name in RUN_FOLDERS for p in (run_dir / name).rglob("*")]
    return frozenset([*run_dir.iterdir(), *inside])


def _remove_empty_tree(path: Path, before: frozenset[Path]) -> None:
    """Remove ``path`` if it holds nothing but empty folders and logs of this run's own workers; nothing in
    ``before`` (there before the run) is removed."""
    if not path.is_dir() or path.is_symlink():  # a link leads to what the run did not make
        return
    for child in path.iterdir():
        if child.is_dir():
            _remove_empty_tree(child, before)
        elif child.parent.name == "workers" and child.name.startswith("worker-") and child not in before:
            child.unlink()
    if path in before:
        return
    try:
        path.rmdir()
    except OSError:  # not empty: something this run did not make is there
        pass


def dump_options(options: SearchOptions) -> str:
    return yaml.safe_dump(options.model_dump(), sort_keys=False)
