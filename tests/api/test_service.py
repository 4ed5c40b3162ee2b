"""Health, readiness, the model, metrics, reloads, API keys, CORS, start-up checks, docs, and
bad input that must never be a 500."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from api_support import API_KEY, NEW_USER, ClientMaker, add_corrupt_version, add_version, api_settings
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.api import deps
from app.api.main import create_app
from app.db.schema import SchemaOutOfDate
from app.ml.artifact import current_version_dir
from app.serving import store as model_store


def test_health_ready_model(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "auth": "off"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    version = client.app.state.dotrec.store.current.version
    assert ready.json() == {
        "status": "ready",
        "model_version": version,
        "checks": {"database": "ok", "schema": "ok", "model": version},
    }
    model = client.get("/model").json()
    assert model["version"] == version
    assert model["n_factors"] == 8 and model["n_users"] > 0 and model["n_movies"] > 0
    assert {"rmse", "mae"} <= set(model["metrics"])
    assert model["hyper_parameters"]["n_factors"] == 8
    assert model["created_at"] and model["rating_scale"] == {"min": 0.5, "max": 5.0, "step": 0.5}


def test_without_a_model_ready_is_503_but_ratings_work(make_client: ClientMaker, tmp_path: Path) -> None:
    empty = tmp_path / "no-models"
    client = make_client(models_dir=empty)
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert "no model artifact" in ready.json()["detail"]
    assert ready.json()["checks"]["database"] == "ok"
    assert client.post("/ratings", json={"user_id": NEW_USER, "movie_id": 1, "rating": 4}).status_code == 201
    assert client.get(f"/users/{NEW_USER}/ratings").json()["total"] == 1
    assert client.get("/movies/1").json()["in_model"] is None
    for path in ("/predict/1/1", "/recommendations/1", "/model", "/movies/1/similar"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "no model is loaded" in response.json()["detail"], path
    assert client.post("/predict/pairs", json={"pairs": [[1, 1]]}).status_code == 503

    shutil.copytree(client.app.state.dotrec.settings.models_dir.parent / "models", empty, symlinks=True)
    reloaded = client.post("/admin/reload")
    assert reloaded.status_code == 200 and reloaded.json()["previous_version"] is None
    assert client.get("/ready").status_code == 200
    assert client.get("/predict/1/1").json()["strategy"] == "model"


def test_reload_swaps_versions_and_refuses_bad_artifacts(make_client: ClientMaker, models_dir: Path) -> None:
    client = make_client()
    old = client.get("/model").json()["version"]
    before = client.get("/predict/1/2").json()["rating"]
    same = client.post("/admin/reload").json()
    assert same["reloaded"] is False and same["version"] == old

    new = add_version(models_dir)
    response = client.post("/admin/reload")
    assert response.status_code == 200
    assert response.json()["reloaded"] is True
    assert response.json()["version"] == new and response.json()["previous_version"] == old
    after = client.get("/predict/1/2").json()
    assert after["model_version"] == new and after["rating"] != pytest.approx(before, abs=1e-4)
    assert client.get("/model").json()["version"] == new

    add_corrupt_version(models_dir)
    refused = client.post("/admin/reload")
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert "refused" in detail and "weights.safetensors" in detail and f"still serving {new}" in detail
    assert client.get("/predict/1/2").json()["model_version"] == new
    assert client.get("/ready").status_code == 200
    metrics = client.get("/metrics").text
    assert f'dotrec_model_info{{version="{new}"}} 1.0' in metrics
    assert f'version="{old}"' not in metrics
    assert 'dotrec_model_reloads_total{result="refused"} 1.0' in metrics

    # a restart with the corrupt version newest serves the newest good one
    restarted = make_client()
    assert restarted.get("/model").json()["version"] == new


def test_requests_keep_the_old_model_until_the_new_one_is_loaded(
    make_client: ClientMaker, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()
    old = client.get("/model").json()["version"]
    new = add_version(models_dir)
    loading = threading.Event()
    real_load = model_store.load_artifact

    def slow_load(path: Path):
        loading.set()
        time.sleep(0.5)
        return real_load(path)

    monkeypatch.setattr(model_store, "load_artifact", slow_load)
    result: dict = {}
    reload = threading.Thread(target=lambda: result.update(client.post("/admin/reload").json()))
    reload.start()
    assert loading.wait(5)
    versions = []
    while reload.is_alive():
        response = client.get("/predict/1/2")
        assert response.status_code == 200
        versions.append(response.json()["model_version"])
    reload.join()
    assert result["version"] == new
    assert versions and versions[0] == old
    assert set(versions) <= {old, new}
    assert client.get("/predict/1/2").json()["model_version"] == new


def test_api_key_guards_writes_and_admin_only(
    make_client: ClientMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(api_key=API_KEY)
    rating = {"user_id": NEW_USER, "movie_id": 1, "rating": 4}
    missing = client.post("/ratings", json=rating)
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "X-API-Key"
    wrong = client.post("/ratings", json=rating, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 403
    accented = client.post("/ratings", json=rating, headers={"X-API-Key": "\u00e9t\u00e9".encode()})
    assert accented.status_code == 403
    compared = []
    real_compare = deps.hmac.compare_digest
    monkeypatch.setattr(deps.hmac, "compare_digest", lambda a, b: compared.append(1) or real_compare(a, b))
    good = {"X-API-Key": API_KEY.encode("utf-8")}  # header bytes as a client sends them
    assert client.post("/ratings", json=rating, headers=good).status_code == 201
    assert compared, "the key must be compared with hmac.compare_digest"

    writes = [
        ("POST", "/ratings/batch", {"ratings": [rating]}),
        ("DELETE", f"/ratings/{NEW_USER}/1", None),
        ("POST", "/movies", {"movie_id": 900005, "title": "Keyed"}),
        ("POST", "/admin/reload", None),
    ]
    for method, path, body in writes:
        assert client.request(method, path, json=body).status_code == 401, path
        assert client.request(method, path, json=body, headers={"X-API-Key": "x"}).status_code == 403, path
        assert client.request(method, path, json=body, headers=good).status_code < 300, path
    reads = [
        ("GET", "/predict/1/1", None),
        ("GET", "/recommendations/1", None),
        ("GET", "/movies/1", None),
        ("GET", "/movies", None),
        ("GET", "/movies/1/similar", None),
        ("GET", "/users/1/ratings", None),
        ("GET", "/model", None),
        ("GET", "/ready", None),
        ("POST", "/predict/pairs", {"pairs": [[1, 1]]}),
        ("POST", "/predict/matrix", {"user_ids": [1], "movie_ids": [1]}),
    ]
    for method, path, body in reads:
        assert client.request(method, path, json=body).status_code == 200, path


def test_cors_is_off_unless_configured(make_client: ClientMaker) -> None:
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    closed = make_client()
    assert "access-control-allow-origin" not in closed.options("/ratings", headers=preflight).headers
    assert (
        "access-control-allow-origin"
        not in closed.get("/health", headers={"Origin": "https://x.org"}).headers
    )
    opened = make_client(cors_origins=["https://example.org"])
    allowed = opened.options("/ratings", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://example.org"


def test_metrics_count_routes_not_paths(client: TestClient) -> None:
    client.get("/predict/1/1")
    client.get("/predict/2/1")
    client.get("/predict/1/999999")
    client.get("/recommendations/1")
    client.get("/no/such/path/123")
    text = client.get("/metrics").text
    route = 'route="/predict/{user_id}/{movie_id}"'
    assert f'dotrec_http_requests_total{{method="GET",{route},status="200"}} 2.0' in text
    assert f'dotrec_http_requests_total{{method="GET",{route},status="404"}} 1.0' in text
    assert f'dotrec_http_request_duration_seconds_count{{method="GET",{route}}} 3.0' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "/no/such/path" not in text and "/predict/1/1" not in text
    assert 'dotrec_predictions_total{endpoint="predict",strategy="model"} 2.0' in text
    assert 'dotrec_predictions_total{endpoint="recommendations",strategy="model"} 10.0' in text
    version = client.app.state.dotrec.store.current.version
    assert f'dotrec_model_info{{version="{version}"}} 1.0' in text


def test_start_refuses_an_unmigrated_database(database_url: str, models_dir: Path) -> None:
    app = create_app(api_settings(database_url=database_url, models_dir=models_dir))
    with pytest.raises(SchemaOutOfDate, match="dotrec db upgrade"), TestClient(app):
        pass


def test_database_down_is_a_fast_503(models_dir: Path) -> None:
    settings = api_settings(database_url="postgresql://postgres@127.0.0.1:1/dotrec", models_dir=models_dir)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "database: unreachable" in ready.json()["detail"]
        assert ready.json()["checks"]["model"] == client.app.state.dotrec.store.current.version
        for method, path, body in (
            ("POST", "/ratings", {"user_id": 1, "movie_id": 1, "rating": 4}),
            ("GET", "/predict/1/1", None),
            ("GET", "/recommendations/1", None),
            ("GET", "/movies?search=x", None),
            ("GET", "/users/1/ratings", None),
        ):
            started = time.perf_counter()
            response = client.request(method, path, json=body)
            assert response.status_code == 503, path
            assert response.json()["detail"].startswith("database unavailable:"), path
            assert response.headers["retry-after"] == "5"
            assert time.perf_counter() - started < 3, path


def test_openapi_documents_every_endpoint_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    expected = {
        ("post", "/ratings"),
        ("post", "/ratings/batch"),
        ("get", "/users/{user_id}/ratings"),
        ("delete", "/ratings/{user_id}/{movie_id}"),
        ("get", "/movies/{movie_id}"),
        ("get", "/movies"),
        ("post", "/movies"),
        ("get", "/predict/{user_id}/{movie_id}"),
        ("post", "/predict/pairs"),
        ("post", "/predict/matrix"),
        ("get", "/recommendations/{user_id}"),
        ("get", "/movies/{movie_id}/similar"),
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/model"),
        ("get", "/model/ids"),
        ("post", "/admin/reload"),
        ("get", "/metrics"),
    }
    documented = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert expected <= documented
    for method, path in expected:
        operation = spec["paths"][path][method]
        assert operation.get("summary") and operation.get("description"), (method, path)
    hot = spec["paths"]["/predict/{user_id}/{movie_id}"]["get"]["parameters"]
    assert {p["name"] for p in hot} == {"user_id", "movie_id", "explain"}
    schemas = spec["components"]["schemas"]
    for name in ("RatingIn", "RatingOut", "PredictionOut", "RecommendationsOut", "MovieIn", "PairsIn"):
        assert "examples" in schemas[name] or any(
            "examples" in p for p in schemas[name]["properties"].values()
        )
    assert client.get("/docs").status_code == 200


def test_bad_input_is_never_a_500(client: TestClient) -> None:
    json_header = {"Content-Type": "application/json"}
    requests = [
        ("GET", "/predict/1/1?explain=%00", None, None),
        ("GET", "/predict/%00/1", None, None),
        ("GET", "/predict/" + "9" * 400 + "/1", None, None),
        ("GET", "/recommendations/1?k=" + "9" * 400, None, None),
        ("GET", "/recommendations/1?genre=%F0%9F%8E%AC%27%3B--", None, None),
        ("GET", "/movies?search=%00%FF", None, None),
        ("GET", "/movies/1/similar?k=1e3", None, None),
        ("POST", "/ratings", b"", json_header),
        ("POST", "/ratings", b"null", json_header),
        ("POST", "/ratings", b"[]", json_header),
        ("POST", "/ratings", b"\xff\xfe", json_header),
        ("POST", "/ratings", b'{"user_id": 1e400, "movie_id": 1, "rating": 4}', json_header),
        (
            "POST",
            "/ratings",
            b'{"user_id": 1, "movie_id": 1, "rating": 4, "rated_at": "99999-01-01"}',
            json_header,
        ),
        ("POST", "/ratings", b'{"user_id": 1, "movie_id": 1, "rating": 4, "rated_at": 1e20}', json_header),
        ("POST", "/ratings/batch", b'{"ratings": null}', json_header),
        ("POST", "/predict/pairs", b'{"pairs": [[1, NaN]]}', json_header),
        ("POST", "/predict/matrix", b'{"user_ids": {"a": 1}}', json_header),
        (
            "POST",
            "/predict/matrix",
            b'{"user_ids": [1]}',
            {"Content-Type": "application/json", "Accept": "*/*"},
        ),
        ("POST", "/movies", b'{"movie_id": 5, "title": "\\ud800"}', json_header),
        ("POST", "/movies", b'{"movie_id": 5, "title": "x", "\\ud800": 1}', json_header),
        ("POST", "/movies", b'{"movie_id": 900020, "title": "a\\u0000b"}', json_header),
        ("POST", "/movies", b'{"movie_id": 900021, "title": "a", "genres": ["\\u0000"]}', json_header),
        ("POST", "/admin/reload", b"{}", {"Content-Type": "text/plain"}),
        ("DELETE", "/ratings/1/1?x=1", None, None),
        ("PUT", "/ratings", b"{}", json_header),
        ("GET", "/ratings", None, None),
    ]
    for method, path, content, headers in requests:
        response = client.request(method, path, content=content, headers=headers)
        assert response.status_code < 500, (method, path, content, response.text)
        assert "detail" in response.json() or response.status_code < 400, (method, path)


def test_the_server_never_imports_torch() -> None:
    code = "import sys, app.api.main; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_auth_fails_closed_and_says_when_it_is_off(
    make_client: ClientMaker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for blank in ("", " ", "\t"):  # a key that could never match, or hides that writes are open
        monkeypatch.setenv("API_KEY", blank)
        with pytest.raises(ValidationError, match=r"API_KEY .* is empty or blank"):
            api_settings()
    monkeypatch.delenv("API_KEY")
    with pytest.raises(ValidationError, match="empty or blank"):
        api_settings(api_keys=["good-key", " "])

    caplog.set_level(logging.WARNING, logger="dotrec")
    open_client = make_client()
    assert any("API_KEY is not set: writes" in r.getMessage() for r in caplog.records)
    assert open_client.get("/health").json()["auth"] == "off"

    # rotation: the old and the new key both work, each compared, in constant time
    rotating = make_client(api_key="new-key-0123", api_keys=["old-key-4567"])
    assert rotating.get("/health").json()["auth"] == "on"
    rating = {"user_id": NEW_USER, "movie_id": 1, "rating": 4}
    compared: list[int] = []
    real_compare = deps.hmac.compare_digest
    monkeypatch.setattr(deps.hmac, "compare_digest", lambda a, b: compared.append(1) or real_compare(a, b))
    for key in ("new-key-0123", "old-key-4567"):
        assert rotating.post("/ratings", json=rating, headers={"X-API-Key": key}).status_code in (200, 201)
    assert rotating.post("/ratings", json=rating, headers={"X-API-Key": "new-key-012"}).status_code == 403
    assert compared == [1, 1] * 3, "every key is compared, whichever matches"


def test_model_shows_no_credentials_and_no_server_paths(make_client: ClientMaker, models_dir: Path) -> None:
    """An older artifact recorded the database URL it was trained from, password and all."""
    folder = current_version_dir(models_dir)
    meta = json.loads((folder / "meta.json").read_text())
    meta["data_source"] = "database postgresql+psycopg://dotrec:s3cret@db.internal:5432/prod?password=x"
    (folder / "meta.json").write_text(json.dumps(meta))
    body = make_client().get("/model").json()
    text = json.dumps(body)
    assert "s3cret" not in text and "db.internal" not in text and str(models_dir) not in text
    assert body["data_source"] == "database (postgresql)" and body["path"] == folder.name


def test_served_weights_are_plain_ndarrays_over_the_mapped_file(client: TestClient) -> None:
    """Both heads' tables are views of the weights file's one mapping, but not of the np.memmap
    subclass, whose Python-level hooks cost more than the hot paths' arithmetic."""
    import numpy as np

    predictor = client.app.state.dotrec.store.current.predictor
    assert predictor.ranking is not None, "the fixture's model has a ranking head"
    for holder in (predictor, predictor.ranking):
        arrays = {name: value for name, value in vars(holder).items() if isinstance(value, np.ndarray)}
        assert arrays, type(holder).__name__
        for name, array in arrays.items():
            assert type(array) is np.ndarray, (type(holder).__name__, name, type(array))
    assert isinstance(predictor.ranking.movie_factors.base, np.memmap), "still the mapped file"
