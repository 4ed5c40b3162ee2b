"""Writing ratings: one, a batch (all or nothing), or the rows of many clients at once (group
commit), and deleting one. Each function takes the caller's `Session`; the caller owns the
transaction, opened by app.db.session.write_transaction (on SQLite it takes the write lock at
once: these functions read the catalog before they write). Writes are single ``INSERT ... ON CONFLICT``
statements, so concurrent writers never create duplicates and the last write wins.

The users are created on their first rating; a rating of a movie not in the catalog is an
`UnknownMovie`, and nothing of it is written. Rating values are not checked against the
configured scale here (the API does that with `Settings`); the schema's CHECK rejects values
outside the store's outer scale with an `IntegrityError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from app.db.repository import (
    RATINGS,
    USERS,
    RatingRow,
    UnknownMovie,
    from_unix,
    id_chunks,
    movies_exist,
    unix_seconds,
)


@dataclass(frozen=True)
class BatchResult:
    """How many ratings of a batch were new and how many replaced a stored one."""

    inserted: int
    updated: int


def upsert_rating(
    session: Session, user_id: int, movie_id: int, rating: float, rated_at: datetime
) -> tuple[RatingRow, bool]:
    """Store `user_id`'s rating of `movie_id` (the user is created on first rating).

    Returns the stored row and whether it was created (False: it replaced an older one).
    Raises `UnknownMovie` when the movie is not in the catalog.
    """
    stored = stored_row(user_id, movie_id, rating, rated_at)
    (outcome,) = upsert_rows(session, [stored])
    if isinstance(outcome, UnknownMovie):
        raise outcome
    return stored, outcome


def stored_row(user_id: int, movie_id: int, rating: float, rated_at: datetime) -> RatingRow:
    """The row as the store keeps it: the time in whole seconds, UTC."""
    return RatingRow(user_id, movie_id, rating, from_unix(unix_seconds(rated_at)))


def upsert_ratings(session: Session, rows: Sequence[RatingRow]) -> BatchResult:
    """Store a batch, all or nothing: `UnknownMovie` (naming every missing id) and nothing
    written when any of its movies is not in the catalog. Of several rows for one (user, movie)
    the last wins."""
    unique = list({(row.user_id, row.movie_id): row for row in rows}.values())
    created = _DRIVER_WRITES[session.get_bind().dialect.name].upsert_whole(session, unique) if unique else {}
    if created is None:
        wanted = {row.movie_id for row in unique}
        raise UnknownMovie(wanted - movies_exist(session, wanted))
    inserted = sum(created.values())
    return BatchResult(inserted=inserted, updated=len(unique) - inserted)


def upsert_rows(session: Session, rows: Sequence[RatingRow]) -> list[bool | UnknownMovie]:
    """Rows of many clients, in the order they came, in the caller's transaction: for each,
    whether it created its (user, movie), or UnknownMovie (nothing of it written) when its movie
    is not in the catalog. Of several rows for one pair the last is stored; the first is the one
    that created it, if any."""
    if not rows:
        return []
    last = {(row.user_id, row.movie_id): row for row in rows}
    created = _DRIVER_WRITES[session.get_bind().dialect.name].upsert_known(session, list(last.values()))
    outcomes: list[bool | UnknownMovie] = []
    seen: set[tuple[int, int]] = set()
    for row in rows:
        pair = (row.user_id, row.movie_id)
        if pair not in created:
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
    for chunk in id_chunks(ids):
        marks = ",".join("?" * len(chunk))
        found.update(row[0] for row in cursor.execute(f"SELECT id FROM movies WHERE id IN ({marks})", chunk))
    return found


def _sqlite_upsert_known(session: Session, rows: Sequence[RatingRow]) -> dict[tuple[int, int], bool]:
    """`upsert_known` for SQLite, in the caller's write transaction (whose lock it holds)."""
    known = _sqlite_movies_exist(session, {row.movie_id for row in rows})
    return _sqlite_upsert(session, [row for row in rows if row.movie_id in known])


def _sqlite_upsert_whole(session: Session, rows: Sequence[RatingRow]) -> dict[tuple[int, int], bool] | None:
    """`upsert_whole` for SQLite: the catalog is read first (the write lock is held already)."""
    wanted = {row.movie_id for row in rows}
    if _sqlite_movies_exist(session, wanted) != wanted:
        return None
    return _sqlite_upsert(session, rows)


