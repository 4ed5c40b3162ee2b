"""The database fails under a real `dotrec serve` with traffic going on (issue: reliability).

PostgreSQL (a server of the test's own) is stopped, as an administrator or a crash would, or
frozen, in the middle of writes and reads: requests fail fast with a 503 naming the database,
/ready says it is down, /health stays up; once the server is back the service recovers with no
restart, and every rating acknowledged before, during and after is stored. On SQLite the same
happens when another process holds the write lock past the busy timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from api_support import Data, seed_database
from live_server import LiveServer
from pg_server import DedicatedPostgres
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from app.db.ratings_listener import RATINGS_CHANNEL, TRUSTED_S, RatingsListener
from app.db.schema import upgrade
from app.db.session import make_engine
from bench.write_load import EPOCH, Write, WriteLoad, check_no_write_lost, stored_ratings

pytestmark = pytest.mark.slow

DB_TIMEOUT_S = 2.0
SLACK_S = 1.5
"""How much longer than DB_TIMEOUT_S a failing request may take (a busy 2-core machine)."""
WRITERS = 4
WRITER_USER_BASE = 930_000
READ_PATHS = ("/recommendations/1", "/recommendations/5000", "/users/1/ratings")


class Traffic:
    """Writers posting ratings one after another, each to its own user, and a reader asking
    for recommendations and ratings; every answer is recorded with its timing."""

    def __init__(self, url: str, movie_ids: list[int]) -> None:
        self.url = url
        self.movie_ids = movie_ids
        self.load = WriteLoad()
        self.reads: list[tuple[float, float, int, str]] = []
        """(sent, answered, status, detail) of each read."""
        self._tags = itertools.count()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._write, args=(i,)) for i in range(WRITERS)]
        self._threads.append(threading.Thread(target=self._read))
        for thread in self._threads:
            thread.start()

    def acknowledged(self) -> int:
        with self._lock:
            return sum(w.acknowledged for w in self.load.writes)

    def wait_for_acknowledged(self, count: int, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while self.acknowledged() < count:
            assert time.monotonic() < deadline, f"fewer than {count} writes acknowledged"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _write(self, writer: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                tag = next(self._tags)
                user, movie = WRITER_USER_BASE + writer, self.movie_ids[n % len(self.movie_ids)]
                rating = 1 + n % 9 / 2
                body = {"user_id": user, "movie_id": movie, "rating": rating, "rated_at": EPOCH + tag}
                sent = time.monotonic()
                try:
                    status = client.post("/ratings", json=body).status_code
                except httpx.TransportError:
                    status = 0
                write = Write(user, movie, rating, tag, writer, sent, time.monotonic(), status, status == 201)
                with self._lock:
                    self.load.writes.append(write)
                    self.load.statuses[status] = self.load.statuses.get(status, 0) + 1

    def _read(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for path in itertools.cycle(READ_PATHS):
                if self._stop.is_set():
                    return
                sent = time.monotonic()
                try:
                    response = client.get(path)
                except httpx.RemoteProtocolError:  # a kept-alive connection closed under us:
                    response = client.get(path)  # a GET is safe to send again, as clients do
                detail = response.json().get("detail", "") if response.status_code != 200 else ""
                with self._lock:
                    self.reads.append((sent, time.monotonic(), response.status_code, str(detail)))


def _answers(traffic: Traffic) -> list[tuple[float, float, int, str]]:
    """(sent, answered, status, detail) of every request, writes (no detail kept) and reads."""
    writes = [(w.sent, w.answered, w.status, "") for w in traffic.load.writes]
    return writes + traffic.reads


def _server_env(database_url: str, models_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "MODELS_DIR": str(models_dir),
        "DB_TIMEOUT_S": str(DB_TIMEOUT_S),
    }


def _seeded(database_url: str, data: Data) -> Engine:
    """An engine on `database_url`, migrated and holding the test catalog and ratings."""
    upgrade(database_url)
    engine = make_engine(database_url)
    seed_database(engine, data)
    return engine


def _wait_ready(client: httpx.Client, seconds: float) -> float:
    """Seconds until /ready answers 200; AssertionError after `seconds`."""
    started = time.monotonic()
    while client.get("/ready").status_code != 200:
        assert time.monotonic() - started < seconds, f"not ready {seconds} s after the database came back"
        time.sleep(0.1)
    return time.monotonic() - started


FAULTS = {
    # (break it, mend it)
    "stopped": (lambda pg: pg.stop("fast"), DedicatedPostgres.start),
    "crashed": (lambda pg: pg.stop("immediate"), DedicatedPostgres.start),
    "frozen": (DedicatedPostgres.freeze, DedicatedPostgres.thaw),
}
LONGEST_S = {"stopped": DB_TIMEOUT_S, "crashed": DB_TIMEOUT_S, "frozen": 2 * DB_TIMEOUT_S}
"""The longest a request may wait for a broken server (plus SLACK_S): frozen, a pooled
connection's check times out, then so does a new connection's connect."""


@pytest.mark.postgres
@pytest.mark.parametrize("fault", list(FAULTS))
def test_postgresql_fails_mid_traffic(
    fault: str,
    dedicated_postgres: DedicatedPostgres,
    data: Data,
    models_dir: Path,
    live_server: Callable[..., LiveServer],
) -> None:
    """stopped: `pg_ctl stop -m fast`; crashed: `-m immediate` (no shutdown, the WAL is
    replayed at the next start); frozen: every server process SIGSTOPped, so connections are
    accepted but nothing answers (a hung host)."""
    url = make_url(dedicated_postgres.url()).set(drivername="postgresql+psycopg").render_as_string(False)
    engine = _seeded(url, data)
    server = live_server(_server_env(url, models_dir))
    traffic = Traffic(server.url, sorted(movie_id for movie_id, *_ in data.catalog))
    break_it, mend_it = FAULTS[fault]
    try:
        traffic.wait_for_acknowledged(100)
        engine.dispose()
        break_it(dedicated_postgres)
        broken = time.monotonic()
        time.sleep(1)
        ready = server.client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unreachable:"), ready.json()
        assert "database" in ready.json()["detail"]
        assert server.client.get("/health").status_code == 200
        # requests sent within a wait of the fault or the mending may go either way: the
        # outage lasts long enough for some to be sent wholly inside it
        time.sleep(2 * (LONGEST_S[fault] + SLACK_S))
        mending = time.monotonic()
        mend_it(dedicated_postgres)
        recovery_s = _wait_ready(server.client, 30)
        traffic.wait_for_acknowledged(traffic.acknowledged() + 100)
    finally:
        traffic.stop()
    print(f"{fault}: ready {recovery_s:.2f} s after mending; statuses {traffic.load.statuses}")

    answers = _answers(traffic)
    assert {status for _, _, status, _ in answers} <= {200, 201, 503}
    wait = LONGEST_S[fault] + SLACK_S
    outage = [a for a in answers if broken + wait < a[0] < mending - wait]
    assert outage and all(status == 503 for _, _, status, _ in outage)
    assert all(detail.startswith("database unavailable:") for *_, detail in traffic.reads if detail)
    slowest = max(answered - sent for sent, answered, _, _ in answers)
    assert slowest < wait, f"a request took {slowest:.1f} s"
    assert server.process.poll() is None
    check_no_write_lost(traffic.load, stored_ratings(engine, traffic.load.user_ids))
    engine.dispose()


@pytest.mark.postgres
def test_a_frozen_server_stops_the_listener_being_trusted(dedicated_postgres: DedicatedPostgres) -> None:
    """A hung server keeps the listening connection open and silent, so notifications may be held
    back: within TRUSTED_S (plus a heartbeat) of its last answer nothing heard is trusted, and
    once it answers again notifications count as before."""
    conninfo = dedicated_postgres.url()

    async def until(condition: Callable[[], bool], seconds: float) -> float:
        started = time.monotonic()
        while not condition():
            assert time.monotonic() - started < seconds, f"not within {seconds} s"
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    async def scenario() -> None:
        listener = RatingsListener(conninfo, timeout_s=DB_TIMEOUT_S)
        listener.start()
        try:
            await until(lambda: listener.version() is not None, 10)
            dedicated_postgres.freeze()
            try:
                untrusted_after = await until(lambda: listener.version() is None, TRUSTED_S + SLACK_S)
                await asyncio.sleep(1)
                assert listener.version() is None, "trusted again while the server hangs"
            finally:
                dedicated_postgres.thaw()
            await until(lambda: listener.version() is not None, 3 * DB_TIMEOUT_S + SLACK_S)
            _, heard = listener.version() or (0, 0)
            notifier = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            async with notifier:
                await notifier.execute(f"NOTIFY {RATINGS_CHANNEL}")
            await until(lambda: (listener.version() or (0, 0))[1] > heard, 5)
            print(f"untrusted {untrusted_after:.2f} s after the freeze")
        finally:
            await listener.close()

    asyncio.run(scenario())


def test_sqlite_write_lock_held_past_the_timeout(
    tmp_path: Path, data: Data, models_dir: Path, live_server: Callable[..., LiveServer]
) -> None:
    path = tmp_path / "dotrec.db"
    engine = _seeded(f"sqlite:///{path}", data)
    server = live_server(_server_env(f"sqlite:///{path}", models_dir))
    traffic = Traffic(server.url, sorted(movie_id for movie_id, *_ in data.catalog))
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        traffic.wait_for_acknowledged(50)
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock; WAL readers go on
        locked = time.monotonic()
        time.sleep(DB_TIMEOUT_S * 3 + SLACK_S)
        assert server.client.get("/ready").status_code == 200
        blocker.execute("ROLLBACK")
        released = time.monotonic()
        traffic.wait_for_acknowledged(traffic.acknowledged() + 50)
    finally:
        traffic.stop()
        blocker.close()

    writes = traffic.load.writes
    assert {w.status for w in writes} <= {200, 201, 503}
    refused = [w for w in writes if locked + 0.5 < w.sent < released - DB_TIMEOUT_S - SLACK_S]
    assert refused and all(w.status == 503 for w in refused)
    assert all(w.answered - w.sent < DB_TIMEOUT_S + SLACK_S for w in writes)
    during = [status for sent, _, status, _ in traffic.reads if locked < sent < released]
    assert during and set(during) == {200}, "reads go on while another process writes"
    check_no_write_lost(traffic.load, stored_ratings(engine, traffic.load.user_ids))
    engine.dispose()
