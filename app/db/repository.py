"""What the REST API asks of the ratings store: small typed functions, each taking a `Session`.

The caller owns the transaction (commit or roll back). Writes are single
``INSERT ... ON CONFLICT`` statements on both dialects, so concurrent writers never create
duplicates and the last write wins. On SQLite, call a write function first in its transaction:
it starts with a write, so SQLite takes its write lock (waiting up to `db_timeout_s` for other
writers) before reading; a transaction that read first can fail with "database is locked"
when another writer committed in between, unless its connection was opened with the execution
option ``sqlite_begin="IMMEDIATE"`` (see `app.db.session.make_engine`).

Rating values are not checked against the configured scale here (the API does that with
`Settings`); the schema's CHECK rejects values outside the store's outer scale with an
`IntegrityError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import numpy as np
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Insert,
    Row,
    String,
    Table,
    bindparam,
    column,
    delete,
    func,
    literal,
    select,
    text,
    values,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from app.db.models import Movie, Rating, User
from app.db.session import SQLITE_FOLD_FUNCTION

T = TypeVar("T")

IN_CHUNK = 5_000
"""Most ids bound in one IN list (SQLite allows 32,766 parameters a statement)."""

RATINGS = Rating.__table__
USERS = User.__table__
MOVIES = Movie.__table__


class UnknownMovie(LookupError):
    """A rating names movies that are not in the catalog."""

    def __init__(self, movie_ids: Iterable[int]) -> None:
        self.movie_ids = sorted(movie_ids)
        super().__init__(f"unknown movie id(s): {', '.join(map(str, self.movie_ids))}")


class MovieExists(ValueError):
    """`create_movie` was given an id the catalog already has."""

    def __init__(self, movie_id: int) -> None:
        self.movie_id = movie_id
        super().__init__(f"movie {movie_id} already exists")


@dataclass(frozen=True)
class RatingRow:
    """One stored rating; `rated_at` is timezone-aware UTC."""

    user_id: int
    movie_id: int
    rating: float
    rated_at: datetime


@dataclass(frozen=True)
class MovieRow:
    """One catalog entry; `genres` is the list split from the stored '|'-joined text."""

    id: int
    title: str
    year: int | None
    genres: list[str]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing and the size of the whole listing."""

    items: list[T]
    total: int


@dataclass(frozen=True)
class BatchResult:
    """How many ratings of a batch were new and how many replaced a stored one."""

    inserted: int
    updated: int


@dataclass(frozen=True)
class RatingStats:
    """Per rated movie, ascending by id: number of ratings and mean rating."""

    movie_ids: np.ndarray
    counts: np.ndarray
    means: np.ndarray


# --- ratings ----------------------------------------------------------------------------------


def upsert_rating(
    session: Session, user_id: int, movie_id: int, rating: float, rated_at: datetime
) -> tuple[RatingRow, bool]:
    """Store `user_id`'s rating of `movie_id` (the user is created on first rating).

    Returns the stored row and whether it was created (False: it replaced an older one).
    Raises `UnknownMovie` when the movie is not in the catalog.
    """
    stored = stored_row(user_id, movie_id, rating, rated_at)
    return stored, _upsert(session, [stored])[0]


def stored_row(user_id: int, movie_id: int, rating: float, rated_at: datetime) -> RatingRow:
    """The row as the store keeps it: the time in whole seconds, UTC."""
    return RatingRow(user_id, movie_id, rating, _from_unix(_unix_seconds(rated_at)))


def upsert_ratings(session: Session, rows: Sequence[RatingRow]) -> BatchResult:
    """Store a batch, all or nothing: `UnknownMovie` (naming every missing id) before any write.

    Of several rows for one (user, movie) the last wins.
    """
    unique = list({(row.user_id, row.movie_id): row for row in rows}.values())
    driver = _DRIVER_WRITES[session.get_bind().dialect.name]
    wanted = {row.movie_id for row in unique}
    missing = wanted - driver.movies_exist(session, wanted)
    if missing:
        raise UnknownMovie(missing)
    created = driver.upsert(session, unique) if unique else []
    inserted = sum(created)
    return BatchResult(inserted=inserted, updated=len(unique) - inserted)


