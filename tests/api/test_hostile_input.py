"""Hostile requests, on SQLite and PostgreSQL: every endpoint that takes input answers each one
with a 4xx whose `detail` names the problem (the field and the rule, or the cap), never a 5xx,
and stores nothing: the ratings, users and movies tables are the same, row for row, after it.

HOSTILE is the table: ids of 0, negative, 2**63, strings, floats and SQL in paths; NaN, infinite
and off-scale ratings; missing and unknown fields; bodies that are not JSON, not UTF-8 or of
10 MB (with and without Content-Length); batches, pairs and matrices over their caps; `k` of 0
and 10**9; writes without or with a wrong X-API-Key. LOOKS_HOSTILE is what only looks hostile:
Unicode and SQL-looking text in searches and filters is a 200 that matches nothing, and text
shaped like SQL is stored and read back verbatim.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from api_support import API_KEY, NEW_USER, ClientMaker, make_data
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Engine, select

from app.api.routes import movies, predict, ratings, recommendations
from app.db.models import Movie, Rating, User

MAX_ID = 2**63 - 1
TEN_MB = 10 * 1024 * 1024
BODY_CAP = r"larger than the cap of 8,388,608 bytes \(MAX_BODY_BYTES\)"
ID_RULE = r"ids are a positive 64-bit integer \(1 to 9223372036854775807\)"
SCALE = r"the allowed values are 0\.5, 1, 1\.5, 2, 2\.5, 3, 3\.5, 4, 4\.5, 5"
NOT_INT = r"Input should be a valid integer"
JSON_TYPE = {"Content-Type": "application/json"}
RATED = min(make_data().rated_by(1))
"""A movie user 1 has rated (the test data is deterministic): a delete that slipped through shows."""
GOOD_RATING = {"user_id": NEW_USER, "movie_id": 1, "rating": 4.0}

Content = bytes | Callable[[], bytes | Iterator[bytes]]
"""A raw body, or what makes it when the request is sent (10 MB bodies are built only then)."""


# --- what the tests look at -------------------------------------------------------------------------


def detail_text(body: dict[str, Any]) -> str:
    """An error body's `detail` as one line: a string as it is; field errors as
    "loc.parts: msg (type)" joined by " | "."""
    detail = body["detail"]
    if isinstance(detail, str):
        return detail
    return " | ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']} ({error['type']})"
        for error in detail
    )


Snapshot = dict[str, list[tuple]]


def snapshot(engine: Engine) -> Snapshot:
    """Every row of the ratings, users and movies tables, sorted (the test data is small)."""
    with engine.connect() as connection:
        return {
            table.name: sorted(tuple(row) for row in connection.execute(select(table)))
            for table in (Rating.__table__, User.__table__, Movie.__table__)
        }


# --- the table of hostile requests -------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    id: str
    method: str
    path: str
    status: int
    message: str
    """A regular expression detail_text must match: the field and the rule, or the cap."""
    json: Any = None
    content: Content | None = None
    headers: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    """Settings of the app for this request (a lowered cap, an API key)."""

    def send(self, client: TestClient) -> Response:
        content = self.content() if callable(self.content) else self.content
        if content is not None:
            return client.request(self.method, self.path, content=content, headers=self.headers)
        return client.request(self.method, self.path, json=self.json, headers=self.headers)


def case(case_id: str, method: str, path: str, status: int, message: str, **request: Any) -> Hostile:
    return Hostile(case_id, method, path, status, message, **request)


def raw(text: str) -> bytes:
    """A body as written, for what json.dumps would refuse or rewrite (NaN, Infinity)."""
    return text.encode()


def rating(**fields: Any) -> dict[str, Any]:
    """GOOD_RATING with `fields` replaced (None removes one)."""
    merged = GOOD_RATING | fields
    return {name: value for name, value in merged.items() if value is not None}


def batch(size: int) -> dict[str, Any]:
    return {"ratings": [rating(movie_id=1 + i % 40) for i in range(size)]}


def padded_to_ten_mb(head: bytes, tail: bytes) -> bytes:
    """Valid JSON of over 10 MB: `head`, whitespace, `tail`."""
    return head + b" " * TEN_MB + tail


@cache
def ten_mb_batch() -> bytes:
    """A real batch of ratings (about 230,000 rows), over 10 MB."""
    row = json.dumps(GOOD_RATING).encode()
    return b'{"ratings": [' + b",".join([row] * (TEN_MB // len(row) + 1)) + b"]}"


def ten_mb_batch_streamed() -> Iterator[bytes]:
    """The same batch in 1 MiB chunks: no Content-Length, so the cap applies as bytes arrive."""
    body = ten_mb_batch()
    step = 1024 * 1024
    return (body[start : start + step] for start in range(0, len(body), step))


def ten_mb_pairs() -> bytes:
    return b'{"pairs": [' + b"[1, 1]," * (TEN_MB // 7) + b"[1, 1]]}"


def with_api_key(name: str, method: str, path: str, body: Any) -> list[Hostile]:
    """A write to an app with API_KEY set: without the header (401) and with a wrong key (403)."""
    keyed = {"api_key": API_KEY}
    return [
        case(f"{name}-no-key", method, path, 401, r"^this endpoint needs the X-API-Key header$",
             json=body, settings=keyed),
        case(f"{name}-wrong-key", method, path, 403, r"^the X-API-Key header does not match the configured",
             json=body, settings=keyed, headers={"X-API-Key": "not-the-key"}),
    ]  # fmt: skip


# The table is laid out by hand, one request per entry.
# fmt: off
HOSTILE = [
    # POST /ratings: ids
    case("rating-user-0", "POST", "/ratings", 422,
         rf"body\.user_id: Input should be greater than 0: {ID_RULE}", json=rating(user_id=0)),
    case("rating-user-negative", "POST", "/ratings", 422,
         r"body\.user_id: Input should be greater than 0", json=rating(user_id=-3)),
    case("rating-user-2**63", "POST", "/ratings", 422,
         rf"body\.user_id: Input should be less than or equal to {MAX_ID}: {ID_RULE}",
         json=rating(user_id=2**63)),
    case("rating-user-2**64", "POST", "/ratings", 422,
         r"body\.user_id: Input should be less than or equal", json=rating(user_id=2**64)),
    case("rating-movie-string", "POST", "/ratings", 422,
         rf"body\.movie_id: {NOT_INT}.*{ID_RULE}", json=rating(movie_id="1")),
    case("rating-movie-float", "POST", "/ratings", 422, rf"body\.movie_id: {NOT_INT}",
         json=rating(movie_id=1.5)),
    case("rating-movie-whole-float", "POST", "/ratings", 422,
         rf"body\.movie_id: {NOT_INT}", json=rating(movie_id=1.0)),
    case("rating-movie-bool", "POST", "/ratings", 422, rf"body\.movie_id: {NOT_INT}",
         json=rating(movie_id=True)),
    case("rating-movie-sql", "POST", "/ratings", 422,
         rf"body\.movie_id: {NOT_INT}", json=rating(movie_id="1; DROP TABLE ratings; --")),
    case("rating-movie-not-in-catalog", "POST", "/ratings", 404,
         r"^movie 999999 is not in the catalog$", json=rating(movie_id=999_999)),
    # POST /ratings: ratings
    case("rating-nan", "POST", "/ratings", 422, r"body\.rating: Input should be a finite number",
         content=raw('{"user_id": 5000, "movie_id": 1, "rating": NaN}'), headers=JSON_TYPE),
    case("rating-infinity", "POST", "/ratings", 422, r"body\.rating: Input should be a finite number",
         content=raw('{"user_id": 5000, "movie_id": 1, "rating": Infinity}'), headers=JSON_TYPE),
    case("rating-minus-infinity", "POST", "/ratings", 422, r"body\.rating: Input should be a finite number",
         content=raw('{"user_id": 5000, "movie_id": 1, "rating": -Infinity}'), headers=JSON_TYPE),
    case("rating-1e999", "POST", "/ratings", 422, r"body\.rating: Input should be a finite number",
         content=raw('{"user_id": 5000, "movie_id": 1, "rating": 1e999}'), headers=JSON_TYPE),
    case("rating-above-scale", "POST", "/ratings", 422,
         rf"body\.rating: rating 5\.5 is not on the scale; {SCALE}", json=rating(rating=5.5)),
    case("rating-below-scale", "POST", "/ratings", 422,
         rf"body\.rating: rating 0 is not on the scale; {SCALE}", json=rating(rating=0)),
    case("rating-negative", "POST", "/ratings", 422,
         r"body\.rating: rating -4 is not on the scale", json=rating(rating=-4)),
    case("rating-between-steps", "POST", "/ratings", 422,
         r"body\.rating: rating 3\.3 is not on the scale", json=rating(rating=3.3)),
    case("rating-string", "POST", "/ratings", 422,
         r"body\.rating: Input should be a valid number", json=rating(rating="4")),
    # POST /ratings: fields and bodies
    case("rating-missing-rating", "POST", "/ratings", 422, r"body\.rating: Field required",
         json=rating(rating=None)),
    case("rating-empty-object", "POST", "/ratings", 422,
         r"body\.user_id: Field required.*body\.movie_id: Field required.*body\.rating: Field required",
         json={}),
    case("rating-unknown-field", "POST", "/ratings", 422,
         r"body\.comment: Extra inputs are not permitted", json=rating(comment="hi")),
    case("rating-sql-date", "POST", "/ratings", 422,
         r"body\.rated_at: Input should be a valid datetime",
         json=rating(rated_at="2024-01-01'; DROP TABLE users")),
    case("rating-array", "POST", "/ratings", 422, r"body: Input should be a valid dictionary",
         json=[5000, 1, 4]),
    case("rating-broken-json", "POST", "/ratings", 422, r"body\.\d+: the body is not valid JSON",
         content=raw('{"user_id": 5000,'), headers=JSON_TYPE),
    case("rating-not-utf8", "POST", "/ratings", 422,
         r"body\.\d+: the body is not valid JSON \(not UTF-8: invalid start byte\) at byte \d+",
         content=b'{"user_id": 5000, "movie_id": 1, "rating": 4, "x": "\xff"}', headers=JSON_TYPE),
    case("rating-text-plain", "POST", "/ratings", 415,
         r"^Content-Type must be application/json \(got text/plain\)$",
         content=raw(json.dumps(GOOD_RATING)), headers={"Content-Type": "text/plain"}),
    case("rating-form", "POST", "/ratings", 415,
         r"must be application/json \(got application/x-www-form-urlencoded",
         content=b"user_id=5000&movie_id=1&rating=4",
         headers={"Content-Type": "application/x-www-form-urlencoded"}),
    case("rating-no-content-type", "POST", "/ratings", 415, r"must be application/json \(got none\)",
         content=raw(json.dumps(GOOD_RATING))),
    case("rating-10mb", "POST", "/ratings", 413, BODY_CAP, headers=JSON_TYPE,
         content=lambda: padded_to_ten_mb(b'{"user_id": 5000, "movie_id": 1, "rating": 4', b"}")),
    # POST /ratings/batch
    case("batch-over-cap", "POST", "/ratings/batch", 413,
         r"^4 ratings in one batch; the cap is 3 \(MAX_BATCH_RATINGS\)$", json=batch(4),
         settings={"max_batch_ratings": 3}),
    case("batch-over-default-cap", "POST", "/ratings/batch", 413,
         r"^10,001 ratings in one batch; the cap is 10,000 \(MAX_BATCH_RATINGS\)$", json=batch(10_001)),
    case("batch-10mb", "POST", "/ratings/batch", 413, BODY_CAP, content=ten_mb_batch, headers=JSON_TYPE),
    case("batch-10mb-streamed", "POST", "/ratings/batch", 413, BODY_CAP,
         content=ten_mb_batch_streamed, headers=JSON_TYPE),
    case("batch-one-id-0", "POST", "/ratings/batch", 422,
         rf"^body\.ratings\.1\.user_id: Input should be greater than 0: {ID_RULE}",
         json={"ratings": [GOOD_RATING, rating(user_id=0)]}),
    case("batch-one-nan", "POST", "/ratings/batch", 422,
         r"^body\.ratings\.1\.rating: Input should be a finite number",
         content=raw('{"ratings": [{"user_id": 5000, "movie_id": 1, "rating": 4},'
                     ' {"user_id": 5000, "movie_id": 2, "rating": NaN}]}'), headers=JSON_TYPE),
    case("batch-one-off-scale", "POST", "/ratings/batch", 422,
         rf"^body\.ratings\.1\.rating: rating 4\.2 is not on the scale; {SCALE}",
         json={"ratings": [GOOD_RATING, rating(movie_id=2, rating=4.2)]}),
    case("batch-one-unknown-movie", "POST", "/ratings/batch", 404,
         r"^movie 55555 is not in the catalog; nothing was stored$",
         json={"ratings": [GOOD_RATING, rating(movie_id=55_555)]}),
    case("batch-one-unknown-field", "POST", "/ratings/batch", 422,
         r"body\.ratings\.0\.stars: Extra inputs are not permitted", json={"ratings": [rating(stars=5)]}),
    case("batch-not-a-list", "POST", "/ratings/batch", 422,
         r"body\.ratings: Input should be a valid list", json={"ratings": GOOD_RATING}),
    case("batch-missing", "POST", "/ratings/batch", 422, r"body\.ratings: Field required", json={}),
    case("batch-misspelt", "POST", "/ratings/batch", 422,
         r"body\.ratings: Field required.*body\.rating: Extra inputs are not permitted",
         json={"rating": [GOOD_RATING]}),
    # DELETE /ratings/{user_id}/{movie_id}
    case("delete-user-0", "DELETE", f"/ratings/0/{RATED}", 422,
         rf"path\.user_id: Input should be greater than 0: {ID_RULE}"),
    case("delete-user-negative", "DELETE", f"/ratings/-1/{RATED}", 422,
         r"path\.user_id: Input should be greater than 0"),
    case("delete-user-2**63", "DELETE", f"/ratings/{2**63}/{RATED}", 422,
         rf"path\.user_id: Input should be less than or equal to {MAX_ID}"),
    case("delete-user-string", "DELETE", f"/ratings/one/{RATED}", 422,
         rf"path\.user_id: {NOT_INT}.*{ID_RULE}"),
    case("delete-user-float", "DELETE", f"/ratings/1.0/{RATED}", 422, rf"path\.user_id: {NOT_INT}"),
    case("delete-user-underscored", "DELETE", f"/ratings/0_1/{RATED}", 422, rf"path\.user_id: {NOT_INT}"),
    case("delete-user-padded", "DELETE", f"/ratings/ 1/{RATED}", 422, rf"path\.user_id: {NOT_INT}"),
    case("delete-movie-sql", "DELETE", f"/ratings/1/{RATED} OR 1=1", 422, rf"path\.movie_id: {NOT_INT}"),
    case("delete-movie-sql-quote", "DELETE", f"/ratings/1/{RATED}' OR '1'='1", 422,
         rf"path\.movie_id: {NOT_INT}"),
    case("delete-missing-rating", "DELETE", f"/ratings/{NEW_USER}/{RATED}", 404,
         rf"^user {NEW_USER} has no rating of movie {RATED}$"),
    # GET /users/{user_id}/ratings
    case("user-ratings-0", "GET", "/users/0/ratings", 422,
         rf"path\.user_id: Input should be greater than 0: {ID_RULE}"),
    case("user-ratings-2**63", "GET", f"/users/{2**63}/ratings", 422,
         r"path\.user_id: Input should be less than or equal"),
    case("user-ratings-float", "GET", "/users/1.5/ratings", 422, rf"path\.user_id: {NOT_INT}"),
    case("user-ratings-plus", "GET", "/users/+1/ratings", 422, rf"path\.user_id: {NOT_INT}"),
    case("user-ratings-sql", "GET", "/users/1 OR 1=1/ratings", 422, rf"path\.user_id: {NOT_INT}"),
    case("user-ratings-limit-0", "GET", "/users/1/ratings?limit=0", 422,
         r"query\.limit: Input should be greater than or equal to 1"),
    case("user-ratings-limit-10**9", "GET", "/users/1/ratings?limit=1000000000", 422,
         r"query\.limit: Input should be less than or equal to 1000"),
    case("user-ratings-offset-negative", "GET", "/users/1/ratings?offset=-1", 422,
         r"query\.offset: Input should be greater than or equal to 0"),
    case("user-ratings-limit-sql", "GET", "/users/1/ratings?limit=1;DROP TABLE ratings", 422,
         rf"query\.limit: {NOT_INT}"),
    # GET /movies
    case("movies-limit-0", "GET", "/movies?limit=0", 422,
         r"query\.limit: Input should be greater than or equal to 1"),
    case("movies-limit-float", "GET", "/movies?limit=5.0", 422, rf"query\.limit: {NOT_INT}"),
    case("movies-offset-10**10", "GET", "/movies?offset=10000000000", 422,
         r"query\.offset: Input should be less than or equal to 1000000000"),
    case("movies-search-too-long", "GET", "/movies?search=" + "x" * 201, 422,
         r"query\.search: String should have at most 200 characters"),
    case("movies-search-nul", "GET", "/movies?search=a%00b", 422,
         r"query\.search: must not contain NUL characters"),
    case("movies-genre-too-long", "GET", "/movies?genre=" + "g" * 65, 422,
         r"query\.genre: String should have at most 64 characters"),
    # POST /movies
    case("movie-id-0", "POST", "/movies", 422, rf"body\.movie_id: Input should be greater than 0: {ID_RULE}",
         json={"movie_id": 0, "title": "Zero"}),
    case("movie-id-2**63", "POST", "/movies", 422, r"body\.movie_id: Input should be less than or equal",
         json={"movie_id": 2**63, "title": "Big"}),
    case("movie-id-string", "POST", "/movies", 422, rf"body\.movie_id: {NOT_INT}",
         json={"movie_id": "900001", "title": "String id"}),
    case("movie-id-float", "POST", "/movies", 422, rf"body\.movie_id: {NOT_INT}",
         json={"movie_id": 900_001.0, "title": "Float id"}),
    case("movie-title-empty", "POST", "/movies", 422, r"body\.title: String should have at least 1 character",
         json={"movie_id": 900_001, "title": ""}),
    case("movie-title-too-long", "POST", "/movies", 422,
         r"body\.title: String should have at most 500 characters",
         json={"movie_id": 900_001, "title": "t" * 501}),
    case("movie-title-nul", "POST", "/movies", 422,
         r"body\.title: Value error, must not contain NUL characters",
         json={"movie_id": 900_001, "title": "a\x00b"}),
    case("movie-title-missing", "POST", "/movies", 422, r"body\.title: Field required",
         json={"movie_id": 900_001}),
    case("movie-year-out-of-range", "POST", "/movies", 422,
         r"body\.year: Input should be less than or equal to 9999",
         json={"movie_id": 900_001, "title": "Future", "year": 10_000}),
    case("movie-genre-with-bar", "POST", "/movies", 422, r"body\.genres\.0: String should match pattern",
         json={"movie_id": 900_001, "title": "Bar", "genres": ["Comedy|Drama"]}),
    case("movie-too-many-genres", "POST", "/movies", 422, r"body\.genres: List should have at most 50 items",
         json={"movie_id": 900_001, "title": "Many", "genres": [f"g{i}" for i in range(51)]}),
    case("movie-unknown-field", "POST", "/movies", 422, r"body\.rating: Extra inputs are not permitted",
         json={"movie_id": 900_001, "title": "Extra", "rating": 5}),
    case("movie-exists", "POST", "/movies", 409, r"^movie 1 already exists$",
         json={"movie_id": 1, "title": "Overwritten"}),
    case("movie-text-plain", "POST", "/movies", 415,
         r"Content-Type must be application/json \(got text/plain\)",
         content=raw('{"movie_id": 900001, "title": "Plain"}'), headers={"Content-Type": "text/plain"}),
    case("movie-10mb", "POST", "/movies", 413, BODY_CAP, headers=JSON_TYPE,
         content=lambda: b'{"movie_id": 900001, "title": "' + b"t" * TEN_MB + b'"}'),
    # GET /movies/{movie_id} and /movies/{movie_id}/similar
    case("movie-get-0", "GET", "/movies/0", 422,
         rf"path\.movie_id: Input should be greater than 0: {ID_RULE}"),
    case("movie-get-2**63", "GET", f"/movies/{2**63}", 422,
         r"path\.movie_id: Input should be less than or equal"),
    case("movie-get-float", "GET", "/movies/1.0", 422, rf"path\.movie_id: {NOT_INT}"),
    case("movie-get-sql", "GET", "/movies/1;DROP TABLE movies", 422, rf"path\.movie_id: {NOT_INT}"),
    case("movie-get-unknown", "GET", "/movies/999999", 404, r"^movie 999999 is not in the catalog$"),
    case("similar-k-0", "GET", "/movies/1/similar?k=0", 422,
         r"query\.k: Input should be greater than or equal to 1"),
    case("similar-k-10**9", "GET", "/movies/1/similar?k=1000000000", 422,
         r"query\.k: Input should be less than or equal to 1000"),
    case("similar-k-float", "GET", "/movies/1/similar?k=1.5", 422, rf"query\.k: {NOT_INT}"),
    case("similar-id-negative", "GET", "/movies/-1/similar", 422,
         r"path\.movie_id: Input should be greater than 0"),
    case("similar-not-in-model", "GET", "/movies/41/similar", 404,
         r"^movie 41 has no embedding in model \S+ \(added after training\)$"),
    case("similar-unknown", "GET", "/movies/999999/similar", 404, r"^movie 999999 is not in the catalog$"),
    # GET /predict/{user_id}/{movie_id}
    case("predict-user-0", "GET", "/predict/0/1", 422,
         rf"path\.user_id: Input should be greater than 0: {ID_RULE}"),
    case("predict-movie-negative", "GET", "/predict/1/-1", 422,
         r"path\.movie_id: Input should be greater than 0"),
    case("predict-user-2**63", "GET", f"/predict/{2**63}/1", 422,
         rf"path\.user_id: Input should be less than or equal to {MAX_ID}"),
    case("predict-user-string", "GET", "/predict/me/1", 422, rf"path\.user_id: {NOT_INT}"),
    case("predict-movie-float", "GET", "/predict/1/1.0", 422, rf"path\.movie_id: {NOT_INT}"),
    case("predict-user-sql", "GET", "/predict/1 OR 1=1/1", 422, rf"path\.user_id: {NOT_INT}"),
    case("predict-explain-not-bool", "GET", "/predict/1/1?explain=maybe", 422,
         r"query\.explain: Input should be a valid boolean"),
    case("predict-movie-unknown", "GET", "/predict/1/999999", 404, r"^movie 999999 is not in the catalog$"),
    # POST /predict/pairs
    case("pairs-id-0", "POST", "/predict/pairs", 422,
         rf"body\.pairs\.0\.0: Input should be greater than 0: {ID_RULE}", json={"pairs": [[0, 1]]}),
    case("pairs-id-2**63", "POST", "/predict/pairs", 422,
         r"body\.pairs\.0\.1: Input should be less than or equal", json={"pairs": [[1, 2**63]]}),
    case("pairs-id-float", "POST", "/predict/pairs", 422, rf"body\.pairs\.0\.0: {NOT_INT}",
         json={"pairs": [[1.5, 1]]}),
    case("pairs-id-nan", "POST", "/predict/pairs", 422, rf"body\.pairs\.0\.1: {NOT_INT}",
         content=raw('{"pairs": [[1, NaN]]}'), headers=JSON_TYPE),
    case("pairs-short-pair", "POST", "/predict/pairs", 422, r"body\.pairs\.0\.1: Field required",
         json={"pairs": [[1]]}),
    case("pairs-long-pair", "POST", "/predict/pairs", 422,
         r"body\.pairs\.0: Tuple should have at most 2 items", json={"pairs": [[1, 1, 1]]}),
    case("pairs-over-cap", "POST", "/predict/pairs", 413,
         r"^3 pairs in one request; the cap is 2 \(MAX_PAIRS\)$",
         json={"pairs": [[1, 1]] * 3}, settings={"max_pairs": 2}),
    case("pairs-over-default-cap", "POST", "/predict/pairs", 413,
         r"^100,001 pairs in one request; the cap is 100,000 \(MAX_PAIRS\)$",
         json={"pairs": [[1, 1]] * 100_001}),
    case("pairs-10mb", "POST", "/predict/pairs", 413, BODY_CAP, content=ten_mb_pairs, headers=JSON_TYPE),
    case("pairs-unknown-movie", "POST", "/predict/pairs", 404, r"^movie 999999 is not in the catalog$",
         json={"pairs": [[1, 1], [1, 999_999]]}),
    case("pairs-missing", "POST", "/predict/pairs", 422, r"body\.pairs: Field required", json={}),
    # POST /predict/matrix
    case("matrix-id-0", "POST", "/predict/matrix", 422,
         rf"body\.user_ids\.1: Input should be greater than 0: {ID_RULE}", json={"user_ids": [1, 0]}),
    case("matrix-id-string", "POST", "/predict/matrix", 422, rf"body\.movie_ids\.0: {NOT_INT}",
         json={"movie_ids": ["1"]}),
    case("matrix-not-a-list", "POST", "/predict/matrix", 422, r"body\.user_ids: Input should be a valid list",
         json={"user_ids": {"a": 1}}),
    case("matrix-unknown-field", "POST", "/predict/matrix", 422,
         r"body\.users: Extra inputs are not permitted",
         json={"users": [1]}),
    case("matrix-over-json-cap", "POST", "/predict/matrix", 413,
         r"2 x 3 = 6 cells, over the JSON cap of 5 \(MAX_MATRIX_CELLS\); send Accept: application/x-npy",
         json={"user_ids": [1, 2], "movie_ids": [1, 2, 3]}, settings={"max_matrix_cells": 5}),
    case("matrix-over-default-json-cap", "POST", "/predict/matrix", 413,
         r"1,001 x 1,000 = 1,001,000 cells, over the JSON cap of 1,000,000 \(MAX_MATRIX_CELLS\)",
         json={"user_ids": list(range(1, 1002)), "movie_ids": list(range(1, 1001))}),
    case("matrix-over-npy-cap", "POST", "/predict/matrix", 413,
         r"22,361 x 22,361 = 500,014,321 cells, over the \.npy cap of 500,000,000",
         json={"user_ids": list(range(1, 22_362)), "movie_ids": list(range(1, 22_362))},
         headers={"Accept": "application/x-npy"}),
    case("matrix-unknown-movie", "POST", "/predict/matrix", 404, r"^movie 999999 is not in the catalog$",
         json={"user_ids": [1], "movie_ids": [999_999]}),
    case("matrix-10mb", "POST", "/predict/matrix", 413, BODY_CAP, headers=JSON_TYPE,
         content=lambda: padded_to_ten_mb(b'{"user_ids": [1]', b"}")),
    # GET /recommendations/{user_id}
    case("recommend-k-0", "GET", "/recommendations/1?k=0", 422,
         r"query\.k: Input should be greater than or equal to 1"),
    case("recommend-k-10**9", "GET", "/recommendations/1?k=1000000000", 422,
         r"query\.k: Input should be less than or equal to 1000"),
    case("recommend-k-negative", "GET", "/recommendations/1?k=-5", 422,
         r"query\.k: Input should be greater than or equal to 1"),
    case("recommend-k-float", "GET", "/recommendations/1?k=2.5", 422, rf"query\.k: {NOT_INT}"),
    case("recommend-k-sql", "GET", "/recommendations/1?k=10 OR 1=1", 422, rf"query\.k: {NOT_INT}"),
    case("recommend-user-0", "GET", "/recommendations/0", 422,
         rf"path\.user_id: Input should be greater than 0: {ID_RULE}"),
    case("recommend-user-2**63", "GET", f"/recommendations/{2**63}", 422,
         r"path\.user_id: Input should be less than or equal"),
    case("recommend-user-sql", "GET", "/recommendations/1;DROP TABLE users", 422,
         rf"path\.user_id: {NOT_INT}"),
    case("recommend-exclude-not-bool", "GET", "/recommendations/1?exclude_rated=2", 422,
         r"query\.exclude_rated: Input should be a valid boolean"),
    case("recommend-genre-too-long", "GET", "/recommendations/1?genre=" + "g" * 65, 422,
         r"query\.genre: String should have at most 64 characters"),
    # issue 15: work bounded before validation, every input refused without a 500
    case("pairs-millions-of-bad-ids", "POST", "/predict/pairs", 413,
         r"^the body lists more than 100,000 pairs \(MAX_PAIRS\)$", headers=JSON_TYPE,
         content=lambda: b'{"pairs": [' + b"[0,0]," * 999_999 + b"[0,0]]}"),
    case("pairs-all-bad-under-the-cap", "POST", "/predict/pairs", 422,
         rf"^body\.pairs\.0\.0: .* than 0: {ID_RULE} \(greater_than\) \| body\.pairs\.0\.1: [^|]*$",
         json={"pairs": [[0, 0]] * 100_000}),
    case("matrix-millions-of-bad-ids", "POST", "/predict/matrix", 413,
         r"^the body lists more than 100,000 user ids and as many movie ids \(MAX_MATRIX_IDS\)$",
         headers=JSON_TYPE,
         content=lambda: b'{"user_ids": [' + b"0," * 3_499_999 + b"0]}"),
    case("matrix-npy-two-million-rows", "POST", "/predict/matrix", 413,
         r"^the body lists more than 100,000 user ids and as many movie ids \(MAX_MATRIX_IDS\)$",
         headers=JSON_TYPE | {"Accept": "application/x-npy"},
         content=lambda: b'{"movie_ids": [1], "user_ids": [' + b"1," * 1_999_999 + b"1]}"),
    case("matrix-ids-over-cap", "POST", "/predict/matrix", 413,
         r"^150,000 movie ids in one request; the cap is 100,000 \(MAX_MATRIX_IDS\)$",
         json={"user_ids": [1], "movie_ids": [1] * 150_000}),
    case("batch-every-row-bad", "POST", "/ratings/batch", 422,
         r"^body\.ratings\.0\.user_id: .*( \| [^|]+){19} \| body: and [0-9,]+ more errors not shown",
         json={"ratings": [{"user_id": 0, "movie_id": 0, "rating": "x"}] * 10_000}),
    case("rated-at-past-year-9999", "POST", "/ratings", 422,
         r"body\.rated_at: Value error, rated_at is outside the range of dates",
         json=rating(rated_at="9999-12-31T23:59:59-14:00")),
    case("rated-at-before-year-1", "POST", "/ratings", 422,
         r"body\.rated_at: Value error, rated_at is outside the range of dates",
         json=rating(rated_at="0001-01-01T00:00:00+14:00")),
    case("rated-at-in-a-batch", "POST", "/ratings/batch", 422,
         r"body\.ratings\.1\.rated_at: Value error, rated_at is outside the range of dates",
         json={"ratings": [rating(), rating(movie_id=2, rated_at="9999-12-31T23:59:59-14:00")]}),
    case("rated-at-far-future", "POST", "/ratings", 422,
         r"body\.rated_at: Value error, rated_at must lie between 1970-01-01 and a day from now",
         json=rating(rated_at="2100-01-01T00:00:00Z")),
    case("rated-at-before-1970", "POST", "/ratings", 422,
         r"body\.rated_at: Value error, rated_at must lie between 1970-01-01",
         json=rating(rated_at="1969-12-31T23:59:59Z")),
    case("path-id-5000-digits", "GET", "/predict/" + "1" * 5000 + "/1", 422,
         r"path\.user_id: Unable to parse input string as an integer, exceeded maximum size"),
    case("recommend-k-5000-digits", "GET", "/recommendations/1?k=" + "1" * 5000, 422,
         r"query\.k: Unable to parse input string as an integer, exceeded maximum size"),
    case("delete-id-5000-digits", "DELETE", "/ratings/" + "9" * 5000 + "/1", 422,
         r"path\.user_id: Unable to parse input string as an integer, exceeded maximum size"),
    case("json-integer-5000-digits", "POST", "/ratings", 422,
         r"^body: the body holds an integer too long to read \(Exceeds the limit \(4300 digits\)",
         content=raw('{"user_id": ' + "1" * 5000 + ', "movie_id": 1, "rating": 4}'), headers=JSON_TYPE),
    case("json-nested-deeply", "POST", "/ratings/batch", 422,
         r"^body: the body is not usable JSON: it is nested too deeply",
         content=raw("[" * 100_000 + "]" * 100_000), headers=JSON_TYPE),
    case("rating-nearly-on-scale", "POST", "/ratings", 422,
         rf"body\.rating: rating 4\.499999999 is not on the scale; {SCALE}", json=rating(rating=4.499999999)),
    case("movie-title-blank", "POST", "/movies", 422, r"body\.title: Value error, must not be blank",
         json={"movie_id": 900_001, "title": "   \t "}),
    case("movie-genre-blank", "POST", "/movies", 422, r"body\.genres\.0: Value error, must not be blank",
         json={"movie_id": 900_001, "title": "Blank genre", "genres": [" "]}),
    case("movie-year-string", "POST", "/movies", 422, r"body\.year: Input should be a valid integer",
         json={"movie_id": 900_001, "title": "Year as text", "year": "1995"}),
    # writes when API_KEY is set
    *with_api_key("rating", "POST", "/ratings", GOOD_RATING),
    *with_api_key("batch", "POST", "/ratings/batch", {"ratings": [GOOD_RATING]}),
    *with_api_key("delete", "DELETE", f"/ratings/1/{RATED}", None),
    *with_api_key("movie", "POST", "/movies", {"movie_id": 900_001, "title": "Keyed"}),
]
# fmt: on

ENDPOINTS_WITH_INPUT = {
    ("POST", "/ratings"),
    ("POST", "/ratings/batch"),
    ("DELETE", "/ratings/{user_id}/{movie_id}"),
    ("GET", "/users/{user_id}/ratings"),
    ("GET", "/movies"),
    ("POST", "/movies"),
    ("GET", "/movies/{movie_id}"),
    ("GET", "/movies/{movie_id}/similar"),
    ("GET", "/predict/{user_id}/{movie_id}"),
    ("POST", "/predict/pairs"),
    ("POST", "/predict/matrix"),
    ("GET", "/recommendations/{user_id}"),
}


def refusal_problem(hostile: Hostile, client: TestClient, engine: Engine) -> str | None:
    """What is wrong with the app's answer to `hostile`; None when it is refused as it must be:
    the status, a JSON `detail` matching the message, and every table as it was."""
    before = snapshot(engine)
    response = hostile.send(client)
    if response.status_code != hostile.status:
        return f"status {response.status_code}, expected {hostile.status}: {response.text[:300]}"
    if response.headers.get("content-type") != "application/json":
        return f"content type {response.headers.get('content-type')!r}: {response.text[:300]}"
    message = detail_text(response.json())
    if not re.search(hostile.message, message):
        return f"detail {message!r} does not match {hostile.message!r}"
    if snapshot(engine) != before:
        return "it changed the tables"
    return None


def test_the_table_covers_every_endpoint_that_takes_input() -> None:
    routes = [
        route
        for module in (movies, predict, ratings, recommendations)
        for route in module.router.routes
        if isinstance(route, APIRoute)
    ]
    covered = {
        (hostile.method, route.path)
        for hostile in HOSTILE
        for route in routes
        if hostile.method in route.methods and route.path_regex.match(hostile.path.partition("?")[0])
    }
    assert covered == ENDPOINTS_WITH_INPUT
    assert len({hostile.id for hostile in HOSTILE}) == len(HOSTILE)
    assert all(400 <= hostile.status < 500 for hostile in HOSTILE)


def test_hostile_requests_are_a_4xx_naming_the_problem_and_store_nothing(
    make_client: ClientMaker, engine: Engine
) -> None:
    """Every row of HOSTILE against this test's database, through one app per distinct settings
    (an app and a database per row would take minutes); every failing row is listed by id."""
    clients: dict[str, TestClient] = {}
    failures = []
    for hostile in HOSTILE:
        key = json.dumps(hostile.settings, sort_keys=True)
        if key not in clients:
            clients[key] = make_client(**hostile.settings)
        problem = refusal_problem(hostile, clients[key], engine)
        if problem is not None:
            failures.append(f"{hostile.id} ({hostile.method} {hostile.path[:80]}): {problem}")
    assert not failures, f"{len(failures)} of {len(HOSTILE)} hostile requests:\n" + "\n".join(failures)


# --- legitimate requests that look hostile ---------------------------------------------------------------

LOOKS_HOSTILE: list[tuple[str, str, dict[str, Any], int]] = [
    ("search-accented", "/movies", {"search": "Amélie"}, 0),
    ("search-cjk", "/movies", {"search": "東京物語"}, 0),
    ("search-emoji", "/movies", {"search": "🎬🍿"}, 0),
    ("search-combining-mark", "/movies", {"search": "Movie\u0301 4"}, 0),
    ("search-right-to-left", "/movies", {"search": "\u202eMovie 4"}, 0),
    ("search-sql-or", "/movies", {"search": "' OR '1'='1"}, 0),
    ("search-sql-drop", "/movies", {"search": "'; DROP TABLE movies; --"}, 0),
    ("search-sql-delete", "/movies", {"search": "Robert'); DELETE FROM ratings;--"}, 0),
    ("search-sql-union", "/movies", {"search": "x' UNION SELECT id, title FROM movies --"}, 0),
    ("search-like-percent", "/movies", {"search": "%"}, 0),
    ("search-like-underscore", "/movies", {"search": "_"}, 0),
    ("search-backslash", "/movies", {"search": "\\"}, 0),
    ("genre-sql-or", "/movies", {"genre": "Comedy' OR '1'='1"}, 0),
    ("genre-cyrillic", "/movies", {"genre": "Комедия"}, 0),
    ("recommend-genre-sql", "/recommendations/1", {"genre": "' OR 1=1 --"}, 0),
    ("recommend-genre-unicode", "/recommendations/1", {"genre": "ドラマ"}, 0),
    # controls: the same requests find what is there, so a 0 above means "no match", not "broken"
    ("control-search", "/movies", {"search": "MOVIE 4"}, 2),
    ("control-genre", "/movies", {"genre": "film-noir"}, 16),
    ("control-recommend-genre", "/recommendations/1", {"genre": "film-noir", "k": 3}, 3),
]
"""(id, path, query, how many movies it finds): Unicode and SQL-looking text in searches and
filters is a legitimate query, searched for literally."""


def found(path: str, body: dict[str, Any]) -> int:
    return body["total"] if path == "/movies" else len(body["items"])


def test_unicode_and_sql_looking_text_is_searched_for_literally(client: TestClient, engine: Engine) -> None:
    before = snapshot(engine)
    answers: dict[str, int | str] = {}
    for case_id, path, params, _ in LOOKS_HOSTILE:
        response = client.get(path, params=params)
        answers[case_id] = found(path, response.json()) if response.status_code == 200 else response.text
    assert answers == {case_id: expected for case_id, _, _, expected in LOOKS_HOSTILE}
    assert snapshot(engine) == before


def test_sql_looking_text_is_stored_verbatim(client: TestClient, engine: Engine) -> None:
    """The one write of this file: text shaped like SQL goes in and comes out as data, and the
    snapshot sees a stored row (so "nothing stored" above can fail)."""
    title = 'Robert\'); DROP TABLE movies;-- "quoted" 100% _done_ \\ 東京'
    genres = ["'; DELETE FROM ratings; --", "Drama"]
    before = snapshot(engine)
    created = client.post("/movies", json={"movie_id": 900_001, "title": title, "genres": genres})
    assert created.status_code == 201, created.text
    after = snapshot(engine)
    assert after["ratings"] == before["ratings"] and after["users"] == before["users"]
    assert sorted(set(after["movies"]) - set(before["movies"])) == [(900_001, title, None, "|".join(genres))]
    matched = client.get("/movies", params={"search": "DROP TABLE movies;--"}).json()
    assert [(m["movie_id"], m["title"], m["genres"]) for m in matched["items"]] == [(900_001, title, genres)]
    assert client.get("/movies", params={"genre": genres[0]}).json()["total"] == 1
