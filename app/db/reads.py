"""The database reads made while serving predictions, awaitable without stalling the event loop.

The hot endpoints are `async def` (a hop to the thread pool costs more than all their other
work), so their one read must not block the loop on I/O:

- SQLite: the read runs on the loop thread through one connection kept for it. In WAL mode a
  reader never waits for writers; its busy timeout is cut to a few milliseconds and a busy or
  failed read is retried once through the thread pool, where the full timeout applies.
  `ratings_version` is that connection's `PRAGMA data_version`, which changes whenever any
  other connection, of this process or another, commits: callers keep what they read while it
  stands still (a version check costs a seventh of the read).
- PostgreSQL: the read awaits a psycopg async connection of its own (AsyncConnections), on the
  event loop, in autocommit (no BEGIN, no ROLLBACK, no pre-ping round trips): a fifth of what
  the same read cost through the thread pool and a pooled SQLAlchemy connection. Each wait is
  bounded by `db_timeout_s`; a connection a restarted server left dead is noticed on first
  use, and the read is tried once more on a new connection.

Each read is one SQLAlchemy statement, compiled once for the engine's dialect, so both paths
run the same SQL: one row of comma-joined integers (numpy parses them far faster than drivers
build Python rows).
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from typing import Any

import numpy as np
import psycopg
from anyio import to_thread
from sqlalchemy import Engine, Integer, Text, bindparam, cast, func, literal_column, select
from sqlalchemy.sql import ColumnElement, Select

from app.db.models import Movie, Rating
from app.db.ratings_listener import RatingsListener
from app.db.repository import MovieRow
from app.db.session import AnswerTimeout, AsyncConnections

log = logging.getLogger("dotrec.db")


RATINGS = Rating.__table__
MOVIES = Movie.__table__
IN_CHUNK = 5_000
INLINE_BUSY_TIMEOUT_MS = 5
INLINE_MMAP_BYTES = 256 * 1024 * 1024
DATA_VERSION = "PRAGMA data_version"

# One row of comma-joined integers: drivers' Python rows cost more than the lookup, and numpy
# parses integers far faster than decimals, so ratings travel in thousandths (every value of a
# rating scale is a multiple of 0.001; the store's CHECK allows multiples of 0.5). Both
# aggregates of a query read the same rows in the same order; the parse sorts by movie id.
MILLI = 1000


def _joined(dialect: str, value: ColumnElement) -> ColumnElement:
    """`value` of every row, as text joined by commas: SQLite's group_concat, PostgreSQL's string_agg."""
    if dialect == "sqlite":
        return func.group_concat(value)
    return func.string_agg(cast(value, Text), literal_column("','"))


def _rated_ids(dialect: str) -> Select:
    return select(_joined(dialect, RATINGS.c.movie_id)).where(RATINGS.c.user_id == bindparam("user_id"))


def _user_ratings(dialect: str) -> Select:
    milli = cast(func.round(RATINGS.c.rating * literal_column(str(MILLI))), Integer)
    return select(_joined(dialect, RATINGS.c.movie_id), _joined(dialect, milli)).where(
        RATINGS.c.user_id == bindparam("user_id")
    )


_MOVIE = select(MOVIES.c.id, MOVIES.c.title, MOVIES.c.year, MOVIES.c.genres).where(
    MOVIES.c.id == bindparam("movie_id")
)
_EMPTY_IDS = np.empty(0, dtype=np.int64)
_EMPTY_RATINGS = np.empty(0, dtype=np.float32)
_EMPTY_IDS.flags.writeable = _EMPTY_RATINGS.flags.writeable = False  # shared by every empty answer


def _split(joined: str) -> np.ndarray:
    """int64 numbers from SQLite's comma-joined text (numpy's text parser, no Python objects)."""
    return np.fromstring(joined, dtype=np.int64, sep=",")


class _Compiled:
    """A statement compiled for one dialect, runnable on a raw DBAPI cursor."""

    def __init__(self, statement: Select, engine: Engine) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.statement = statement
        self.sql = compiled.string
        self.names = list(compiled.positiontup or [])

    def params(self, values: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The parameters as the compiled SQL takes them: positional (SQLite) or named (psycopg)."""
        return tuple(values[name] for name in self.names) if self.names else values


