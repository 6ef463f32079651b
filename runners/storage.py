"""Opening the Optuna storage that workers share: SQLite, any SQLAlchemy URL (PostgreSQL, MySQL), or a journal
file (``journal:PATH``, for file systems where SQLite locking is unsafe, such as NFS)."""
from __future__ import annotations

import contextvars
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import optuna
import sqlalchemy.event
import sqlalchemy.exc
from optuna.trial import TrialState
from sqlalchemy.engine import Connection, Engine, make_url

JOURNAL = "journal:"
# A database server must answer within this; one that accepts the connection and never answers would
# otherwise hold the command forever, with nothing said.
CONNECT_TIMEOUT_S = 30
# The drivers that take libpq's (or MySQL's) ``connect_timeout``, in seconds; another driver keeps its own.
TIMEOUT_DRIVERS = ("psycopg", "psycopg2", "pymysql", "mysqldb")


class StorageUnreachable(ConnectionError):
    """The storage's database server could not be reached, or did not answer in time: nothing was opened."""


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A storage object for ``url``. SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit survives
    SIGKILL (only an OS crash can lose the last ones), and readers (``nas report``, other workers) do not block
    the writer. A trial's state changes in an IMMEDIATE transaction (see :class:`_SQLiteStorage`). A database
    server that cannot be reached, or does not answer within ``CONNECT_TIMEOUT_S``, is :class:`StorageUnreachable`."""
    if url.startswith(JOURNAL):
        path = url[len(JOURNAL):]
        lock = optuna.storages.journal.JournalFileOpenLock(path)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path, lock_obj=lock))
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]

        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(path, timeout=60, check_same_thread=False, factory=_SQLiteConnection)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            return connection

        return _rdb(url, _SQLiteStorage, engine_kwargs={"creator": connect})
    engine_kwargs: dict[str, Any] = {}
    if make_url(url).get_driver_name() in TIMEOUT_DRIVERS:
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    _check_answers(url, engine_kwargs)
    return _rdb(url, optuna.storages.RDBStorage, engine_kwargs=engine_kwargs)


def _check_answers(url: str, engine_kwargs: dict[str, Any]) -> None:
    """Connect once before :func:`_rdb`, whose retries are for a race between workers: a server that is not
    there, refuses the login or does not answer in time is said at once, in one line."""
    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    start = time.monotonic()
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.DBAPIError as err:
        lines = str(err.orig or err).strip().splitlines()
        why = lines[0] if lines else type(err.orig or err).__name__
        if time.monotonic() - start >= CONNECT_TIMEOUT_S:
            raise StorageUnreachable(f"the database did not answer within {CONNECT_TIMEOUT_S} s ({why})") from None
        raise StorageUnreachable(f"cannot connect to the database ({why})") from None
    finally:
        engine.dispose()


class _SQLiteConnection(sqlite3.Connection):
    """A connection of ``nas``'s SQLite storages: the only ones :func:`_begin_immediate` touches."""


# Set while a _SQLiteStorage changes a trial's state.
_IMMEDIATE = contextvars.ContextVar("nas_sqlite_immediate", default=False)


class _SQLiteStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, with a trial's state changed under SQLite's write lock.

    Optuna reads a trial's state and then changes it in one transaction, ``FOR UPDATE`` on a server database.
    Python's SQLite driver begins the transaction only at the write, so two workers could both read a queued
    trial as WAITING and both run it: two processes asking 40 times each on one SQLite file took the same
    enqueued trial in 4 of 5 tries, and the loser failed with "Trial#0 has already finished". The state change
    begins IMMEDIATE, which makes the read and the write one step. Only this call: Optuna nests connections
    elsewhere (its schema check), and an IMMEDIATE transaction there would wait on itself."""

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        token = _IMMEDIATE.set(True)
        try:
            return super().set_trial_state_values(trial_id, state, values)
        finally:
            _IMMEDIATE.reset(token)


@sqlalchemy.event.listens_for(Engine, "begin")
def _begin_immediate(connection: Connection) -> None:
    # The driver then sees a transaction open and issues no BEGIN of its own before the write.
    if _IMMEDIATE.get() and isinstance(connection.connection.dbapi_connection, _SQLiteConnection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _rdb(url: str, storage: type[optuna.storages.RDBStorage], **kwargs) -> optuna.storages.RDBStorage:
    """Workers started together on a new database race to create its tables and stamp its schema version; the
    loser sees an integrity or locking error (PostgreSQL: ``DuplicateTable``, a programming error, when the
    winner's tables appeared between the loser's look and its CREATE) and succeeds on a second look."""
    for attempt in range(5):
        try:
            return storage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
