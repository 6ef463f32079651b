"""Opening the Optuna storage that workers share: SQLite, any SQLAlchemy URL (PostgreSQL, MySQL), or a journal
file (``journal:PATH``, for file systems where SQLite locking is unsafe, such as NFS)."""
from __future__ import annotations

import sqlite3
import time

import optuna
import sqlalchemy.exc

JOURNAL = "journal:"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A storage object for ``url``. SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit survives
    SIGKILL (only an OS crash can lose the last ones), and readers (``nas report``, other workers) do not block
    the writer."""
    if url.startswith(JOURNAL):
        path = url[len(JOURNAL):]
        lock = optuna.storages.journal.JournalFileOpenLock(path)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path, lock_obj=lock))
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]

        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            return connection

        return _rdb(url, engine_kwargs={"creator": connect})
    return _rdb(url)


def _rdb(url: str, **kwargs) -> optuna.storages.RDBStorage:
    """Workers started together on a new database race to create its tables and stamp its schema version; the
    loser sees an integrity or locking error (PostgreSQL: ``DuplicateTable``, a programming error, when the
    winner's tables appeared between the loser's look and its CREATE) and succeeds on a second look."""
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
