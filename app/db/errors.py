"""Which database errors mean "unreachable, timed out or not migrated" rather than "bad input",
and a one-line reason for them that names no SQL, parameters or credentials."""

from __future__ import annotations

import sqlite3

import psycopg
from sqlalchemy import exc as sa_exc

from app.db.schema import SchemaOutOfDate

UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    sqlite3.OperationalError,
    psycopg.OperationalError,
    SchemaOutOfDate,
)


def database_problem(error: BaseException) -> str:
    """A one-line reason from a database error, without SQL, parameters or credentials."""
    if isinstance(error, SchemaOutOfDate):
        return str(error)
    original = getattr(error, "orig", None) or error
    if isinstance(error, sa_exc.TimeoutError):
        return "no database connection free in time (pool timeout)"
    text = str(original).strip().splitlines()
    return text[0][:300] if text else type(original).__name__
