"""SQLite's side of an import: ``executemany`` upserts in the caller's ``BEGIN IMMEDIATE``
transaction, rows sorted by primary key, with a large page cache."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from app.db.import_rows import Advance, ImportCounts, PreparedImport, movie_years

SQLITE_IMPORT_CACHE_KIB = 512 * 1024

_SQLITE_UPSERT_MOVIES = """
INSERT INTO movies (id, title, year, genres) VALUES (?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET title = excluded.title, year = excluded.year, genres = excluded.genres
WHERE movies.title IS NOT excluded.title OR movies.year IS NOT excluded.year
    OR movies.genres IS NOT excluded.genres
"""
_SQLITE_INSERT_USERS = "INSERT INTO users (id) VALUES (?) ON CONFLICT (id) DO NOTHING"
_SQLITE_UPSERT_RATINGS = """
INSERT INTO ratings (user_id, movie_id, rating, rated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = excluded.rated_at
WHERE ratings.rating <> excluded.rating OR ratings.rated_at <> excluded.rated_at
"""


def write_sqlite(
    connection: Connection, prepared: PreparedImport, batch_size: int, advance: Advance
) -> ImportCounts:
    """Upsert with executemany in the open transaction; new rows are told by counting."""
    cursor = connection.connection.driver_connection.cursor()
    with _sqlite_import_cache(cursor):
        movies_added, movies_changed = _sqlite_upsert(
            cursor, "movies", _SQLITE_UPSERT_MOVIES, [_movie_tuples(prepared.movies)]
        )
        users = np.unique(prepared.ratings["user_id"].to_numpy(np.int64))
        users_added, _ = _sqlite_upsert(
            cursor, "users", _SQLITE_INSERT_USERS, [((user,) for user in users.tolist())]
        )
        ratings_added, ratings_changed = _sqlite_upsert(
            cursor,
            "ratings",
            _SQLITE_UPSERT_RATINGS,
            _rating_batches(prepared.ratings, batch_size, advance),
        )
    return ImportCounts(
        movies_added,
        movies_changed - movies_added,
        users_added,
        ratings_added,
        ratings_changed - ratings_added,
    )


def _sqlite_upsert(
    cursor: sqlite3.Cursor, table: str, sql: str, batches: Iterable[Iterable[tuple]]
) -> tuple[int, int]:
    """Run `sql` over every batch; (rows added, rows added or changed) by count and rowcount."""
    before = cursor.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    changed = 0
    for batch in batches:
        cursor.executemany(sql, batch)
        changed += max(cursor.rowcount, 0)
    after = cursor.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return after - before, changed


@contextmanager
def _sqlite_import_cache(cursor: sqlite3.Cursor) -> Iterator[None]:
    """A page cache big enough to hold the indexes being written, restored afterwards."""
    previous = cursor.execute("PRAGMA cache_size").fetchone()[0]
    cursor.execute(f"PRAGMA cache_size = -{SQLITE_IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        cursor.execute(f"PRAGMA cache_size = {previous}")


def _rating_batches(
    ratings: pd.DataFrame, batch_size: int, advance: Advance
) -> Iterator[list[tuple[int, int, float, int]]]:
    """Rating rows as Python tuples, `batch_size` at a time, reporting progress after each."""
    for start in range(0, len(ratings), batch_size):
        chunk = ratings.iloc[start : start + batch_size]
        yield list(
            zip(
                chunk["user_id"].to_numpy(np.int64).tolist(),
                chunk["movie_id"].to_numpy(np.int64).tolist(),
                chunk["rating"].to_numpy(np.float32).tolist(),
                chunk["timestamp"].to_numpy(np.int64).tolist(),
                strict=True,
            )
        )
        advance(len(chunk))


def _movie_tuples(movies: pd.DataFrame) -> list[tuple[int, str, int | None, str]]:
    """Catalog rows as Python tuples."""
    return list(
        zip(
            movies["movie_id"].to_numpy(np.int64).tolist(),
            movies["title"].astype(str).tolist(),
            movie_years(movies),
            movies["genres"].astype(str).tolist(),
            strict=True,
        )
    )
