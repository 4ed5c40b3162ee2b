"""The real thing: the `dotrec` CLI in subprocesses (upgrade, import, train, serve), a uvicorn
server on a free port, ratings posted over HTTP, a retrained model reloaded without a restart."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from api_support import NEW_USER, Data

pytestmark = pytest.mark.slow

DOTREC = str(Path(sys.executable).with_name("dotrec"))
KEY = "e2e-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([DOTREC, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"dotrec {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture
def server_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "MODELS_DIR": str(tmp_path / "models"),
        "DATA_DIR": str(tmp_path / "data"),
        "API_KEY": KEY,
    }


@pytest.fixture
def serve(server_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], httpx.Client]]:
    """Starts `dotrec serve` on a free port (another, should that one be taken meanwhile) and
    waits for /ready; stops it afterwards, printing its log (shown when the test fails)."""
    processes: list[tuple[subprocess.Popen, Path]] = []

    def start() -> httpx.Client:
        for _attempt in range(3):
            port = free_port()
            log = tmp_path / f"serve-{port}.log"
            with log.open("w") as out:
                process = subprocess.Popen(
                    [DOTREC, "serve", "--port", str(port), "--log-level", "info"],
                    env=server_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            processes.append((process, log))
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
            deadline = time.monotonic() + 60
            while process.poll() is None:
                try:
                    if client.get("/ready").status_code == 200:
                        return client
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"never ready:\n{log.read_text()}"
                time.sleep(0.1)
            if "address already in use" not in log.read_text().lower():
                break
        raise AssertionError(f"dotrec serve exited:\n{log.read_text()}")

    yield start
    for process, log in processes:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        print(f"--- {log.name}\n{log.read_text()[-4000:]}")


def test_cli_serve_fold_in_retrain_reload(
    server_env: dict[str, str], serve: Callable[[], httpx.Client], data: Data, tmp_path: Path
) -> None:
    run(server_env, "db", "upgrade")
    run(server_env, "import", str(data.write_csv(tmp_path / "csv")), "--quiet")
    run(server_env, "train", "--quiet", "--epochs", "3", "--dim", "8")
    client = serve()
    first = client.get("/model").json()["version"]
    key = {"X-API-Key": KEY}

    # a new user: popular until they rate, folded in at once after
    assert client.get(f"/recommendations/{NEW_USER}").json()["strategy"] == "popular"
    assert client.post("/ratings", json={"user_id": NEW_USER, "movie_id": 2, "rating": 5}).status_code == 401
    batch = [{"user_id": NEW_USER, "movie_id": m, "rating": r} for m, r in ((2, 5), (7, 4.5), (11, 1))]
    stored = client.post("/ratings/batch", json={"ratings": batch}, headers=key)
    assert stored.status_code == 200 and stored.json()["inserted"] == 3
    folded = client.get(f"/recommendations/{NEW_USER}", params={"k": 5}).json()
    assert folded["strategy"] == "fold_in" and len(folded["items"]) == 5
    assert not {2, 7, 11} & {item["movie_id"] for item in folded["items"]}
    assert client.get(f"/predict/{NEW_USER}/3").json()["strategy"] == "fold_in"

    # retrain (the database now holds the new user), reload without a restart
    run(server_env, "train", "--quiet", "--epochs", "3", "--dim", "8", "--seed", "1")
    assert client.post("/admin/reload").status_code == 401
    reloaded = client.post("/admin/reload", headers=key).json()
    assert reloaded["reloaded"] is True and reloaded["previous_version"] == first
    second = reloaded["version"]
    assert second != first and client.get("/model").json()["version"] == second
    single = client.get(f"/predict/{NEW_USER}/3").json()
    assert single["strategy"] == "model" and single["model_version"] == second
    assert client.get(f"/recommendations/{NEW_USER}").json()["strategy"] == "model"

    users = [1, 2, NEW_USER, NEW_USER + 1]
    movies = [1, 3, 5, 40]
    matrix = client.post("/predict/matrix", json={"user_ids": users, "movie_ids": movies}).json()
    assert matrix["user_strategies"] == ["model", "model", "model", "baseline"]
    ratings = np.array(matrix["ratings"])
    pairs = client.post("/predict/pairs", json={"pairs": [[u, m] for u in users for m in movies]}).json()
    np.testing.assert_allclose(ratings.ravel(), pairs["ratings"], atol=2e-5)
    for i, user in enumerate(users):
        for j, movie in enumerate(movies):
            assert client.get(f"/predict/{user}/{movie}").json()["rating"] == pytest.approx(
                ratings[i, j], abs=2e-5
            )
    npy = client.post("/predict/matrix", json={}, headers={"Accept": "application/x-npy"})
    everything = np.load(io.BytesIO(npy.content))
    ids = client.get("/model/ids").json()
    assert everything.shape == (len(ids["user_ids"]), len(ids["movie_ids"]))
    row, column = ids["user_ids"].index(NEW_USER), ids["movie_ids"].index(3)
    assert everything[row, column] == pytest.approx(single["rating"], abs=2e-5)
    metrics = client.get("/metrics").text
    assert f'dotrec_model_info{{version="{second}"}} 1.0' in metrics