class Reads:
    """The request-time reads (see the module's docstring for how each dialect runs them)."""

    def __init__(self, engine: Engine, timeout_s: float = 5.0, pool_size: int = 5) -> None:
        self.engine = engine
        dialect = engine.dialect.name
        database = engine.url.database or ""
        self.inline = dialect == "sqlite" and database not in ("", ":memory:")
        statements = {
            "rated_ids": _rated_ids(dialect),
            "user_ratings": _user_ratings(dialect),
            "movie": _MOVIE,
        }
        self._compiled = {name: _Compiled(stmt, engine) for name, stmt in statements.items()}
        self._rated_ids_sql = self._compiled["rated_ids"].sql
        self._connection: Any = None
        self._cursor: Any = None
        self._generation = 0
        """How many inline connections were opened: data versions count per connection."""
        self.pool = AsyncConnections(engine, pool_size, timeout_s) if dialect == "postgresql" else None
        self.listener = RatingsListener(self.pool.conninfo, timeout_s) if self.pool is not None else None
        self._own_writes = itertools.count()
        self._own_write = 0
        """This process's commits of ratings so far (read-your-writes before any notification)."""

    async def start(self) -> None:
        """Begin listening for other processes' ratings (PostgreSQL); on the running event loop."""
        if self.listener is not None:
            self.listener.start()

    async def close(self) -> None:
        self._close_inline()
        if self.listener is not None:
            await self.listener.close()
        if self.pool is not None:
            await self.pool.close()

    def note_own_write(self) -> None:
        """This process just committed ratings (from any thread): what was kept is stale now."""
        self._own_write = next(self._own_writes) + 1

    # --- the reads ---

    def ratings_version(self) -> tuple[int, ...] | None:
        """A token that changes whenever ratings are committed by any connection.

        SQLite: the inline connection's `PRAGMA data_version` (which any other connection's
        commit moves, this process's writes included), with that connection's generation.
        PostgreSQL: the notifications heard on the `dotrec_ratings` channel (a trigger sends one
        after every statement changing ratings; delivered at commit, within milliseconds),
        with the listener's generation and this process's own writes (counted before the
        writing client is answered: read-your-writes). None while no such token can be
        trusted (the listener is down or reconnecting; the inline connection failed): then
        what is read is not kept, and every request reads anew.
        """
        if self.listener is not None:
            heard = self.listener.version()
            return None if heard is None else (*heard, self._own_write)
        if not self.inline:
            return None
        try:
            cursor = self._cursor or self._open_inline()
            return self._generation, cursor.execute(DATA_VERSION).fetchone()[0]
        except sqlite3.Error as error:
            self._inline_failed(error)
            return None

    async def rated_movie_ids(self, user_id: int) -> np.ndarray:
        """int64 ids of the movies `user_id` rated (ascending on PostgreSQL, in storage order
        on SQLite: the callers only test membership)."""
        if self.inline:  # the hottest read of all, without the generic path's layers
            try:
                cursor = self._cursor or self._open_inline()
                joined = cursor.execute(self._rated_ids_sql, (user_id,)).fetchone()[0]
                return _split(joined) if joined else _EMPTY_IDS
            except sqlite3.Error as error:
                self._inline_failed(error)
        rows = await self._fetch("rated_ids", {"user_id": user_id}, inline=False)
        joined = rows[0][0] if rows else None
        return _split(joined) if joined else _EMPTY_IDS

    async def user_ratings(self, user_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(int64 movie ids, float32 ratings) of `user_id`, ascending by movie id."""
        rows = await self._fetch("user_ratings", {"user_id": user_id})
        joined_ids, joined_ratings = rows[0] if rows else (None, None)
        if not joined_ids:
            return _EMPTY_IDS, _EMPTY_RATINGS
        ids = _split(joined_ids)
        ratings = (_split(joined_ratings) / MILLI).astype(np.float32)
        if len(ids) != len(ratings):
            raise RuntimeError(f"user {user_id}: {len(ids)} movie ids but {len(ratings)} ratings")
        order = np.argsort(ids, kind="stable")
        return ids[order], ratings[order]

    async def movie(self, movie_id: int) -> MovieRow | None:
        rows = await self._fetch("movie", {"movie_id": movie_id})
        if not rows:
            return None
        movie_id, title, year, genres = rows[0]
        return MovieRow(id=movie_id, title=title, year=year, genres=genres.split("|") if genres else [])

    def _close_inline(self) -> None:
        self._cursor = None
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                log.debug("closing the inline SQLite connection failed", exc_info=True)

    # --- how they run ---

    async def _fetch(self, name: str, values: dict[str, Any], inline: bool = True) -> list[tuple]:
        compiled = self._compiled[name]
        if self.pool is not None:
            return await self._fetch_async(compiled, values)
        if self.inline and inline:
            try:
                return self._fetch_inline(compiled, values)
            except sqlite3.Error as error:
                self._inline_failed(error)
        return await to_thread.run_sync(self._fetch_pooled, compiled, values)

    async def _fetch_async(self, compiled: _Compiled, values: dict[str, Any]) -> list[tuple]:
        """PostgreSQL: the rows. Every wait is bounded (for a connection by timeout_s, for a
        connect by its connect_timeout, for each answer by AsyncAnswerTimeoutConnection)."""
        try:
            return await self._fetch_once(compiled, values)
        except _DeadConnection:  # the server restarted since: drop the dead ones, try once more
            assert self.pool is not None
            await self.pool.drop_idle()
            return await self._fetch_once(compiled, values)

    async def _fetch_once(self, compiled: _Compiled, values: dict[str, Any]) -> list[tuple]:
        assert self.pool is not None
        async with self.pool.connection() as connection:
            try:
                cursor = await connection.execute(compiled.sql, compiled.params(values))
                return await cursor.fetchall()
            except AnswerTimeout:
                raise
            except psycopg.OperationalError as error:
                if connection.broken:
                    raise _DeadConnection(str(error)) from error
                raise

    def _open_inline(self) -> Any:
        """The loop thread's own SQLite connection (made by the engine, so with its pragmas,
        then taken out of its pool), its busy timeout cut short, and a cursor kept for reads."""
        connection = self.engine.raw_connection()
        connection.detach()  # its pragmas below must never reach a pooled session's writes
        connection.execute(f"PRAGMA busy_timeout = {INLINE_BUSY_TIMEOUT_MS}")
        # reads through the OS page cache instead of copies into SQLite's own cache
        connection.execute(f"PRAGMA mmap_size = {INLINE_MMAP_BYTES}")
        self._connection = connection
        self._cursor = connection.cursor()
        self._generation += 1
        return self._cursor

    def _inline_failed(self, error: Exception) -> None:
        log.info("inline SQLite read failed (%s); retrying in the thread pool", error)
        self._close_inline()

    def _fetch_inline(self, compiled: _Compiled, values: dict[str, Any]) -> list[tuple]:
        cursor = self._cursor or self._open_inline()
        return cursor.execute(compiled.sql, compiled.params(values)).fetchall()

    def _fetch_pooled(self, compiled: _Compiled, values: dict[str, Any]) -> list[tuple]:
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(compiled.statement, values)]

    def ratings_of_users(self, user_ids: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Sync (for worker threads): (movie ids, ratings) of each of `user_ids` that has
        ratings, ascending by movie id; one IN query a chunk of IN_CHUNK users."""
        found: dict[int, tuple[list[int], list[float]]] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(user_ids), IN_CHUNK):
                chunk = user_ids[start : start + IN_CHUNK]
                query = (
                    select(RATINGS.c.user_id, RATINGS.c.movie_id, RATINGS.c.rating)
                    .where(RATINGS.c.user_id.in_(chunk))
                    .order_by(RATINGS.c.user_id, RATINGS.c.movie_id)
                )
                for user_id, movie_id, rating in connection.execute(query):
                    ids, ratings = found.setdefault(user_id, ([], []))
                    ids.append(movie_id)
                    ratings.append(rating)
        return {
            user: (np.array(ids, dtype=np.int64), np.array(ratings, dtype=np.float32))
            for user, (ids, ratings) in found.items()
        }


class _DeadConnection(psycopg.OperationalError):
    """A pooled connection turned out dead on use (the server restarted or went away)."""
