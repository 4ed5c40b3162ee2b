"""GET /predict, POST /predict/pairs, POST /predict/matrix: strategies, agreement, limits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from api_support import CATALOG_ONLY, NEW_USER, ClientMaker, Data
from fastapi.testclient import TestClient

from app.api.routes import predict as predict_routes
from app.api.schemas import MatrixOut

TOLERANCE = 2e-5
"""JSON carries 6 decimals; float32 sums may differ in the last bit between code paths."""


def model_of(client: TestClient):
    return client.app.state.dotrec.store.current


def test_predict_known_user_uses_the_model_and_explains_the_score(client: TestClient, data: Data) -> None:
    response = client.get("/predict/1/2")
    assert response.status_code == 200
    body = response.json()
    model = model_of(client)
    predictor = model.predictor
    expected = float(predictor.pairs(predictor.users.rows([1]), predictor.movies.rows([2]))[0])
    assert body["strategy"] == "model"
    assert body["movie_in_model"] is True
    assert body["model_version"] == model.version
    assert body["rating"] == pytest.approx(expected, abs=TOLERANCE)
    assert "explain" not in body

    explained = client.get("/predict/1/2", params={"explain": "true"}).json()["explain"]
    assert explained["dot_product"] == pytest.approx(sum(explained["factor_products"]), abs=1e-5)
    assert len(explained["factor_products"]) == predictor.user_emb.shape[1]
    score = explained["user_bias"] + explained["movie_bias"] + explained["dot_product"]
    assert explained["score"] == pytest.approx(score, abs=1e-5)
    lo, hi = explained["y_range"]
    assert lo + (hi - lo) / (1 + np.exp(-score)) == pytest.approx(body["rating"], abs=TOLERANCE)


def test_predict_strategies_for_unknown_users_and_movies(client: TestClient) -> None:
    model = model_of(client)
    predictor = model.predictor
    movie_row = int(predictor.movies.rows([2])[0])

    cold = client.get(f"/predict/{NEW_USER}/2").json()
    assert cold["strategy"] == "baseline"
    assert cold["rating"] == pytest.approx(float(predictor.baseline(np.array([movie_row]))[0]), abs=1e-6)
    explained = client.get(f"/predict/{NEW_USER}/2?explain=1").json()["explain"]
    assert explained["global_mean"] + explained["movie_bias"] == pytest.approx(cold["rating"], abs=1e-5)

    outside = client.get(f"/predict/1/{CATALOG_ONLY[0]}").json()
    assert outside["strategy"] == "user_baseline"
    assert outside["movie_in_model"] is False
    user_row = int(predictor.users.rows([1])[0])
    offset = float(predictor.baseline_user_bias[user_row])
    assert outside["rating"] == pytest.approx(predictor.user_baseline(offset), abs=1e-6)

    both = client.get(f"/predict/{NEW_USER}/{CATALOG_ONLY[0]}").json()
    assert both["strategy"] == "user_baseline"
    assert both["rating"] == pytest.approx(float(np.clip(predictor.global_mean, *predictor.scale)), abs=1e-6)


def test_predict_errors_name_the_problem(client: TestClient) -> None:
    missing = client.get("/predict/1/999999")
    assert missing.status_code == 404
    assert "movie 999999" in missing.json()["detail"]
    for path in (
        "/predict/0/1",
        "/predict/-3/1",
        "/predict/9223372036854775808/1",
        "/predict/abc/1",
        "/predict/1.5/1",
        "/predict/1/0",
        "/predict/%EF%BC%91/1",  # a full-width digit one
    ):
        response = client.get(path)
        assert response.status_code == 422, path
        error = response.json()["detail"][0]
        assert error["loc"][0] == "path"
        assert "positive 64-bit integer" in error["msg"], path
    assert client.get("/predict/9223372036854775807/1").status_code == 200
    bad_flag = client.get("/predict/1/1?explain=maybe")
    assert bad_flag.status_code == 422
    assert bad_flag.json()["detail"][0]["loc"] == ["query", "explain"]


def test_pairs_match_single_predictions_and_report_strategies(client: TestClient) -> None:
    client.post("/ratings", json={"user_id": NEW_USER + 1, "movie_id": 3, "rating": 4.5})
    pairs = [[1, 2], [2, 3], [NEW_USER, 2], [NEW_USER + 1, 5], [1, CATALOG_ONLY[0]], [1, 2]]
    response = client.post("/predict/pairs", json={"pairs": pairs})
    assert response.status_code == 200
    body = response.json()
    assert body["strategies"] == ["model", "model", "baseline", "fold_in", "user_baseline", "model"]
    for (user, movie), rating in zip(pairs, body["ratings"], strict=True):
        single = client.get(f"/predict/{user}/{movie}").json()["rating"]
        assert rating == pytest.approx(single, abs=TOLERANCE)
    assert client.post("/predict/pairs", json={"pairs": []}).json()["ratings"] == []


def test_pairs_errors(make_client: ClientMaker) -> None:
    client = make_client(max_pairs=3)
    too_many = client.post("/predict/pairs", json={"pairs": [[1, 1]] * 4})
    assert too_many.status_code == 413
    assert "cap is 3" in too_many.json()["detail"]
    unknown = client.post("/predict/pairs", json={"pairs": [[1, 1], [1, 777777], [2, 888888]]})
    assert unknown.status_code == 404
    assert "777777" in unknown.json()["detail"] and "888888" in unknown.json()["detail"]
    for pairs in ([[0, 1]], [[1, -1]], [[1]], [[1, 2, 3]], [["1", 2]], [[1.5, 2]], "nope"):
        response = client.post("/predict/pairs", json={"pairs": pairs})
        assert response.status_code == 422, pairs
    assert client.post("/predict/pairs", json={"pairs": [[1, 1]], "extra": 1}).status_code == 422


def test_matrix_agrees_with_single_predictions_pairs_and_npy(client: TestClient) -> None:
    client.post("/ratings", json={"user_id": NEW_USER + 1, "movie_id": 4, "rating": 2.0})
    user_ids = [3, 1, NEW_USER, NEW_USER + 1, 3]
    movie_ids = [5, CATALOG_ONLY[1], 1, 2, 40]
    response = client.post("/predict/matrix", json={"user_ids": user_ids, "movie_ids": movie_ids})
    assert response.status_code == 200
    body = response.json()
    assert body["user_ids"] == user_ids and body["movie_ids"] == movie_ids
    assert body["user_strategies"] == ["model", "model", "baseline", "fold_in", "model"]
    assert body["movies_not_in_model"] == [CATALOG_ONLY[1]]
    ratings = np.array(body["ratings"])
    assert ratings.shape == (len(user_ids), len(movie_ids))

    pairs = [[u, m] for u in user_ids for m in movie_ids]
    by_pairs = np.array(client.post("/predict/pairs", json={"pairs": pairs}).json()["ratings"])
    np.testing.assert_allclose(ratings.ravel(), by_pairs, atol=TOLERANCE)
    for i, user in enumerate(user_ids):
        for j, movie in enumerate(movie_ids):
            single = client.get(f"/predict/{user}/{movie}").json()["rating"]
            assert ratings[i, j] == pytest.approx(single, abs=TOLERANCE), (user, movie)

    npy = client.post(
        "/predict/matrix",
        json={"user_ids": user_ids, "movie_ids": movie_ids},
        headers={"Accept": "application/x-npy"},
    )
    assert npy.status_code == 200
    assert npy.headers["content-type"] == "application/x-npy"
    assert int(npy.headers["content-length"]) == len(npy.content)
    array = np.load(io.BytesIO(npy.content))
    assert array.dtype == np.float32 and array.shape == ratings.shape
    np.testing.assert_allclose(array, ratings, atol=TOLERANCE)


@pytest.mark.parametrize("band_cells", [1, 7, 1 << 16])
def test_a_json_matrix_written_in_bands_is_one_document(
    client: TestClient, band_cells: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predict_routes, "JSON_BAND_CELLS", band_cells)
    body = {"user_ids": [3, 1, NEW_USER, 2, 3], "movie_ids": [5, CATALOG_ONLY[1], 1]}
    response = client.post("/predict/matrix", json=body)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    written = MatrixOut.model_validate_json(response.content)  # the response model, field for field
    assert written.user_ids == body["user_ids"] and written.movies_not_in_model == [CATALOG_ONLY[1]]
    npy = client.post("/predict/matrix", json=body, headers={"Accept": "application/x-npy"})
    np.testing.assert_allclose(np.array(written.ratings), np.load(io.BytesIO(npy.content)), atol=TOLERANCE)


def test_matrix_of_everything_and_its_caps(make_client: ClientMaker, data: Data) -> None:
    client = make_client(max_matrix_cells=100)
    model = model_of(client)
    predictor = model.predictor
    cells = predictor.n_users * predictor.n_movies
    refused = client.post("/predict/matrix", json={})
    assert refused.status_code == 413
    detail = refused.json()["detail"]
    assert "cap of 100" in detail and f"{cells:,}" in detail and "application/x-npy" in detail

    everything = client.post("/predict/matrix", json={}, headers={"Accept": "application/x-npy"})
    assert everything.status_code == 200
    array = np.load(io.BytesIO(everything.content))
    expected = predictor.matrix(np.arange(predictor.n_users), np.arange(predictor.n_movies))
    np.testing.assert_allclose(array, expected, atol=1e-6)
    ids = client.get("/model/ids").json()
    assert ids["user_ids"] == predictor.user_ids.tolist()
    assert ids["movie_ids"] == predictor.movie_ids.tolist()

    one_row = client.post("/predict/matrix", json={"user_ids": [1]}).json()
    assert one_row["movie_ids"] == predictor.movie_ids.tolist()
    np.testing.assert_allclose(one_row["ratings"][0], expected[0], atol=TOLERANCE)
    empty = client.post("/predict/matrix", json={"user_ids": [], "movie_ids": [1, 2]}).json()
    assert empty["ratings"] == []
    unknown = client.post("/predict/matrix", json={"user_ids": [1], "movie_ids": [1, 123456]})
    assert unknown.status_code == 404 and "123456" in unknown.json()["detail"]
    for body in ({"user_ids": [0]}, {"movie_ids": ["1"]}, {"user_ids": 5}, {"users": [1]}):
        assert client.post("/predict/matrix", json=body).status_code == 422, body
