"""SQLite WAL checkpoints in a background thread, so that no request's commit runs one.

SQLite's default checkpoints inside the commit that takes the write-ahead log past 1,000
pages: that commit then also copies the logged pages into the database file and syncs it. A
batch of 1,000 new ratings logs about that many pages (each lands on a random page of the
movie index), so every batch paid for a checkpoint: 19 ms a commit instead of 8
(BENCHMARKS.md, "Writes"). The serving engine raises the threshold to
`SERVING_AUTOCHECKPOINT_PAGES` and this thread runs a passive checkpoint every `interval_s`
instead. A passive checkpoint never blocks a reader or a writer and changes nothing that
was committed (durability is the commit's own ``synchronous`` setting); if the thread falls
behind or is not running, the raised threshold still bounds the log.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

from sqlalchemy import Engine

log = logging.getLogger(__name__)

SERVING_AUTOCHECKPOINT_PAGES = 10_000
"""The serving engine's wal_autocheckpoint: a commit checkpoints only past ~40 MB of log."""
SERVING_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes the log file is cut back to once it has been checkpointed and starts over."""
CHECKPOINT_INTERVAL_S = 0.1
"""How often the thread checkpoints (a checkpoint with nothing to copy costs microseconds)."""


class WalCheckpoints:
    """A thread checkpointing the WAL of `engine`'s SQLite database every `interval_s`, on a
    connection of its own, until `close` (which runs one last checkpoint)."""

    def __init__(self, engine: Engine, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.checkpoints = 0
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoints", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        connection = self.engine.raw_connection()
        connection.detach()  # held for the thread's life: not one of the pool's
        try:
            while True:
                stopping = self._stop.wait(self.interval_s)
                self._checkpoint(connection)
                if stopping:
                    return
        finally:
            connection.close()

    def _checkpoint(self, connection: Any) -> None:
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as error:  # a locked or vanished file: the next tick tries again
            if not self._failing:
                log.warning("WAL checkpoints failing (retried every %g s): %s", self.interval_s, error)
            self._failing = True
            return
        if self._failing:
            log.info("WAL checkpoints succeed again")
        self._failing = False
        self.checkpoints += 1
