"""A real `dotrec serve` under write load (issue: reliability): 32 concurrent clients post 20,000
ratings, and every acknowledged rating is stored, once, the last write winning for each pair,
with no request failing; recommendations keep answering while `dotrec import` loads a data set
into the same database. bench/bench_reliability.py measures both (throughput, p99)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from api_support import Data
from live_server import DOTREC, LiveServer
from sqlalchemy import Engine

from app.data.synth import write_synthetic
from bench.write_load import SHARED_USERS, check_no_write_lost, run_write_load, stored_ratings

pytestmark = pytest.mark.slow

CLIENTS = 32
TOTAL = 20_000
KEY = "load-test-key"


def test_concurrent_writes_lose_nothing(
    seeded: str, engine: Engine, models_dir: Path, data: Data, live_server: Callable[..., LiveServer]
) -> None:
    env = {**os.environ, "DATABASE_URL": seeded, "MODELS_DIR": str(models_dir), "API_KEY": KEY}
    server = live_server(env)
    movie_ids = sorted(movie_id for movie_id, *_ in data.catalog)
    load = run_write_load(server.url, movie_ids, CLIENTS, TOTAL, api_key=KEY)
    print(f"{len(load.writes):,} ratings in {load.seconds:.1f} s: {load.ratings_per_s:,.0f} ratings/s")

    assert len(load.writes) == TOTAL
    assert set(load.statuses) <= {200, 201}, load.statuses
    stored = stored_ratings(engine, load.user_ids)
    check_no_write_lost(load, stored)
    shared = [w for w in load.writes if w.user_id in SHARED_USERS]
    assert len({w.client for w in shared}) == CLIENTS, "every client writes the shared pairs"
    assert server.client.get("/ready").status_code == 200


def test_recommendations_answer_during_an_import(
    seeded: str, models_dir: Path, tmp_path: Path, live_server: Callable[..., LiveServer]
) -> None:
    ratings = write_synthetic(tmp_path / "synth", 3_000, 1_000, 300_000, seed=1)
    env = {**os.environ, "DATABASE_URL": seeded, "MODELS_DIR": str(models_dir)}
    server = live_server(env)
    statuses: list[int] = []
    importing = subprocess.Popen([DOTREC, "import", str(ratings), "--quiet"], env=env)
    started = time.monotonic()
    while importing.poll() is None:
        for user in (1, 2, 2999):  # model users, and one the model lacks whom the import gives ratings
            statuses.append(server.client.get(f"/recommendations/{user}").status_code)
    seconds = time.monotonic() - started
    assert importing.returncode == 0
    print(f"{len(statuses)} recommendations in the {seconds:.1f} s of the import")
    assert len(statuses) >= 30, "the import ended before it could be read under"
    assert set(statuses) == {200}
    assert server.client.get("/users/2999/ratings").json()["total"] > 0, "the import went in"


def test_a_server_killed_mid_load_loses_no_acknowledged_rating(
    seeded: str, engine: Engine, models_dir: Path, data: Data, live_server: Callable[..., LiveServer]
) -> None:
    """kill -9 while 32 clients write: every rating the server acknowledged (after its group's
    commit) is in the database, as the write rules say, whatever was in flight."""
    env = {**os.environ, "DATABASE_URL": seeded, "MODELS_DIR": str(models_dir), "API_KEY": KEY}
    server = live_server(env)
    movie_ids = sorted(movie_id for movie_id, *_ in data.catalog)
    loads: list = []
    writing = threading.Thread(
        target=lambda: loads.append(run_write_load(server.url, movie_ids, CLIENTS, TOTAL, api_key=KEY))
    )
    writing.start()
    time.sleep(2)
    os.kill(server.process.pid, signal.SIGKILL)
    writing.join(120)
    (load,) = loads
    acknowledged = [w for w in load.writes if w.acknowledged]
    assert 100 < len(acknowledged) < TOTAL, "killed in the middle of the load"
    assert 0 in load.statuses, "some requests were cut off"
    check_no_write_lost(load, stored_ratings(engine, load.user_ids))
