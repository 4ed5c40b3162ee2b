"""Engines and sessions: one engine a process, tuned for SQLite files or a PostgreSQL server."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import psycopg
from psycopg.abc import RV, PQGen
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, get_settings
from app.db.checkpoints import SERVING_AUTOCHECKPOINT_PAGES, SERVING_JOURNAL_SIZE_LIMIT

SQLITE_BEGIN_MODES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")
SQLITE_FOLD_FUNCTION = "dotrec_fold"
"""SQL function registered on SQLite connections: Unicode case folding (SQLite's lower() is ASCII)."""


def normalize_url(database_url: str) -> URL:
    """The URL with a driver SQLAlchemy can load: plain ``postgresql://`` means psycopg 3."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def make_engine(database_url: str, settings: Settings | None = None, serving: bool = False) -> Engine:
    """An engine for `database_url`: SQLite files (created with their folder) or PostgreSQL.

    SQLite connections run in WAL mode with foreign keys on, `synchronous` as SQLITE_SYNCHRONOUS
    (FULL by default: an acknowledged write survives a power cut) and a busy
    timeout of `db_timeout_s`; transactions start with a ``BEGIN`` emitted by SQLAlchemy rather
    than by the sqlite3 module, so reads inside a transaction see one snapshot. It is
    ``BEGIN DEFERRED`` unless the connection's execution option ``sqlite_begin`` says
    "IMMEDIATE" (take the write lock at once: for transactions that read, then write) or
    "EXCLUSIVE"; the option ``sqlite_busy_ms`` shortens the busy timeout of one transaction.
    A `serving` SQLite engine leaves its checkpoints to app.db.checkpoints.WalCheckpoints.
    PostgreSQL connections get a pool of `db_pool_size` (as many again in overflow), pre-ping,
    and `db_timeout_s` as both connect timeout and statement timeout. `serving` (the API's
    engine, whose requests wait on it) also bounds every wait for a PostgreSQL answer by
    `db_timeout_s` on the client side (AnswerTimeoutConnection); bulk imports and exports,
    which lift the statement timeout, use engines without it.
    """
    settings = settings or get_settings()
    url = normalize_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings, serving)
    if url.get_backend_name() == "postgresql":
        return _postgresql_engine(url, settings, serving)
    raise ValueError(f"unsupported database {url.get_backend_name()!r}: use sqlite or postgresql")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to `engine` that keep loaded values after commit."""
    return sessionmaker(engine, expire_on_commit=False)


#: SQLite engine -> (its process-wide write lock, how long to wait for it)
_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, tuple[threading.Lock, float]] = weakref.WeakKeyDictionary()


@contextmanager
def write_transaction(session: Session) -> Iterator[Session]:
    """`session.begin()` for a transaction that writes.

    On SQLite, one writer of this process at a time, in `BEGIN IMMEDIATE`: its threads queue on
    a lock, handed over the moment a commit ends, rather than on SQLite's busy handler, which
    sleeps in growing steps and keeps the file's lock idle while every waiter sleeps (32
    concurrent writers then managed ~60 ratings/s and some waited past the timeout). Writers
    of other processes still meet at SQLite's lock. Waiting for this process's lock longer
    than `db_timeout_s` raises sqlite3.OperationalError, as SQLite's own would.
    """
    writer = _SQLITE_WRITERS.get(session.get_bind())
    if writer is None:
        with session.begin():
            yield session
        return
    lock, timeout = writer
    started = time.monotonic()
    if not lock.acquire(timeout=timeout):
        raise sqlite3.OperationalError(
            f"database is locked (this process's writes queued over {timeout:g} s)"
        )
    try:
        # what is left of the timeout, for SQLite's lock: the whole wait stays within it
        left_ms = max(1, int((timeout - (time.monotonic() - started)) * 1000))
        with session.begin():
            session.connection(execution_options={"sqlite_begin": "IMMEDIATE", "sqlite_busy_ms": left_ms})
            yield session
    finally:
        lock.release()


def _sqlite_engine(url: URL, settings: Settings, serving: bool) -> Engine:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": settings.db_timeout_s})
    busy_ms = int(settings.db_timeout_s * 1000)
    pragmas = [
        "journal_mode=WAL",
        f"busy_timeout={busy_ms}",
        "foreign_keys=ON",
        f"synchronous={settings.sqlite_synchronous}",
    ]
    if serving:  # its checkpoints run in a thread of their own (app.db.checkpoints)
        pragmas += [
            f"wal_autocheckpoint={SERVING_AUTOCHECKPOINT_PAGES}",
            f"journal_size_limit={SERVING_JOURNAL_SIZE_LIMIT}",
        ]

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.create_function(SQLITE_FOLD_FUNCTION, 1, _fold, deterministic=True)
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        mode = options.get("sqlite_begin", "DEFERRED")
        if mode not in SQLITE_BEGIN_MODES:
            raise ValueError(f"sqlite_begin must be one of {', '.join(SQLITE_BEGIN_MODES)}")
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(options.get('sqlite_busy_ms', busy_ms))}")
        connection.exec_driver_sql(f"BEGIN {mode}")

    _SQLITE_WRITERS[engine] = (threading.Lock(), settings.db_timeout_s)
    return engine


