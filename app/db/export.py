"""Export of every stored rating to a `TrainingSet`, in one consistent, chunked read."""

from __future__ import annotations

from contextlib import closing
from dataclasses import replace

import numpy as np
from sqlalchemy import Connection, Engine, func, select

from app.data.training_set import TrainingSet
from app.db.models import Rating

ROW = np.dtype(
    [("user_id", np.int64), ("movie_id", np.int64), ("rating", np.float32), ("rated_at", np.int64)]
)
"""One exported rating as numpy holds it."""


def export_training_set(engine: Engine, chunk_rows: int = 500_000) -> TrainingSet:
    """All ratings as a `TrainingSet`, rows sorted by (user id, movie id).

    The Core select runs on a server-side cursor (a named cursor on PostgreSQL; SQLite's
    cursors step through rows lazily) and is fetched `chunk_rows` rows at a time, each chunk
    turned into a numpy record array at once: no ORM objects and no SQLAlchemy `Row`s, which
    would double the time. Count, newest time and rows are read in one snapshot (REPEATABLE
    READ on PostgreSQL, one read transaction on SQLite in WAL mode). The fingerprint keeps
    `TrainingSet.from_arrays`' digest of the sorted arrays and takes `rows` and
    `max_rated_at` (unix seconds) from the database.
    """
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        rows, max_rated_at = connection.execute(
            select(func.count(), func.coalesce(func.max(Rating.rated_at), 0))
        ).one()
        records = sorted_by_key(_read_records(connection, chunk_rows))
    training = TrainingSet.from_arrays(
        records["user_id"], records["movie_id"], records["rating"], records["rated_at"]
    )
    fingerprint = {**training.fingerprint, "rows": int(rows), "max_rated_at": int(max_rated_at)}
    return replace(training, fingerprint=fingerprint)


def _read_records(connection: Connection, chunk_rows: int) -> np.ndarray:
    """Every rating as a `ROW` record array, fetched `chunk_rows` at a time."""
    query = select(Rating.user_id, Rating.movie_id, Rating.rating, Rating.rated_at)
    sql = str(query.compile(dialect=connection.dialect))
    driver = connection.connection.driver_connection
    server_side = connection.dialect.name == "postgresql"
    chunks = []
    with closing(driver.cursor(name="dotrec_export") if server_side else driver.cursor()) as cursor:
        cursor.execute(sql)
        while rows := cursor.fetchmany(chunk_rows):
            chunks.append(np.array(rows, dtype=ROW))
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=ROW)


def sorted_by_key(records: np.ndarray) -> np.ndarray:
    """`records` ordered by (user_id, movie_id); already ordered ones (the usual case) as is."""
    users, movies = records["user_id"], records["movie_id"]
    ordered = np.all((users[1:] > users[:-1]) | ((users[1:] == users[:-1]) & (movies[1:] > movies[:-1])))
    return records if ordered else records[np.lexsort((movies, users))]
