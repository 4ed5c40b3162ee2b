"""The real thing: the `dotrec` CLI in subprocesses (upgrade, import, train, serve), a uvicorn
server on a free port, ratings posted over HTTP, a retrained model served without a restart."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from api_support import NEW_USER, Data
from live_server import LiveServer, run_dotrec

pytestmark = pytest.mark.slow

KEY = "e2e-secret"


@pytest.fixture
def server_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "MODELS_DIR": str(tmp_path / "models"),
        "DATA_DIR": str(tmp_path / "data"),
        "API_KEY": KEY,
    }


def test_cli_serve_fold_in_retrain_reload(
    server_env: dict[str, str], live_server: Callable[..., LiveServer], data: Data, tmp_path: Path
) -> None:
    run_dotrec(server_env, "db", "upgrade")
    run_dotrec(server_env, "import", str(data.write_csv(tmp_path / "csv")), "--quiet")
    run_dotrec(server_env, "train", "--quiet", "--epochs", "3", "--dim", "8")
    client = live_server(server_env).client
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

    # retrain (the database now holds the new user): the server follows MODELS_DIR/current by
    # itself, no reload and no restart
    run_dotrec(server_env, "train", "--quiet", "--epochs", "3", "--dim", "8", "--seed", "1")
    second = current_version(Path(server_env["MODELS_DIR"]))
    assert second != first
    assert wait_for_version(client, second, timeout_s=30)
    assert client.post("/admin/reload").status_code == 401
    reloaded = client.post("/admin/reload", headers=key).json()
    assert reloaded["reloaded"] is False and reloaded["version"] == second
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


def current_version(models_dir: Path) -> str:
    return (models_dir / "current").resolve().name


def wait_for_version(client: httpx.Client, version: str, timeout_s: float) -> bool:
    """Whether GET /model names `version` within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/model").json()["version"] == version:
            return True
        time.sleep(0.2)
    return False


def test_every_worker_follows_a_new_version_by_itself(
    server_env: dict[str, str], live_server: Callable[..., LiveServer], data: Data, tmp_path: Path
) -> None:
    """`dotrec serve --workers 2`: a reload request reaches one worker only, so each worker
    checks MODELS_DIR/current itself (MODEL_POLL_S) and every answer soon names the new model."""
    run_dotrec(server_env, "db", "upgrade")
    run_dotrec(server_env, "import", str(data.write_csv(tmp_path / "csv")), "--quiet")
    run_dotrec(server_env, "train", "--quiet", "--epochs", "2", "--dim", "4")
    env = server_env | {"MODEL_POLL_S": "0.5"}
    server = live_server(env, serve_args=("--workers", "2"))
    run_dotrec(server_env, "train", "--quiet", "--epochs", "2", "--dim", "4", "--seed", "1")
    second = current_version(Path(server_env["MODELS_DIR"]))
    deadline = time.monotonic() + 30
    answered: set[str] = set()
    while time.monotonic() < deadline:
        # a new connection for every request, so the kernel spreads them over both workers
        answered = {
            httpx.get(f"{server.client.base_url}/predict/1/2", timeout=10).json()["model_version"]
            for _ in range(20)
        }
        if answered == {second}:
            break
        time.sleep(0.3)
    assert answered == {second}