def upsert_rows(session: Session, rows: Sequence[RatingRow]) -> list[bool | UnknownMovie]:
    """Rows of many clients, in the order they came, in the caller's transaction: for each,
    whether it created its (user, movie), or UnknownMovie (nothing of it written) when its movie
    is not in the catalog. Of several rows for one pair the last is stored; the first is the one
    that created it, if any."""
    if not rows:
        return []
    driver = _DRIVER_WRITES[session.get_bind().dialect.name]
    known = driver.movies_exist(session, {row.movie_id for row in rows})
    last = {(row.user_id, row.movie_id): row for row in rows if row.movie_id in known}
    created = dict(zip(last, driver.upsert(session, list(last.values())), strict=True))
    outcomes: list[bool | UnknownMovie] = []
    seen: set[tuple[int, int]] = set()
    for row in rows:
        pair = (row.user_id, row.movie_id)
        if row.movie_id not in known:
            outcomes.append(UnknownMovie([row.movie_id]))
        else:
            outcomes.append(created[pair] and pair not in seen)
            seen.add(pair)
    return outcomes


def delete_rating(session: Session, user_id: int, movie_id: int) -> bool:
    """Remove one rating; False when there was none."""
    result = session.execute(
        delete(RATINGS).where(RATINGS.c.user_id == user_id, RATINGS.c.movie_id == movie_id)
    )
    return result.rowcount == 1


def user_ratings(session: Session, user_id: int, limit: int, offset: int = 0) -> Page[RatingRow]:
    """A user's ratings, newest first (ties by movie id), and how many they have in all."""
    query = (
        select(*RATINGS.c)
        .where(RATINGS.c.user_id == user_id)
        .order_by(RATINGS.c.rated_at.desc(), RATINGS.c.movie_id)
        .limit(limit)
        .offset(offset)
    )
    items = [_rating_row(row) for row in session.execute(query)]
    total = session.scalar(select(func.count()).where(RATINGS.c.user_id == user_id))
    return Page(items=items, total=total or 0)


def rated_movie_ids(session: Session, user_id: int) -> list[int]:
    """Ids of the movies `user_id` rated, ascending."""
    query = select(RATINGS.c.movie_id).where(RATINGS.c.user_id == user_id).order_by("movie_id")
    return list(session.scalars(query))


def user_rating_arrays(session: Session, user_id: int) -> tuple[np.ndarray, np.ndarray]:
    """A user's ratings as (movie ids int64, ratings float32), ascending by movie id."""
    query = (
        select(RATINGS.c.movie_id, RATINGS.c.rating)
        .where(RATINGS.c.user_id == user_id)
        .order_by(RATINGS.c.movie_id)
    )
    rows = session.execute(query).all()
    movie_ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    ratings = np.fromiter((row[1] for row in rows), dtype=np.float32, count=len(rows))
    return movie_ids, ratings


def movie_rating_stats(session: Session) -> RatingStats:
    """Count and mean rating of every rated movie, for a popularity fallback."""
    query = (
        select(RATINGS.c.movie_id, func.count(), func.avg(RATINGS.c.rating))
        .group_by(RATINGS.c.movie_id)
        .order_by(RATINGS.c.movie_id)
    )
    rows = session.execute(query).all()
    return RatingStats(
        movie_ids=np.array([row[0] for row in rows], dtype=np.int64),
        counts=np.array([row[1] for row in rows], dtype=np.int64),
        means=np.array([row[2] for row in rows], dtype=np.float32),
    )


def count_ratings(session: Session) -> int:
    """How many ratings are stored."""
    return session.scalar(select(func.count()).select_from(RATINGS)) or 0


# --- movies -----------------------------------------------------------------------------------


def get_movie(session: Session, movie_id: int) -> MovieRow | None:
    """The catalog entry `movie_id`, None when there is none."""
    row = session.execute(select(*MOVIES.c).where(MOVIES.c.id == movie_id)).one_or_none()
    return None if row is None else _movie_row(row)


