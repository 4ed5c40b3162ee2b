"""Engines and sessions: one engine a process, tuned for SQLite files or a PostgreSQL server."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.abc import RV, PQGen
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, get_settings

SQLITE_BEGIN_MODES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")
SQLITE_FOLD_FUNCTION = "dotrec_fold"
"""SQL function registered on SQLite connections: Unicode-aware lower case (SQLite's is ASCII)."""


def normalize_url(database_url: str) -> URL:
    """The URL with a driver SQLAlchemy can load: plain ``postgresql://`` means psycopg 3."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def make_engine(database_url: str, settings: Settings | None = None, serving: bool = False) -> Engine:
    """An engine for `database_url`: SQLite files (created with their folder) or PostgreSQL.

    SQLite connections run in WAL mode with foreign keys on, `synchronous=NORMAL` and a busy
    timeout of `db_timeout_s`; transactions start with a ``BEGIN`` emitted by SQLAlchemy rather
    than by the sqlite3 module, so reads inside a transaction see one snapshot. It is
    ``BEGIN DEFERRED`` unless the connection's execution option ``sqlite_begin`` says
    "IMMEDIATE" (take the write lock at once: for transactions that read, then write) or
    "EXCLUSIVE".
    PostgreSQL connections get a pool of `db_pool_size` (as many again in overflow), pre-ping,
    and `db_timeout_s` as both connect timeout and statement timeout. `serving` (the API's
    engine, whose requests wait on it) also bounds every wait for a PostgreSQL answer by
    `db_timeout_s` on the client side (AnswerTimeoutConnection); bulk imports and exports,
    which lift the statement timeout, use engines without it.
    """
    settings = settings or get_settings()
    url = normalize_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings)
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
    if not lock.acquire(timeout=timeout):
        raise sqlite3.OperationalError(
            f"database is locked (this process's writes queued over {timeout:g} s)"
        )
    try:
        with session.begin():
            session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            yield session
    finally:
        lock.release()


def _sqlite_engine(url: URL, settings: Settings) -> Engine:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": settings.db_timeout_s})
    busy_ms = int(settings.db_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.create_function(SQLITE_FOLD_FUNCTION, 1, _fold, deterministic=True)
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            f"busy_timeout={busy_ms}",
            "foreign_keys=ON",
            "synchronous=NORMAL",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode not in SQLITE_BEGIN_MODES:
            raise ValueError(f"sqlite_begin must be one of {', '.join(SQLITE_BEGIN_MODES)}")
        connection.exec_driver_sql(f"BEGIN {mode}")

    _SQLITE_WRITERS[engine] = (threading.Lock(), settings.db_timeout_s)
    return engine


def _postgresql_engine(url: URL, settings: Settings, serving: bool) -> Engine:
    timeout_ms = int(settings.db_timeout_s * 1000)
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.db_timeout_s,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": max(1, math.ceil(settings.db_timeout_s)),
            "options": f"-c statement_timeout={timeout_ms}",
            "application_name": "dotrec",
        },
    )
    if serving:

        @event.listens_for(engine, "do_connect")
        def _connect(_dialect: object, _record: object, cargs: tuple, cparams: dict) -> psycopg.Connection:
            connection = AnswerTimeoutConnection.connect(*cargs, **cparams)
            connection.answer_timeout_s = settings.db_timeout_s
            return connection

    return engine


class AnswerTimeoutConnection(psycopg.Connection):
    """A psycopg connection that waits at most `answer_timeout_s` for each answer of the server.

    The server's statement_timeout ends a slow query, and connect_timeout an unanswered
    connect, but nothing ends a wait on a server that accepted the connection and then stopped
    answering (a hung host, a frozen process, a network that drops packets): the request's
    worker thread would block for ever. Past the limit the connection is closed, which
    SQLAlchemy takes for a disconnect (the pool drops it), and OperationalError says why.
    """

    answer_timeout_s: float | None = None

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        limit = self.answer_timeout_s if timeout is None else timeout
        started = time.monotonic()
        try:
            return super().wait(gen, interval, limit)
        except psycopg.OperationalError as error:
            if limit is None or time.monotonic() - started < limit:
                raise
            self.close()
            raise psycopg.OperationalError(f"the database did not answer within {limit:g} s") from error


def _fold(text: str | None) -> str | None:
    return None if text is None else text.lower()
