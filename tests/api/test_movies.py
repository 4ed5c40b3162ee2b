"""GET /movies/{id}, GET /movies (search), POST /movies."""

from __future__ import annotations

from api_support import CATALOG_ONLY, N_MOVIES, NEW_USER, Data
from fastapi.testclient import TestClient


def test_get_one_movie(client: TestClient, data: Data) -> None:
    movie_id, title, year, genres = data.catalog[0]
    response = client.get(f"/movies/{movie_id}")
    assert response.status_code == 200
    assert response.json() == {
        "movie_id": movie_id,
        "title": title,
        "year": year,
        "genres": genres,
        "in_model": True,
    }
    assert client.get(f"/movies/{CATALOG_ONLY[0]}").json()["in_model"] is False
    missing = client.get("/movies/999999")
    assert missing.status_code == 404 and missing.json()["detail"] == "movie 999999 is not in the catalog"
    for path in ("/movies/0", "/movies/-1", "/movies/x", f"/movies/{2**64}"):
        assert client.get(path).status_code == 422, path


def test_search_is_literal_and_paged(client: TestClient, data: Data) -> None:
    everything = client.get("/movies", params={"limit": 1000}).json()
    assert everything["total"] == len(data.catalog)
    assert [m["movie_id"] for m in everything["items"]] == sorted(i for i, *_ in data.catalog)
    page = client.get("/movies", params={"limit": 5, "offset": 5}).json()
    assert page["items"] == everything["items"][5:10] and page["total"] == len(data.catalog)

    found = client.get("/movies", params={"search": "catalog ONLY"}).json()
    assert [m["movie_id"] for m in found["items"]] == CATALOG_ONLY
    comedies = client.get("/movies", params={"genre": "comedy", "limit": 1000}).json()["items"]
    expected = sorted(i for i, _, _, genres in data.catalog if "Comedy" in genres)
    assert [m["movie_id"] for m in comedies] == expected
    both = client.get("/movies", params={"genre": "Drama", "search": "only"}).json()
    assert both["total"] == len(CATALOG_ONLY)

    for text in ("%", "_", "'; DROP TABLE movies; --", "\u00e9t\u00e9 \U0001f3ac", '"', "\\"):
        response = client.get("/movies", params={"search": text})
        assert response.status_code == 200, text
        assert response.json()["total"] == 0, text
    assert client.get("/movies", params={"genre": "Comedy|Drama"}).json()["total"] == 0
    assert client.get("/movies").json()["total"] == len(data.catalog)  # the table survived
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"search": "x" * 201}):
        assert client.get("/movies", params=params).status_code == 422, params


def test_add_movie(client: TestClient) -> None:
    body = {
        "movie_id": 900001,
        "title": "Nouveau Film \u00e9t\u00e9 (2025)",
        "year": 2025,
        "genres": ["Comedy"],
    }
    created = client.post("/movies", json=body)
    assert created.status_code == 201
    assert created.json() == {**body, "in_model": False}
    assert client.get("/movies/900001").json()["title"] == body["title"]
    conflict = client.post("/movies", json=body)
    assert conflict.status_code == 409 and "900001" in conflict.json()["detail"]

    # rateable and predictable at once; a user's baseline until a model is trained with it
    assert (
        client.post("/ratings", json={"user_id": NEW_USER, "movie_id": 900001, "rating": 4}).status_code
        == 201
    )
    prediction = client.get("/predict/1/900001").json()
    assert prediction["strategy"] == "user_baseline" and prediction["movie_in_model"] is False
    items = client.get("/recommendations/1", params={"k": N_MOVIES + 10}).json()["items"]
    assert 900001 not in {item["movie_id"] for item in items}

    for bad in (
        {"movie_id": 0, "title": "x"},
        {"movie_id": 900002, "title": ""},
        {"movie_id": 900002},
        {"movie_id": 900002, "title": "x", "genres": ["a|b"]},
        {"movie_id": 900002, "title": "x", "year": 99999},
        {"movie_id": 900002, "title": "x", "rating": 5},
        {"movie_id": "900002", "title": "x"},
    ):
        assert client.post("/movies", json=bad).status_code == 422, bad
