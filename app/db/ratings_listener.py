"""Hearing about other processes' rating writes on PostgreSQL without a read a request.

Migration 0002's statement trigger NOTIFYs after every statement that changes ratings; a
listener counts what it hears, and `Reads` keeps a user's rated movies while that count (and
the listener's connection) stands still. A lost or silent connection makes the version None,
and callers then read anew: listener loss falls back to reading, never to stale lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

import psycopg

log = logging.getLogger("dotrec.db")

RATINGS_CHANNEL = "dotrec_ratings"
"""What migration 0002's trigger NOTIFYs after every statement that changes ratings."""
RECONNECT_S = 1.0
HEARTBEAT_S = 0.5
"""How often a quiet listening connection asks the server whether it is there."""
TRUSTED_S = 2.0
"""How long after the server last answered the listener what it heard is trusted: a server
that hangs (a frozen host: the connection stays open and silent) may hold notifications back,
so lists are kept no longer than this past its last answer."""


class RatingsListener:
    """A connection of its own LISTENing on RATINGS_CHANNEL, counting notifications.

    `version()` is (generation, notifications heard) while the connection is up and the server
    answered within TRUSTED_S (a quiet connection sends `SELECT 1` every HEARTBEAT_S), else
    None; a lost connection is opened again every RECONNECT_S with a new generation (what was
    heard before says nothing of what was missed meanwhile)."""

    def __init__(self, conninfo: str, timeout_s: float) -> None:
        self.conninfo = conninfo
        self.timeout_s = timeout_s
        self.generation = 0
        self.heard = 0
        self.listening = False
        self.answered_at = -math.inf
        """time.monotonic() of the server's last notification or heartbeat answer."""
        self._task: asyncio.Task[None] | None = None

    def version(self) -> tuple[int, int] | None:
        if self.listening and time.monotonic() - self.answered_at <= TRUSTED_S:
            return self.generation, self.heard
        return None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="dotrec-ratings-listener"
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.listening = False

    async def _listen(self) -> None:
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, connect_timeout=max(1, int(self.timeout_s))
                )
            except psycopg.Error as error:
                log.info("ratings listener cannot connect (%s); lists are read anew meanwhile", error)
                await asyncio.sleep(RECONNECT_S)
                continue
            try:
                async with connection:
                    await connection.execute(f"LISTEN {RATINGS_CHANNEL}")
                    self.generation += 1
                    self.answered_at = time.monotonic()
                    self.listening = True
                    while True:
                        async for _ in connection.notifies(timeout=HEARTBEAT_S):
                            self.heard += 1
                            self.answered_at = time.monotonic()
                        async with asyncio.timeout(self.timeout_s):
                            await connection.execute("SELECT 1")
                        self.answered_at = time.monotonic()
            except (psycopg.Error, TimeoutError) as error:
                log.info("ratings listener lost its connection (%r); reconnecting", error)
            finally:
                self.listening = False
            await asyncio.sleep(RECONNECT_S)
