"""POST /ratings, POST /ratings/batch, GET /users/{id}/ratings, DELETE /ratings/{user}/{movie}."""

from __future__ import annotations

import json

import pytest
from api_support import CATALOG_ONLY, NEW_USER, ClientMaker, Data
from fastapi.testclient import TestClient


def test_post_rating_creates_then_replaces(client: TestClient) -> None:
    first = client.post("/ratings", json={"user_id": NEW_USER, "movie_id": 3, "rating": 4.5})
    assert first.status_code == 201
    assert first.json()["created"] is True
    assert first.json()["rating"] == 4.5
    again = client.post(
        "/ratings",
        json={"user_id": NEW_USER, "movie_id": 3, "rating": 2, "rated_at": "2024-05-01T12:00:00+02:00"},
    )
    assert again.status_code == 200
    assert again.json() == {
        "user_id": NEW_USER,
        "movie_id": 3,
        "rating": 2.0,
        "rated_at": "2024-05-01T10:00:00Z",
        "created": False,
    }
    # a movie in the catalog but not in the model can be rated
    assert (
        client.post("/ratings", json={"user_id": 1, "movie_id": CATALOG_ONLY[0], "rating": 1}).status_code
        == 201
    )
    page = client.get(f"/users/{NEW_USER}/ratings").json()
    assert page["total"] == 1
    assert page["items"] == [{"movie_id": 3, "rating": 2.0, "rated_at": "2024-05-01T10:00:00Z"}]


BAD_RATINGS = [
    ({"user_id": 1, "movie_id": 999999, "rating": 4}, 404, "movie 999999 is not in the catalog"),
    ({"user_id": 1, "movie_id": 1, "rating": 3.3}, 422, "allowed values are 0.5, 1, 1.5"),
    ({"user_id": 1, "movie_id": 1, "rating": 0}, 422, "not on the scale"),
    ({"user_id": 1, "movie_id": 1, "rating": 5.5}, 422, "not on the scale"),
    ({"user_id": 1, "movie_id": 1, "rating": "4"}, 422, "valid number"),
    ({"user_id": 1, "movie_id": 1, "rating": True}, 422, "valid number"),
    ({"user_id": 0, "movie_id": 1, "rating": 4}, 422, "positive 64-bit integer"),
    ({"user_id": -7, "movie_id": 1, "rating": 4}, 422, "positive 64-bit integer"),
    ({"user_id": 2**63, "movie_id": 1, "rating": 4}, 422, "positive 64-bit integer"),
    ({"user_id": "12", "movie_id": 1, "rating": 4}, 422, "positive 64-bit integer"),
    ({"user_id": 1.5, "movie_id": 1, "rating": 4}, 422, "positive 64-bit integer"),
    ({"user_id": 1, "movie_id": None, "rating": 4}, 422, "positive 64-bit integer"),
    ({"user_id": 1, "rating": 4}, 422, "Field required"),
    ({"user_id": 1, "movie_id": 1, "rating": 4, "comment": "hi"}, 422, "Extra inputs"),
    ({"user_id": 1, "movie_id": 1, "rating": 4, "rated_at": "yesterday"}, 422, "datetime"),
    ([1, 1, 4], 422, "valid dictionary"),
]


def test_post_rating_rejects_bad_input(client: TestClient, data: Data) -> None:
    for body, status, fragment in BAD_RATINGS:
        response = client.post("/ratings", json=body)
        assert response.status_code == status, body
        assert fragment in json.dumps(response.json()["detail"]), body
    assert client.get("/users/1/ratings").json()["total"] == len(data.rated_by(1))


def test_non_finite_malformed_and_non_json_bodies(client: TestClient) -> None:
    json_header = {"Content-Type": "application/json"}
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        body = f'{{"user_id": 1, "movie_id": 1, "rating": {literal}}}'
        response = client.post("/ratings", content=body, headers=json_header)
        assert response.status_code == 422, literal
        assert "finite" in response.json()["detail"][0]["msg"], literal
    broken = client.post("/ratings", content='{"user_id": 1,', headers=json_header)
    assert broken.status_code == 422
    assert "not valid JSON" in broken.json()["detail"][0]["msg"]
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.post("/ratings", content=b"user_id=1&movie_id=1&rating=4", headers=headers)
        assert response.status_code == 415, content_type
        assert "application/json" in response.json()["detail"]
    with_charset = {"Content-Type": "application/json; charset=utf-8"}
    ok = client.post("/ratings", content='{"user_id": 1, "movie_id": 1, "rating": 4}', headers=with_charset)
    assert ok.status_code in (200, 201)


