"""What the REST API reads of the ratings store, and the catalog's writes: small typed functions,
each taking a `Session` (the caller owns the transaction). Ratings are written by
app.db.rating_writes; the types and helpers both share are here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Row,
    String,
    Table,
    func,
    literal,
    select,
    text,
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
class RatingStats:
    """Per rated movie, ascending by id: number of ratings and mean rating."""

    movie_ids: np.ndarray
    counts: np.ndarray
    means: np.ndarray


# --- ratings (reads; rating_writes.py writes them) ----------------------------------------------


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
        for chunk in id_chunks(ids)
        for movie_id, title in session.execute(
            select(MOVIES.c.id, MOVIES.c.title).where(MOVIES.c.id.in_(chunk))
        )
    }


def movies_exist(session: Session, ids: Iterable[int]) -> set[int]:
    """Those of `ids` that are in the catalog."""
    return {
        movie_id
        for chunk in id_chunks(ids)
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


def _insert(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT, which knows ON CONFLICT."""
    dialect = session.get_bind().dialect.name
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def id_chunks(values: Iterable[T]) -> Iterator[list[T]]:
    """`values` deduplicated, `IN_CHUNK` at a time, each bound as one expanding parameter."""
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), IN_CHUNK):
        yield unique[start : start + IN_CHUNK]


def unix_seconds(moment: datetime) -> int:
    """Whole unix seconds; a naive datetime is taken as UTC."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp())


def from_unix(seconds: int) -> datetime:
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
        rated_at=from_unix(row.rated_at),
    )


def _movie_row(row: Row) -> MovieRow:
    return MovieRow(
        id=row.id,
        title=row.title,
        year=row.year,
        genres=row.genres.split("|") if row.genres else [],
    )
