"""Group commit of single ratings: many clients' writes in one transaction, each client answered
once the transaction holding its rating has committed.

A transaction a request (a thread hop, a BEGIN, a fsync, a COMMIT each) kept POST /ratings at a
few percent of what the web stack alone can answer (BENCHMARKS.md, "Writes"). Here requests
queue their row on the event loop; one writer task takes everything queued, writes it in one
transaction in a worker thread (`repository.upsert_rows`), and resolves each request's future
with its own outcome: created or replaced, or UnknownMovie for a row naming a movie not in the
catalog, which fails that request alone. A database error fails the requests of that group
(they were not stored); a write waits at most `timeout_s` in all, as every other database wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from anyio import to_thread
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from app.db.rating_writes import upsert_rows
from app.db.repository import RatingRow, UnknownMovie
from app.db.session import write_transaction

log = logging.getLogger("dotrec.db")

MAX_GROUP = 512
"""Most ratings one transaction takes (more wait for the next)."""


@dataclass(frozen=True)
class Written:
    """One write's outcome: the stored row, and whether it created its (user, movie)."""

    row: RatingRow
    created: bool


class GroupWriter:
    """Writes ratings in groups (see the module's docstring); `after_commit` is told the rows of
    every committed group (cache invalidation, the ratings version)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        timeout_s: float,
        after_commit: Callable[[list[RatingRow]], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.timeout_s = timeout_s
        self.after_commit = after_commit
        self._pending: list[tuple[RatingRow, asyncio.Future[Written]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.groups = 0
        """Transactions committed (with `rows`, the mean group size is rows / groups)."""
        self.rows = 0

    async def write(self, row: RatingRow) -> Written:
        """Store `row` with whatever else is queued; raises UnknownMovie, the database's error,
        or TimeoutError past `timeout_s`."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dotrec-group-writer")
        future: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        self._wake.set()
        # shielded: a client timing out must not cancel the group its row is being written in
        async with asyncio.timeout(self.timeout_s):
            return await asyncio.shield(future)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                await self._commit(group)

    async def _commit(self, group: list[tuple[RatingRow, asyncio.Future[Written]]]) -> None:
        rows = [row for row, _ in group]
        try:
            outcomes = await to_thread.run_sync(self._write, rows)
        except sa_exc.IntegrityError:
            # something no check foresaw: write each alone, so that a bad row fails only its own
            outcomes = [await to_thread.run_sync(self._write_alone, row) for row in rows]
        except Exception as error:  # the database is down, locked past its timeout, ...
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        committed = [
            row for row, outcome in zip(rows, outcomes, strict=True) if not isinstance(outcome, Exception)
        ]
        self.groups += 1
        self.rows += len(committed)
        if self.after_commit is not None and committed:
            self.after_commit(committed)  # before any client hears of it: read-your-writes
        for (row, future), outcome in zip(group, outcomes, strict=True):
            if future.done():  # its client gave up waiting
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(Written(row, outcome))

    def _write(self, rows: list[RatingRow]) -> list[bool | Exception]:
        with self.sessions() as session, write_transaction(session):
            return upsert_rows(session, rows)

    def _write_alone(self, row: RatingRow) -> bool | Exception:
        try:
            return self._write([row])[0]
        except (sa_exc.IntegrityError, UnknownMovie) as error:
            log.warning("a rating of user %s, movie %s was refused: %s", row.user_id, row.movie_id, error)
            return error
