"""PostgreSQL's side of an import: bulk load into an empty ratings table, merge into one in use.

Into an empty table: binary ``COPY`` straight into it with its keys and indexes rebuilt
afterwards. Into one that has rows: binary ``COPY`` into a temporary staging table, then one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE``. Both in the caller's transaction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Connection
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex

from app.db.import_rows import Advance, ImportCounts, PreparedImport, movie_years
from app.db.models import Rating

_PG_UPSERT_MOVIES = """
WITH written AS (
    INSERT INTO movies (id, title, year, genres)
    SELECT * FROM unnest(%(ids)s::bigint[], %(titles)s::text[], %(years)s::integer[],
                         %(genres)s::text[])
    ON CONFLICT (id) DO UPDATE
        SET title = excluded.title, year = excluded.year, genres = excluded.genres
        WHERE (movies.title, movies.year, movies.genres)
            IS DISTINCT FROM (excluded.title, excluded.year, excluded.genres)
    RETURNING xmax = 0 AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written
"""
_PG_INSERT_USERS = """
INSERT INTO users (id) SELECT unnest(%(ids)s::bigint[]) ON CONFLICT (id) DO NOTHING
"""
_PG_STAGE_RATINGS = """
CREATE TEMPORARY TABLE import_ratings (
    user_id bigint NOT NULL, movie_id bigint NOT NULL, rating real NOT NULL,
    rated_at bigint NOT NULL
) ON COMMIT DROP
"""
_PG_UPSERT_RATINGS = """
WITH written AS (
    INSERT INTO ratings (user_id, movie_id, rating, rated_at)
    SELECT user_id, movie_id, rating, rated_at FROM import_ratings
    ON CONFLICT (user_id, movie_id) DO UPDATE
        SET rating = excluded.rating, rated_at = excluded.rated_at
        WHERE ratings.rating <> excluded.rating OR ratings.rated_at <> excluded.rated_at
    RETURNING xmax = 0 AS inserted
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written
"""
PG_BULK_LOAD_MEMORY = "256MB"
"""maintenance_work_mem while rebuilding the ratings indexes after a bulk load."""


def write_postgresql(
    connection: Connection, prepared: PreparedImport, batch_size: int, advance: Advance
) -> ImportCounts:
    """Movies and users by one upsert each; ratings by bulk load when empty, else by merge."""
    connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
    empty = _pg_lock_if_empty(connection)
    movies = prepared.movies
    movies_added, movies_updated = connection.exec_driver_sql(
        _PG_UPSERT_MOVIES,
        {
            "ids": movies["movie_id"].to_numpy(np.int64).tolist(),
            "titles": movies["title"].astype(str).tolist(),
            "years": movie_years(movies),
            "genres": movies["genres"].astype(str).tolist(),
        },
    ).one()
    users = np.unique(prepared.ratings["user_id"].to_numpy(np.int64)).tolist()
    users_added = connection.exec_driver_sql(_PG_INSERT_USERS, {"ids": users}).rowcount
    if empty:
        ratings_added, ratings_updated = _pg_bulk_load(connection, prepared.ratings, batch_size, advance), 0
    else:
        ratings_added, ratings_updated = _pg_merge(connection, prepared.ratings, batch_size, advance)
    return ImportCounts(movies_added, movies_updated, users_added, ratings_added, ratings_updated)


def _pg_lock_if_empty(connection: Connection) -> bool:
    """True, holding an exclusive lock on ratings, when the table is empty."""
    if connection.exec_driver_sql("SELECT EXISTS (SELECT FROM ratings)").scalar():
        return False
    connection.exec_driver_sql("LOCK TABLE ratings IN ACCESS EXCLUSIVE MODE")
    return not connection.exec_driver_sql("SELECT EXISTS (SELECT FROM ratings)").scalar()


def _pg_bulk_load(connection: Connection, ratings: pd.DataFrame, batch_size: int, advance: Advance) -> int:
    """Load an empty (locked) ratings table: keys and indexes dropped, COPY, then rebuilt.

    Foreign keys are checked once by one join when re-added instead of by a trigger a row,
    and the indexes are built by one sort: several times faster than inserting under them.
    All of it is in the import's transaction, so a failure leaves the schema as it was.
    The DDL comes from the models' own constraint objects (same names as the migration).
    """
    table = Rating.__table__
    foreign_keys = sorted(table.foreign_key_constraints, key=lambda fk: str(fk.name))
    connection.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{PG_BULK_LOAD_MEMORY}'")
    for foreign_key in foreign_keys:
        connection.execute(DropConstraint(foreign_key))
    for index in table.indexes:
        connection.execute(DropIndex(index))
    connection.execute(DropConstraint(table.primary_key))
    _pg_copy(connection, "ratings", ratings, batch_size, advance)
    connection.execute(AddConstraint(table.primary_key))
    for index in table.indexes:
        connection.execute(CreateIndex(index))
    for foreign_key in foreign_keys:
        connection.execute(AddConstraint(foreign_key))
    return len(ratings)


def _pg_merge(
    connection: Connection, ratings: pd.DataFrame, batch_size: int, advance: Advance
) -> tuple[int, int]:
    """Upsert into a table in use: COPY to a staging table, then one INSERT ... ON CONFLICT.

    Only row locks are taken, so the API keeps reading and writing meanwhile.
    Returns (rows added, rows updated).
    """
    connection.exec_driver_sql(_PG_STAGE_RATINGS)
    _pg_copy(connection, "import_ratings", ratings, batch_size, advance)
    added, updated = connection.exec_driver_sql(_PG_UPSERT_RATINGS).one()
    return added, updated


def _pg_copy(
    connection: Connection, table: str, ratings: pd.DataFrame, batch_size: int, advance: Advance
) -> None:
    """Binary COPY of the rating rows into `table`, `batch_size` rows a write."""
    columns = "user_id, movie_id, rating, rated_at"
    with (
        connection.connection.driver_connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.write(PG_COPY_HEADER)
        for start in range(0, len(ratings), batch_size):
            chunk = ratings.iloc[start : start + batch_size]
            copy.write(pg_binary_rows(chunk))
            advance(len(chunk))
        copy.write(PG_COPY_TRAILER)


PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
PG_COPY_TRAILER = b"\xff\xff"
_PG_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("user_len", ">i4"),
        ("user_id", ">i8"),
        ("movie_len", ">i4"),
        ("movie_id", ">i8"),
        ("rating_len", ">i4"),
        ("rating", ">f4"),
        ("time_len", ">i4"),
        ("rated_at", ">i8"),
    ]
)


def pg_binary_rows(ratings: pd.DataFrame) -> bytes:
    """Rows of `ratings` in PostgreSQL's binary COPY format (bigint, bigint, real, bigint).

    Built with one vectorised numpy assignment a column, no Python loop over rows; the stream
    around them starts with `PG_COPY_HEADER` and ends with `PG_COPY_TRAILER`.
    """
    rows = np.empty(len(ratings), dtype=_PG_ROW)
    rows["fields"] = 4
    rows["user_len"] = rows["movie_len"] = rows["time_len"] = 8
    rows["rating_len"] = 4
    rows["user_id"] = ratings["user_id"].to_numpy(np.int64)
    rows["movie_id"] = ratings["movie_id"].to_numpy(np.int64)
    rows["rating"] = ratings["rating"].to_numpy(np.float32)
    rows["rated_at"] = ratings["timestamp"].to_numpy(np.int64)
    return rows.tobytes()
