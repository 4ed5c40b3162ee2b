"""Bulk import of a `RatingsSet` (movies, then users, then ratings) into the ratings store.

Every row is validated before anything is written, and everything is written in one
transaction, so an import either lands whole or not at all. Importing the same data twice
changes nothing; a (user, movie) pair already stored takes the file's rating and time (the
last import wins); inside one file the last line of a pair wins.

PostgreSQL: into an empty ratings table, a bulk load (binary ``COPY`` straight into it with
its keys and indexes rebuilt afterwards); into one that has rows, a merge (binary ``COPY`` into
a temporary staging table, then one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``).
SQLite: ``executemany`` upserts in batches of one ``BEGIN IMMEDIATE`` transaction, rows sorted
by primary key, with a large page cache.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
from rich.progress import Progress
from sqlalchemy import Connection, Engine, select
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex

from app.config import Settings
from app.data.movielens import RatingsSet, RowProblem
from app.db.models import Movie, Rating, scale_fits_schema

RATING_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]
SQLITE_IMPORT_CACHE_KIB = 512 * 1024

Advance = Callable[[int], None]


@dataclass(frozen=True)
class ImportReport:
    """What an import did (or, when refused, would have skipped and why).

    `skipped` counts the source lines not imported: those the reader dropped as malformed plus
    those rejected here; `problems` names each, sorted by line (line 0: the movie catalog).
    `duplicates` counts lines superseded by a later line for the same (user, movie).
    """

    name: str
    movies_added: int = 0
    movies_updated: int = 0
    users_added: int = 0
    ratings_added: int = 0
    ratings_updated: int = 0
    ratings_unchanged: int = 0
    duplicates: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skipped(self) -> int:
        return len(self.problems)

    def summary(self) -> str:
        """One line for people: what was added, changed and left out."""
        return (
            f"{self.name}: {self.movies_added:,} movies added ({self.movies_updated:,} updated),"
            f" {self.users_added:,} users added, {self.ratings_added:,} ratings added,"
            f" {self.ratings_updated:,} updated, {self.ratings_unchanged:,} unchanged,"
            f" {self.duplicates:,} duplicate lines superseded, {self.skipped:,} lines skipped"
            f" in {self.seconds:.1f} s"
        )


class ImportRefused(RuntimeError):
    """`on_error="fail"` met problems; nothing was written. `report` lists them."""

    def __init__(self, report: ImportReport) -> None:
        first = report.problems[0]
        super().__init__(
            f"import of {report.name!r} refused: {report.skipped} bad line(s),"
            f" first at line {first.line}: {first.reason}"
        )
        self.report = report


@dataclass(frozen=True)
class _Prepared:
    """Validated rows ready to write: unique (user, movie) pairs sorted by them."""

    movies: pd.DataFrame
    ratings: pd.DataFrame
    problems: list[RowProblem]
    duplicates: int


@dataclass(frozen=True)
class _Counts:
    movies_added: int
    movies_updated: int
    users_added: int
    ratings_added: int
    ratings_updated: int


def import_ratings_set(
    engine: Engine,
    data: RatingsSet,
    settings: Settings,
    on_error: Literal["skip", "fail"] = "skip",
    batch_size: int = 100_000,
    progress: bool = False,
) -> ImportReport:
    """Import `data` into the database of `engine` and say what changed.

    on_error="skip" leaves out bad lines and lists them in the report; "fail" raises
    `ImportRefused` before writing anything if there is any bad line (the reader's included).
    """
    if not scale_fits_schema(settings.allowed_ratings()):
        raise ValueError(
            "the configured rating scale has values the database's CHECK constraint rejects;"
            " the schema needs a migration for it (see app.db.models.Rating)"
        )
    started = time.perf_counter()
    prepared = _prepare(engine, data, settings)
    report = ImportReport(name=data.name, duplicates=prepared.duplicates, problems=prepared.problems)
    if on_error == "fail" and prepared.problems:
        raise ImportRefused(report)
    with _progress_bar(progress, data.name, len(prepared.ratings)) as advance:
        counts = _write(engine, prepared, batch_size, advance)
    return replace(
        report,
        movies_added=counts.movies_added,
        movies_updated=counts.movies_updated,
        users_added=counts.users_added,
        ratings_added=counts.ratings_added,
        ratings_updated=counts.ratings_updated,
        ratings_unchanged=len(prepared.ratings) - counts.ratings_added - counts.ratings_updated,
        seconds=time.perf_counter() - started,
    )


def _prepare(engine: Engine, data: RatingsSet, settings: Settings) -> _Prepared:
    """Drop bad movies and ratings (listing why), collapse duplicate pairs, sort by key."""
    movies, movie_problems = _valid_movies(data.movies)
    with engine.connect() as connection:
        stored = np.fromiter(connection.scalars(select(Movie.id)), dtype=np.int64)
    known = np.union1d(stored, movies["movie_id"].to_numpy(np.int64))
    ratings = data.ratings.sort_values("line", kind="stable")
    bad, rating_problems = _invalid_ratings(ratings, known, settings)
    ratings = ratings.loc[~bad, RATING_COLUMNS]
    unique = ratings.drop_duplicates(["user_id", "movie_id"], keep="last")
    unique = unique.sort_values(["user_id", "movie_id"], kind="stable", ignore_index=True)
    problems = sorted([*data.problems, *movie_problems, *rating_problems], key=lambda p: p.line)
    return _Prepared(movies, unique, problems, len(ratings) - len(unique))


def _valid_movies(movies: pd.DataFrame) -> tuple[pd.DataFrame, list[RowProblem]]:
    """The catalog without non-positive ids (reported on line 0), the last entry of each id kept."""
    bad = movies["movie_id"].to_numpy(np.int64) <= 0
    problems = [
        RowProblem(0, f"movie catalog: movie id {movie_id} is not positive")
        for movie_id in movies.loc[bad, "movie_id"].tolist()
    ]
    valid = movies.loc[~bad].drop_duplicates("movie_id", keep="last")
    return valid.sort_values("movie_id", ignore_index=True), problems


def _invalid_ratings(
    ratings: pd.DataFrame, known_movies: np.ndarray, settings: Settings
) -> tuple[np.ndarray, list[RowProblem]]:
    """A mask of the rating rows to drop and one problem for each, all its reasons joined."""
    users = ratings["user_id"].to_numpy(np.int64)
    movies = ratings["movie_id"].to_numpy(np.int64)
    values = ratings["rating"].to_numpy(np.float32)
    allowed = np.asarray(settings.allowed_ratings(), dtype=np.float32)
    checks = (
        (users <= 0, lambda i: f"user id {users[i]} is not positive"),
        (movies <= 0, lambda i: f"movie id {movies[i]} is not positive"),
        (
            (movies > 0) & ~np.isin(movies, known_movies),
            lambda i: f"movie {movies[i]} is not in the catalog",
        ),
        (
            ~np.isin(values, allowed),
            lambda i: (
                f"rating {values[i]:g} is not on the scale"
                f" {settings.rating_min:g}..{settings.rating_max:g} step {settings.rating_step:g}"
            ),
        ),
    )
    bad = np.logical_or.reduce([mask for mask, _ in checks])
    lines = ratings["line"].to_numpy(np.int64)
    problems = [
        RowProblem(int(lines[i]), "; ".join(reason(i) for mask, reason in checks if mask[i]))
        for i in np.flatnonzero(bad)
    ]
    return bad, problems


def _write(engine: Engine, prepared: _Prepared, batch_size: int, advance: Advance) -> _Counts:
    """Write movies, users and ratings in one transaction on the engine's dialect."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            with connection.begin():
                return _write_postgresql(connection, prepared, batch_size, advance)
        with connection.execution_options(sqlite_begin="IMMEDIATE").begin():
            return _write_sqlite(connection, prepared, batch_size, advance)


# --- PostgreSQL -------------------------------------------------------------------------------

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


def _write_postgresql(
    connection: Connection, prepared: _Prepared, batch_size: int, advance: Advance
) -> _Counts:
    """Movies and users by one upsert each; ratings by bulk load when empty, else by merge."""
    connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
    empty = _pg_lock_if_empty(connection)
    movies = prepared.movies
    movies_added, movies_updated = connection.exec_driver_sql(
        _PG_UPSERT_MOVIES,
        {
            "ids": movies["movie_id"].to_numpy(np.int64).tolist(),
            "titles": movies["title"].astype(str).tolist(),
            "years": _years(movies),
            "genres": movies["genres"].astype(str).tolist(),
        },
    ).one()
    users = np.unique(prepared.ratings["user_id"].to_numpy(np.int64)).tolist()
    users_added = connection.exec_driver_sql(_PG_INSERT_USERS, {"ids": users}).rowcount
    if empty:
        ratings_added, ratings_updated = _pg_bulk_load(connection, prepared.ratings, batch_size, advance), 0
    else:
        ratings_added, ratings_updated = _pg_merge(connection, prepared.ratings, batch_size, advance)
    return _Counts(movies_added, movies_updated, users_added, ratings_added, ratings_updated)


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


# --- SQLite -----------------------------------------------------------------------------------

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


def _write_sqlite(connection: Connection, prepared: _Prepared, batch_size: int, advance: Advance) -> _Counts:
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
    return _Counts(
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


# --- shared -----------------------------------------------------------------------------------


def _movie_tuples(movies: pd.DataFrame) -> list[tuple[int, str, int | None, str]]:
    """Catalog rows as Python tuples."""
    return list(
        zip(
            movies["movie_id"].to_numpy(np.int64).tolist(),
            movies["title"].astype(str).tolist(),
            _years(movies),
            movies["genres"].astype(str).tolist(),
            strict=True,
        )
    )


def _years(movies: pd.DataFrame) -> list[int | None]:
    """The catalog's years as Python ints, None where unknown."""
    return [None if pd.isna(year) else int(year) for year in movies["year"].tolist()]


@contextmanager
def _progress_bar(enabled: bool, name: str, total: int) -> Iterator[Advance]:
    """A rich progress bar over the rating rows written, or a no-op when not `enabled`."""
    if not enabled:
        yield lambda _rows: None
        return
    with Progress(transient=False) as bar:
        task = bar.add_task(f"importing {name}", total=total)
        yield lambda rows: bar.advance(task, rows)