def search_movies(
    session: Session,
    search: str | None = None,
    genre: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> Page[MovieRow]:
    """Movies whose title contains `search` (any case, Unicode) and whose genres include `genre`.

    `genre` must equal one of the '|'-separated genres (any case). Both are bound parameters
    with LIKE wildcards escaped, so any text is searched for literally. Ordered by id.
    """
    if genre and "|" in genre:
        return Page(items=[], total=0)
    conditions: list[ColumnElement[bool]] = []
    folded = fold_like(session)
    if search:
        conditions.append(fold(MOVIES.c.title).contains(folded(search), autoescape=True))
    if genre:
        padded = fold(literal("|", String) + MOVIES.c.genres + literal("|", String))
        conditions.append(padded.contains(f"|{folded(genre)}|", autoescape=True))
    query = select(*MOVIES.c).where(*conditions)
    items = session.execute(query.order_by(MOVIES.c.id).limit(limit).offset(offset))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    return Page(items=[_movie_row(row) for row in items], total=total or 0)


def create_movie(
    session: Session, movie_id: int, title: str, year: int | None, genres: Sequence[str]
) -> MovieRow:
    """Add a catalog entry; `MovieExists` when the id is taken, ValueError for a genre with '|'."""
    if any("|" in genre for genre in genres):
        raise ValueError("a genre cannot contain '|', the stored separator")
    values = {"id": movie_id, "title": title, "year": year, "genres": "|".join(genres)}
    query = _insert(session, MOVIES).values(values).on_conflict_do_nothing().returning(*MOVIES.c)
    row = session.execute(query).one_or_none()
    if row is None:
        raise MovieExists(movie_id)
    return _movie_row(row)


def movie_titles(session: Session, ids: Iterable[int]) -> dict[int, str]:
    """Titles of those of `ids` in the catalog."""
    return {
        movie_id: title
        for chunk in _chunks(ids)
        for movie_id, title in session.execute(
            select(MOVIES.c.id, MOVIES.c.title).where(MOVIES.c.id.in_(chunk))
        )
    }


def movies_exist(session: Session, ids: Iterable[int]) -> set[int]:
    """Those of `ids` that are in the catalog."""
    return {
        movie_id
        for chunk in _chunks(ids)
        for movie_id in session.scalars(select(MOVIES.c.id).where(MOVIES.c.id.in_(chunk)))
    }


def ping(session: Session) -> None:
    """Round-trip to the database; raises `sqlalchemy.exc.SQLAlchemyError` when unreachable."""
    session.execute(text("SELECT 1"))


# --- helpers ----------------------------------------------------------------------------------


class fold(FunctionElement[str]):
    """Unicode-aware case folding of a text expression: Python's `str.casefold`, registered by
    `make_engine` on SQLite (whose own ``lower()`` knows only ASCII); ``lower()`` on PostgreSQL
    15, which has no casefold (the two differ on a few letters such as "ß")."""

    type = String()
    inherit_cache = True


@compiles(fold)
def _fold_default(element: fold, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(fold, "sqlite")
def _fold_sqlite(element: fold, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{SQLITE_FOLD_FUNCTION}({compiler.process(element.clauses, **kw)})"


def fold_like(session: Session) -> Callable[[str], str]:
    """How to fold a text compared with a `fold` expression, the same way the database does."""
    return str.casefold if session.get_bind().dialect.name == "sqlite" else str.lower


def _upsert(session: Session, rows: Sequence[RatingRow]) -> list[bool]:
    """Write rows of distinct (user, movie) pairs; for each, whether it was created.

    Inside a savepoint, so an unknown movie undoes the users written for it. The first
    statement is a write, so SQLite takes its write lock before reading anything.
    """
    if not rows:
        return []
    with session.begin_nested():
        users = sorted({row.user_id for row in rows})
        session.execute(_insert(session, USERS).on_conflict_do_nothing(), [{"id": u} for u in users])
        wanted = {row.movie_id for row in rows}
        missing = wanted - movies_exist(session, wanted)
        if missing:
            raise UnknownMovie(missing)
        values = [
            {
                "user_id": row.user_id,
                "movie_id": row.movie_id,
                "rating": row.rating,
                "rated_at": _unix_seconds(row.rated_at),
            }
            for row in rows
        ]
        if session.get_bind().dialect.name == "postgresql":
            return _upsert_returning_created(session, values)
        existing = _existing_pairs(session, [(row.user_id, row.movie_id) for row in rows])
        session.execute(_rating_upsert(session), values)
        return [(row.user_id, row.movie_id) not in existing for row in rows]


# The hot write path (groups of single ratings) on the driver directly: SQLAlchemy's statement
# building and compiling cost several times the writes themselves (BENCHMARKS.md, "Writes").
# SQLite's SQL is compiled once from the same Core statements; PostgreSQL's takes whole columns
# as arrays, one round trip a statement. Both run in the caller's write transaction.
_SQLITE = sqlite.dialect()
_SQLITE_USERS = str(
    sqlite.insert(USERS).values(id=bindparam("id")).on_conflict_do_nothing().compile(dialect=_SQLITE)
)
#: the pairs of a list already rated: one primary-key lookup each, joined from a VALUES list (a
#: row-value IN would scan the table), at most 500 pairs (1,000 parameters) a statement
_SQLITE_RATED = (
    "WITH wanted(user_id, movie_id) AS (VALUES {pairs}) SELECT ratings.user_id, ratings.movie_id "
    "FROM wanted JOIN ratings ON ratings.user_id = wanted.user_id AND ratings.movie_id = wanted.movie_id"
)
_SQLITE_RATED_CHUNK = 500
_SQLITE_UPSERT = str(
    sqlite.insert(RATINGS)
    .on_conflict_do_update(
        index_elements=[RATINGS.c.user_id, RATINGS.c.movie_id],
        set_={
            "rating": sqlite.insert(RATINGS).excluded.rating,
            "rated_at": sqlite.insert(RATINGS).excluded.rated_at,
        },
    )
    .compile(dialect=_SQLITE)
)


def _sqlite_movies_exist(session: Session, ids: set[int]) -> set[int]:
    cursor = session.connection().connection.driver_connection.cursor()
    found = set()
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        found.update(row[0] for row in cursor.execute(f"SELECT id FROM movies WHERE id IN ({marks})", chunk))
    return found


def _sqlite_upsert(session: Session, rows: Sequence[RatingRow]) -> list[bool]:
    """`_upsert` for SQLite in the caller's write transaction (whose lock it holds already)."""
    cursor = session.connection().connection.driver_connection.cursor()
    cursor.executemany(_SQLITE_USERS, [(user,) for user in sorted({row.user_id for row in rows})])
    pairs = [(row.user_id, row.movie_id) for row in rows]
    existing: set[tuple[int, int]] = set()
    for start in range(0, len(pairs), _SQLITE_RATED_CHUNK):
        chunk = pairs[start : start + _SQLITE_RATED_CHUNK]
        query = _SQLITE_RATED.format(pairs=",".join(["(?, ?)"] * len(chunk)))
        existing.update(cursor.execute(query, [value for pair in chunk for value in pair]).fetchall())
    created = [pair not in existing for pair in pairs]
    cursor.executemany(
        _SQLITE_UPSERT, [(r.user_id, r.movie_id, r.rating, _unix_seconds(r.rated_at)) for r in rows]
    )
    return created


_PG_USERS = "INSERT INTO users (id) SELECT unnest(%s::bigint[]) ON CONFLICT DO NOTHING"
_PG_MOVIES = "SELECT id FROM movies WHERE id = ANY(%s::bigint[])"
# rows in (user, movie) order, so concurrent writers lock shared rows in one order: no deadlock
_PG_UPSERT = (
    "INSERT INTO ratings (user_id, movie_id, rating, rated_at) "
    "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::real[], %s::bigint[]) AS r ORDER BY 1, 2 "
    "ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = excluded.rated_at "
    "RETURNING user_id, movie_id, xmax = 0"
)


def _pg_movies_exist(session: Session, ids: set[int]) -> set[int]:
    cursor = session.connection().connection.driver_connection.cursor()
    return {row[0] for row in cursor.execute(_PG_MOVIES, (sorted(ids),))}


def _pg_upsert(session: Session, rows: Sequence[RatingRow]) -> list[bool]:
    """`_upsert` for PostgreSQL: which of `rows` created their pair (``xmax = 0``: no older
    version of the row was replaced)."""
    cursor = session.connection().connection.driver_connection.cursor()
    cursor.execute(_PG_USERS, (sorted({row.user_id for row in rows}),))
    columns = (
        [r.user_id for r in rows],
        [r.movie_id for r in rows],
        [r.rating for r in rows],
        [_unix_seconds(r.rated_at) for r in rows],
    )
    created = {(user, movie): bool(new) for user, movie, new in cursor.execute(_PG_UPSERT, columns)}
    return [created[(row.user_id, row.movie_id)] for row in rows]


@dataclass(frozen=True)
class _DriverWrites:
    movies_exist: Callable[[Session, set[int]], set[int]]
    upsert: Callable[[Session, Sequence[RatingRow]], list[bool]]


_DRIVER_WRITES = {
    "sqlite": _DriverWrites(_sqlite_movies_exist, _sqlite_upsert),
    "postgresql": _DriverWrites(_pg_movies_exist, _pg_upsert),
}


def _upsert_returning_created(session: Session, rows: list[dict]) -> list[bool]:
    """PostgreSQL: upsert and tell new rows by ``xmax = 0`` (no older version was replaced).

    Rows are written in (user, movie) order, so concurrent batches lock shared rows in the
    same order and cannot deadlock.
    """
    query = _rating_upsert(session).returning(RATINGS.c.user_id, RATINGS.c.movie_id, text("xmax = 0"))
    ordered = sorted(rows, key=lambda row: (row["user_id"], row["movie_id"]))
    created = {(user, movie): bool(new) for user, movie, new in session.execute(query, ordered)}
    return [created[(row["user_id"], row["movie_id"])] for row in rows]


def _rating_upsert(session: Session) -> Insert:
    """INSERT a rating, replacing value and time of the stored one for the same pair."""
    query = _insert(session, RATINGS)
    return query.on_conflict_do_update(
        index_elements=[RATINGS.c.user_id, RATINGS.c.movie_id],
        set_={"rating": query.excluded.rating, "rated_at": query.excluded.rated_at},
    )


def _existing_pairs(session: Session, pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those (user, movie) pairs already rated (SQLite: exact, the write lock is held).

    The pairs are joined as a VALUES list, one primary-key lookup each: SQLite answers a
    `(user_id, movie_id) IN (...)` of more than one pair by scanning the whole table.
    """
    found: set[tuple[int, int]] = set()
    for chunk in _chunks(pairs):
        wanted = values(column("user_id", BigInteger), column("movie_id", BigInteger), name="wanted")
        wanted = wanted.data(chunk).cte("wanted")
        query = select(RATINGS.c.user_id, RATINGS.c.movie_id).join_from(
            wanted,
            RATINGS,
            (RATINGS.c.user_id == wanted.c.user_id) & (RATINGS.c.movie_id == wanted.c.movie_id),
        )
        found.update((user_id, movie_id) for user_id, movie_id in session.execute(query))
    return found


def _insert(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT, which knows ON CONFLICT."""
    dialect = session.get_bind().dialect.name
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def _chunks(values: Iterable[T]) -> Iterator[list[T]]:
    """`values` deduplicated, `IN_CHUNK` at a time, each bound as one expanding parameter."""
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), IN_CHUNK):
        yield unique[start : start + IN_CHUNK]


def _unix_seconds(moment: datetime) -> int:
    """Whole unix seconds; a naive datetime is taken as UTC."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp())


def _from_unix(seconds: int) -> datetime:
    """The stored time; one outside what a datetime holds (stored before the API checked
    rated_at, or by hand) reads as the nearest end of the range rather than failing the page."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return (datetime.max if seconds > 0 else datetime.min).replace(tzinfo=UTC)


def _rating_row(row: Row) -> RatingRow:
    return RatingRow(
        user_id=row.user_id,
        movie_id=row.movie_id,
        rating=float(row.rating),
        rated_at=_from_unix(row.rated_at),
    )


def _movie_row(row: Row) -> MovieRow:
    return MovieRow(
        id=row.id,
        title=row.title,
        year=row.year,
        genres=row.genres.split("|") if row.genres else [],
    )
