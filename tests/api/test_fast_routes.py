"""The fast routes (app.api.fast_routes) answer exactly as the same routes through FastAPI's
router: the same status, headers that matter and JSON, for good requests and bad ones."""

from __future__ import annotations

from typing import Annotated

import pytest
from api_support import ClientMaker, Data
from fastapi import APIRouter, Depends, Query
from fastapi.testclient import TestClient

from app.api.fast_routes import FastRoutes

KEY = "fast-routes-key"
AT = "2024-05-01T12:00:00Z"


def answer(client: TestClient, method: str, path: str, **kwargs: object) -> tuple[int, object, str | None]:
    response = client.request(method, path, **kwargs)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body, response.headers.get("content-type")


@pytest.fixture
def clients(make_client: ClientMaker) -> tuple[TestClient, TestClient]:
    return make_client(api_key=KEY, fast_routes=True), make_client(api_key=KEY, fast_routes=False)


def test_gets_answer_as_through_the_router(clients: tuple[TestClient, TestClient], data: Data) -> None:
    fast, plain = clients
    user, movie = int(data.users[0]), int(data.movies[0])
    paths = [
        f"/predict/{user}/{movie}",
        f"/predict/{user}/999999",
        "/predict/0/1",
        "/predict/1.0/1",
        "/predict/+1/1",
        f"/predict/{2**63}/1",
        f"/recommendations/{user}",
        f"/recommendations/{user}?k=3&genre=comedy",
        f"/recommendations/{user}?k=3&k=4",
        f"/recommendations/{user}?k=0",
        f"/recommendations/{user}?k=abc&exclude_rated=maybe",
        f"/recommendations/{user}?genre=%20Drama&k=2",
        f"/recommendations/{user}?k",
        "/recommendations/987654321?k=2",
    ]
    for path in paths:
        assert answer(fast, "GET", path) == answer(plain, "GET", path), path


def test_post_rating_answers_as_through_the_router(
    clients: tuple[TestClient, TestClient], data: Data
) -> None:
    """The same cases on each app, each app rating for a user of its own (so that both meet the
    same stored state: the second post of a pair replaces it, 200), the user's id then masked."""
    movie = int(data.movies[0])
    keyed = {"X-API-Key": KEY}
    json_body = {"Content-Type": "application/json"}

    def cases(user: int) -> list[tuple[dict, dict]]:
        good = {"user_id": user, "movie_id": movie, "rating": 4.5, "rated_at": AT}
        return [
            ({"json": good}, {}),  # no key: 401
            ({"json": good}, {"X-API-Key": "wrong"}),  # 403
            ({"json": good}, keyed),  # 201
            ({"json": {**good, "rating": 3.0}}, keyed),  # the same pair again: 200
            ({"json": {**good, "movie_id": 99999999}}, keyed),  # not in the catalog: 404
            ({"json": {**good, "rating": 4.2}}, keyed),  # off the scale
            ({"json": {**good, "rating": "4.5x"}}, keyed),
            ({"json": {**good, "user_id": 0, "movie_id": -1}}, keyed),
            ({"json": {"user_id": user}}, keyed),
            ({"json": [1, 2]}, keyed),
            ({"json": None}, keyed),
            ({"content": b"{not json", "headers": json_body}, keyed),
            ({"content": b"", "headers": json_body}, keyed),
            ({"content": b"\xff\xfe", "headers": json_body}, keyed),
            ({"content": b"{}", "headers": {"Content-Type": "text/plain"}}, keyed),
            ({"content": b"{not json", "headers": json_body}, {}),  # the 422 comes before the 401
        ]

    def answers(client: TestClient, user: int) -> list[str]:
        seen = []
        for request, headers in cases(user):
            sent = {**request.pop("headers", {}), **headers}  # type: ignore[dict-item]
            seen.append(
                repr(answer(client, "POST", "/ratings", headers=sent, **request)).replace(str(user), "U")
            )
        return seen

    fast, plain = clients
    got, expected = answers(fast, 424242), answers(plain, 525252)
    assert got == expected
    assert [a.split(",")[0] for a in got[:5]] == ["(401", "(403", "(201", "(200", "(404"]


def test_only_routes_it_can_run_are_taken() -> None:
    router = APIRouter()

    async def needs_query_dependency(k: Annotated[int, Query()] = 1) -> None:
        return None

    @router.get("/a", dependencies=[Depends(needs_query_dependency)])
    async def with_query_dependency() -> dict:
        return {}

    @router.get("/b")
    async def with_unknown_parameter(thing: object) -> dict:
        return {}

    for endpoint in (with_query_dependency, with_unknown_parameter):
        with pytest.raises(ValueError):
            FastRoutes(None, [router], [endpoint])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="GET or POST"):
        FastRoutes(None, [router], [answer])  # type: ignore[arg-type]