def _sqlite_upsert(session: Session, rows: Sequence[RatingRow]) -> dict[tuple[int, int], bool]:
    """Store `rows` (all of movies in the catalog, one a pair): whether each pair was created."""
    cursor = session.connection().connection.driver_connection.cursor()
    cursor.executemany(_SQLITE_USERS, [(user,) for user in sorted({row.user_id for row in rows})])
    pairs = [(row.user_id, row.movie_id) for row in rows]
    existing: set[tuple[int, int]] = set()
    for start in range(0, len(pairs), _SQLITE_RATED_CHUNK):
        chunk = pairs[start : start + _SQLITE_RATED_CHUNK]
        query = _SQLITE_RATED.format(pairs=",".join(["(?, ?)"] * len(chunk)))
        existing.update(cursor.execute(query, [value for pair in chunk for value in pair]).fetchall())
    cursor.executemany(
        _SQLITE_UPSERT, [(r.user_id, r.movie_id, r.rating, unix_seconds(r.rated_at)) for r in rows]
    )
    return {pair: pair not in existing for pair in pairs}


# One statement, one round trip: the rows of movies in the catalog (all rows or none when
# `whole`), their users created first (the foreign key is checked at the statement's end, when
# the users' CTE has run), then the upsert, in (user, movie) order so that concurrent writers
# lock shared rows in one order.
_PG_UPSERT = """
WITH given (user_id, movie_id, rating, rated_at) AS (
    SELECT * FROM unnest(%(users)s::bigint[], %(movies)s::bigint[], %(ratings)s::real[],
                         %(times)s::bigint[])
), known AS (
    SELECT given.* FROM given JOIN movies ON movies.id = given.movie_id
), stored AS (
    SELECT * FROM known
    WHERE NOT %(whole)s OR (SELECT count(*) FROM known) = (SELECT count(*) FROM given)
), new_users AS (
    INSERT INTO users (id) SELECT DISTINCT user_id FROM stored ORDER BY 1 ON CONFLICT DO NOTHING
)
INSERT INTO ratings (user_id, movie_id, rating, rated_at)
SELECT * FROM stored ORDER BY 1, 2
ON CONFLICT (user_id, movie_id) DO UPDATE SET rating = excluded.rating, rated_at = excluded.rated_at
RETURNING user_id, movie_id, xmax = 0
"""


def _pg_upsert(session: Session, rows: Sequence[RatingRow], whole: bool) -> dict[tuple[int, int], bool]:
    """For each pair stored, whether it created its row (``xmax = 0``: no older version of the
    row was replaced)."""
    cursor = session.connection().connection.driver_connection.cursor()
    columns = {
        "users": [r.user_id for r in rows],
        "movies": [r.movie_id for r in rows],
        "ratings": [r.rating for r in rows],
        "times": [unix_seconds(r.rated_at) for r in rows],
        "whole": whole,
    }
    return {(user, movie): bool(new) for user, movie, new in cursor.execute(_PG_UPSERT, columns)}


def _pg_upsert_known(session: Session, rows: Sequence[RatingRow]) -> dict[tuple[int, int], bool]:
    """`upsert_known` for PostgreSQL: the statement checks the catalog itself."""
    return _pg_upsert(session, rows, whole=False)


def _pg_upsert_whole(session: Session, rows: Sequence[RatingRow]) -> dict[tuple[int, int], bool] | None:
    """`upsert_whole` for PostgreSQL in one round trip."""
    created = _pg_upsert(session, rows, whole=True)
    return created if len(created) == len(rows) else None


@dataclass(frozen=True)
class _DriverWrites:
    upsert_known: Callable[[Session, Sequence[RatingRow]], dict[tuple[int, int], bool]]
    """Store the rows (one a pair) whose movie is in the catalog; for each pair stored, whether
    it created its row. Pairs of other movies are left out (nothing of them written)."""
    upsert_whole: Callable[[Session, Sequence[RatingRow]], dict[tuple[int, int], bool] | None]
    """The same for rows whose movies are all in the catalog; None, with nothing written, when
    any is not."""


_DRIVER_WRITES = {
    "sqlite": _DriverWrites(_sqlite_upsert_known, _sqlite_upsert_whole),
    "postgresql": _DriverWrites(_pg_upsert_known, _pg_upsert_whole),
}