def test_oversized_bodies_are_413_naming_the_cap(make_client: ClientMaker) -> None:
    client = make_client(max_body_bytes=10_000)
    big = b'{"ratings": [' + b" " * 20_000 + b"]}"
    response = client.post("/ratings/batch", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "10,000 bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit applies as the bytes arrive
        yield b'{"ratings": ['
        for _ in range(30):
            yield b" " * 1_000
        yield b"]}"

    streamed = client.post("/ratings/batch", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert "10,000 bytes" in streamed.json()["detail"]


def test_default_cap_refuses_a_10_mb_body(client: TestClient) -> None:
    body = b'{"pairs": [' + b"[1, 1]," * (10 * 1024 * 1024 // 7) + b"[1, 1]]}"
    response = client.post("/predict/pairs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_batch_is_all_or_nothing_with_per_row_errors(make_client: ClientMaker, data: Data) -> None:
    client = make_client(max_batch_ratings=5)
    existing_movie = next(iter(data.rated_by(1)))
    batch = [
        {"user_id": NEW_USER, "movie_id": 1, "rating": 4},
        {"user_id": NEW_USER, "movie_id": 2, "rating": 3.5, "rated_at": "2024-01-01T00:00:00Z"},
        {"user_id": 1, "movie_id": existing_movie, "rating": 0.5},
        {"user_id": NEW_USER, "movie_id": 1, "rating": 5},  # the last rating of a pair wins
    ]
    ok = client.post("/ratings/batch", json={"ratings": batch})
    assert ok.status_code == 200
    assert ok.json() == {"inserted": 2, "updated": 1, "errors": []}
    stored = {r["movie_id"]: r["rating"] for r in client.get(f"/users/{NEW_USER}/ratings").json()["items"]}
    assert stored == {1: 5.0, 2: 3.5}

    off_scale = [
        {"user_id": NEW_USER + 1, "movie_id": 1, "rating": 4},
        {"user_id": 9, "movie_id": 1, "rating": 4.2},
    ]
    refused = client.post("/ratings/batch", json={"ratings": off_scale})
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {"index": 1, "field": "rating", "message": refused.json()["detail"][0]["msg"]}
    ]
    unknown = [
        {"user_id": NEW_USER + 1, "movie_id": 1, "rating": 4},
        {"user_id": 9, "movie_id": 55555, "rating": 4},
    ]
    missing = client.post("/ratings/batch", json={"ratings": unknown})
    assert missing.status_code == 404
    assert "55555" in missing.json()["detail"] and "nothing was stored" in missing.json()["detail"]
    assert missing.json()["errors"][0]["index"] == 1
    assert client.get(f"/users/{NEW_USER + 1}/ratings").json()["total"] == 0

    invalid_row = client.post(
        "/ratings/batch", json={"ratings": [batch[0], {"user_id": 0, "movie_id": 1, "rating": 4}]}
    )
    assert invalid_row.status_code == 422
    assert invalid_row.json()["detail"][0]["loc"] == ["body", "ratings", 1, "user_id"]
    too_many = client.post("/ratings/batch", json={"ratings": batch * 2})
    assert too_many.status_code == 413
    assert "cap is 5" in too_many.json()["detail"]
    assert client.post("/ratings/batch", json={"ratings": []}).json() == {
        "inserted": 0,
        "updated": 0,
        "errors": [],
    }
    assert client.post("/ratings/batch", json={"rating": batch}).status_code == 422


def test_user_ratings_pages_and_delete(client: TestClient, data: Data) -> None:
    rated = data.rated_by(7)
    first = client.get("/users/7/ratings", params={"limit": 3})
    assert first.status_code == 200
    page = first.json()
    assert page["total"] == len(rated) and len(page["items"]) == 3
    everything = client.get("/users/7/ratings", params={"limit": 1000}).json()["items"]
    times = [item["rated_at"] for item in everything]
    assert times == sorted(times, reverse=True)
    assert {item["movie_id"]: item["rating"] for item in everything} == pytest.approx(rated)
    rest = client.get("/users/7/ratings", params={"limit": 3, "offset": 3}).json()["items"]
    assert rest == everything[3:6]
    assert client.get(f"/users/{NEW_USER}/ratings").json() == {
        "user_id": NEW_USER,
        "total": 0,
        "limit": 50,
        "offset": 0,
        "items": [],
    }
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}):
        assert client.get("/users/7/ratings", params=params).status_code == 422, params
    assert client.get("/users/0/ratings").status_code == 422

    movie = next(iter(rated))
    assert client.delete(f"/ratings/7/{movie}").status_code == 204
    gone = client.delete(f"/ratings/7/{movie}")
    assert gone.status_code == 404
    assert f"user 7 has no rating of movie {movie}" == gone.json()["detail"]
    assert client.get("/users/7/ratings").json()["total"] == len(rated) - 1
    assert client.delete("/ratings/7/-1").status_code == 422
