"""The dashboard's routes in-process: its JSON reads (SQLite and PostgreSQL), its pages and static
files, what the serving process does not import, and that a non-editable install carries the files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.routes import ui
from app.ml.artifact import current_version_dir, load_artifact
from app.ml.plots import pca_2d
from tests.api.api_support import API_KEY, CATALOG_ONLY, GENRES, Data

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_config_says_whether_writes_need_a_key(make_client) -> None:
    open_config = make_client().get("/ui/config.json").json()
    assert open_config["auth"] == "off"
    assert open_config["rating_scale"] == {"min": 0.5, "max": 5.0, "step": 0.5}
    assert open_config["allowed_ratings"] == [0.5 + 0.5 * i for i in range(10)]
    assert open_config["genres"] == sorted(GENRES, key=str.casefold)
    assert open_config["model_version"]
    keyed = make_client(api_key=API_KEY, rating_min=1.0, rating_step=1.0).get("/ui/config.json").json()
    assert keyed["auth"] == "on" and API_KEY not in json.dumps(keyed)
    assert keyed["allowed_ratings"] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_movie_stats_are_the_count_and_mean(any_client: TestClient, data: Data) -> None:
    client = any_client
    for movie_id in (1, 7, 40):
        ratings = data.ratings[data.movies == movie_id]
        stats = client.get(f"/ui/movies/{movie_id}/stats.json").json()
        assert stats["movie_id"] == movie_id and stats["ratings"] == len(ratings)
        assert stats["mean_rating"] == pytest.approx(float(ratings.mean()), abs=1e-4)
    unrated = client.get(f"/ui/movies/{CATALOG_ONLY[0]}/stats.json").json()
    assert unrated["ratings"] == 0 and unrated["mean_rating"] is None
    missing = client.get("/ui/movies/999999/stats.json")
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]
    assert client.get("/ui/movies/0/stats.json").status_code == 422


def test_movie_stats_are_read_again_after_their_time(
    any_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = any_client
    before = client.get("/ui/movies/2/stats.json").json()
    assert client.post("/ratings", json={"user_id": 777_001, "movie_id": 2, "rating": 0.5}).status_code == 201
    assert client.get("/ui/movies/2/stats.json").json()["ratings"] == before["ratings"]  # reused
    monkeypatch.setattr(ui, "STATS_TTL_S", 0.0)
    after = client.get("/ui/movies/2/stats.json").json()
    assert after["ratings"] == before["ratings"] + 1 and after["as_of"] > before["as_of"]


def test_the_map_is_the_embeddings_first_two_principal_components(
    client: TestClient, trained_models: Path
) -> None:
    answer = client.get("/ui/map.json")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-cache"
    body = answer.json()
    artifact = load_artifact(current_version_dir(trained_models))
    assert body["model_version"] == artifact.version
    assert body["movie_ids"] == artifact.movie_ids.tolist()
    assert body["titles"][0] == "Movie 1 (1991)"
    expected = pca_2d(np.asarray(artifact.weights["movie_emb"], dtype=np.float64))
    got = np.column_stack([body["x"], body["y"]])
    for axis in (0, 1):  # a principal component's sign is arbitrary
        sign = np.sign(expected[:, axis] @ got[:, axis])
        np.testing.assert_allclose(got[:, axis], sign * expected[:, axis], atol=1e-4)
    shares = body["explained_variance"]
    assert 0 < shares[1] <= shares[0] and shares[0] + shares[1] <= 1 + 1e-9
    again = client.get("/ui/map.json", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_training_curves(client: TestClient, trained_models: Path) -> None:
    meta = load_artifact(current_version_dir(trained_models)).meta
    body = client.get("/ui/model/history.json").json()
    assert body["model_version"] == meta["version"] and body["best_epoch"] == meta["best_epoch"]
    assert [e["epoch"] for e in body["epochs"]] == [h["epoch"] for h in meta["history"]]
    for epoch, recorded in zip(body["epochs"], meta["history"], strict=True):
        assert epoch["train_rmse"] == pytest.approx(recorded["train_loss"] ** 0.5)
        assert epoch["val_rmse"] == pytest.approx(recorded["val_rmse"])


def test_without_a_model_the_reads_say_so(make_client, tmp_path: Path) -> None:
    client = make_client(models_dir=tmp_path / "no-models")
    assert client.get("/ui/config.json").json()["model_version"] is None
    for path in ("/ui/map.json", "/ui/model/history.json"):
        answer = client.get(path)
        assert answer.status_code == 503 and "no model is loaded" in answer.json()["detail"]
    assert client.get("/ui/users/1").status_code == 200  # the page itself says what is missing


@pytest.mark.parametrize(
    ("path", "marker"),
    [
        ("/ui/", 'data-page="index"'),
        ("/ui", 'data-page="index"'),
        ("/ui/?user=42", 'data-user-id="42"'),
        ("/ui/users/42", 'data-user-id="42"'),
        ("/ui/movies/7", 'data-movie-id="7"'),
        ("/ui/map?user=3&q=star", 'data-user-id="3"'),
        ("/ui/model", 'data-page="model"'),
    ],
)
def test_pages(client: TestClient, path: str, marker: str) -> None:
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert marker in page.text and 'id="api-key-dialog"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere


def test_a_user_parameter_that_is_not_an_id(client: TestClient) -> None:
    page = client.get("/ui/", params={"user": "<b>x</b>"})
    assert page.status_code == 200 and "is not a user id" in page.text
    assert "<b>x</b>" not in page.text  # escaped
    assert client.get("/ui/users/0").status_code == 422


def test_static_files_are_served_and_revalidated(client: TestClient) -> None:
    for path in ("js/user.js", "css/ui.css", "vendor/chart.umd.min.js", "vendor/chartjs-plugin-zoom.min.js"):
        answer = client.get(f"/ui/static/{path}")
        assert answer.status_code == 200, path
        assert answer.headers["cache-control"] == "no-cache" and answer.headers["etag"]
        again = client.get(f"/ui/static/{path}", headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304
    assert client.get("/ui/static/js/nothing.js").status_code == 404


def test_no_script_or_style_comes_from_elsewhere() -> None:
    """The pages work offline: no URL in the templates, scripts or styles points off the server."""
    ui_dir = REPO_ROOT / "app" / "ui"
    for path in [
        *ui_dir.glob("templates/*.html"),
        *ui_dir.glob("static/js/*.js"),
        *ui_dir.glob("static/css/*"),
    ]:
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path


def test_serving_imports_neither_matplotlib_nor_torch(sqlite_seeded: str, trained_models: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from fastapi.testclient import TestClient
        from app.api.main import create_app
        from tests.api.api_support import api_settings
        settings = api_settings(database_url={sqlite_seeded!r}, models_dir={str(trained_models)!r})
        with TestClient(create_app(settings)) as client:
            for path in ("/ui/map.json", "/ui/model/history.json", "/ui/movies/1/stats.json", "/ui/users/1"):
                assert client.get(path).status_code == 200, path
        loaded = sorted(m for m in ("matplotlib", "torch") if m in sys.modules)
        assert not loaded, loaded
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_a_wheel_carries_the_templates_and_static_files(tmp_path: Path) -> None:
    """What `pip install .` (the Docker image) installs: every file under app/ui."""
    source = tmp_path / "source"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(REPO_ROOT / "app", source / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    wheel = next(tmp_path.glob("dotrec-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    ui_dir = REPO_ROOT / "app" / "ui"
    wanted = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in ui_dir.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert wanted - names == set()
