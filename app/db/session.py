"""Engines and sessions: one engine a process, tuned for SQLite files or a PostgreSQL server."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

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


def make_engine(database_url: str, settings: Settings | None = None) -> Engine:
    """An engine for `database_url`: SQLite files (created with their folder) or PostgreSQL.

    SQLite connections run in WAL mode with foreign keys on, `synchronous=NORMAL` and a busy
    timeout of `db_timeout_s`; transactions start with a ``BEGIN`` emitted by SQLAlchemy rather
    than by the sqlite3 module, so reads inside a transaction see one snapshot. It is
    ``BEGIN DEFERRED`` unless the connection's execution option ``sqlite_begin`` says
    "IMMEDIATE" (take the write lock at once: for transactions that read, then write) or
    "EXCLUSIVE".
    PostgreSQL connections get a pool of `db_pool_size` (as many again in overflow), pre-ping,
    and `db_timeout_s` as both connect timeout and statement timeout.
    """
    settings = settings or get_settings()
    url = normalize_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings)
    if url.get_backend_name() == "postgresql":
        return _postgresql_engine(url, settings)
    raise ValueError(f"unsupported database {url.get_backend_name()!r}: use sqlite or postgresql")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to `engine` that keep loaded values after commit."""
    return sessionmaker(engine, expire_on_commit=False)


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

    return engine


def _postgresql_engine(url: URL, settings: Settings) -> Engine:
    timeout_ms = int(settings.db_timeout_s * 1000)
    return create_engine(
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


def _fold(text: str | None) -> str | None:
    return None if text is None else text.lower()