def _postgresql_connect_args(timeout_s: float) -> dict[str, object]:
    """libpq settings of every dotrec connection: connect and statement timeouts, a name."""
    return {
        "connect_timeout": max(1, math.ceil(timeout_s)),
        "options": f"-c statement_timeout={int(timeout_s * 1000)}",
        "application_name": "dotrec",
    }


def _postgresql_engine(url: URL, settings: Settings, serving: bool) -> Engine:
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.db_timeout_s,
        pool_pre_ping=True,
        connect_args=_postgresql_connect_args(settings.db_timeout_s),
    )
    if serving:

        @event.listens_for(engine, "do_connect")
        def _connect(_dialect: object, _record: object, cargs: tuple, cparams: dict) -> psycopg.Connection:
            connection = AnswerTimeoutConnection.connect(*cargs, **cparams)
            connection.answer_timeout_s = settings.db_timeout_s
            return connection

    return engine


class AnswerTimeout(psycopg.OperationalError):
    """The server did not answer within a connection's `answer_timeout_s`; the connection is closed."""


def _timed_out(limit: float | None, started: float) -> AnswerTimeout | None:
    """The AnswerTimeout to raise when a wait begun at `started` failed by running past `limit`."""
    if limit is None or time.monotonic() - started < limit:
        return None
    return AnswerTimeout(f"the database did not answer within {limit:g} s")


class AnswerTimeoutConnection(psycopg.Connection):
    """A psycopg connection that waits at most `answer_timeout_s` for each answer of the server.

    The server's statement_timeout ends a slow query, and connect_timeout an unanswered
    connect, but nothing ends a wait on a server that accepted the connection and then stopped
    answering (a hung host, a frozen process, a network that drops packets): the request's
    worker thread would block for ever. Past the limit the connection is closed, which
    SQLAlchemy takes for a disconnect (the pool drops it), and AnswerTimeout says why.
    """

    answer_timeout_s: float | None = None

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        limit = self.answer_timeout_s if timeout is None else timeout
        started = time.monotonic()
        try:
            return super().wait(gen, interval, limit)
        except psycopg.OperationalError as error:
            if (timed_out := _timed_out(limit, started)) is None:
                raise
            self.close()
            raise timed_out from error


class AsyncAnswerTimeoutConnection(psycopg.AsyncConnection):
    """AnswerTimeoutConnection for asyncio. Cancelling the awaiting task instead would not do:
    psycopg then asks the (unanswering) server to cancel the query and waits for it, up to 10 s."""

    answer_timeout_s: float | None = None

    async def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        limit = self.answer_timeout_s if timeout is None else timeout
        started = time.monotonic()
        try:
            return await super().wait(gen, interval, limit)
        except psycopg.OperationalError as error:
            if (timed_out := _timed_out(limit, started)) is None:
                raise
            await self.close()
            raise timed_out from error


class AsyncConnections:
    """Up to `size` async connections (autocommit, AsyncAnswerTimeoutConnection) to the
    PostgreSQL server and database of `engine`, for reads awaited on the event loop.

    A connection is opened by the request that needs one, so an unreachable server fails that
    request at once (psycopg_pool's clients instead wait, for its whole timeout, on connects
    retried in the background), and kept while it works; a request finding all `size` in use
    waits for one, up to `timeout_s`. Checkout and return are a list's pop and append: on the
    hot read they cost less than a pool library's bookkeeping.
    """

    def __init__(self, engine: Engine, size: int, timeout_s: float) -> None:
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(size)
        self._idle: list[AsyncAnswerTimeoutConnection] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncAnswerTimeoutConnection]:
        await self._take_slot()
        try:
            connection = self._idle.pop() if self._idle else await self._connect()
            try:
                yield connection
            finally:
                if connection.closed or connection.info.transaction_status != TransactionStatus.IDLE:
                    await connection.close()
                else:
                    self._idle.append(connection)
        finally:
            self._slots.release()

    async def drop_idle(self) -> None:
        """Close the idle connections (after one turned out dead: the server restarted)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()

    async def close(self) -> None:
        await self.drop_idle()

    async def _take_slot(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: no task for wait_for to make
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), self.timeout_s)
        except TimeoutError as error:
            raise psycopg.OperationalError(
                f"no database connection free within {self.timeout_s:g} s"
            ) from error

    async def _connect(self) -> AsyncAnswerTimeoutConnection:
        connection = await AsyncAnswerTimeoutConnection.connect(
            self.conninfo, autocommit=True, **_postgresql_connect_args(self.timeout_s)
        )
        connection.answer_timeout_s = self.timeout_s
        return connection


def _fold(text: str | None) -> str | None:
    return None if text is None else text.casefold()
