"""Property-based: any sequence of rating writes, batches and deletions leaves the database
exactly as a model of the acknowledged requests says (hypothesis)."""

from __future__ import annotations

import itertools

from api_support import ClientMaker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MOVIES = st.integers(1, 12)
HALF_STARS = st.sampled_from([0.5 * i for i in range(1, 11)])
OFF_SCALE = st.sampled_from([0.0, 0.25, 5.5, 7.0, -1.0])
USERS = st.integers(0, 2)  # offsets of this example's own users

write = st.tuples(st.just("write"), USERS, MOVIES, st.one_of(HALF_STARS, OFF_SCALE))
batch = st.tuples(
    st.just("batch"),
    st.lists(
        st.tuples(USERS, st.one_of(MOVIES, st.just(999_999)), st.one_of(HALF_STARS, OFF_SCALE)), max_size=6
    ),
)
delete = st.tuples(st.just("delete"), USERS, MOVIES)
OPERATIONS = st.lists(st.one_of(write, batch, delete), min_size=1, max_size=25)
EXAMPLE_USERS = itertools.count(700_000, 10)
"""Each example writes users of its own, so the examples need no clean database between them."""


def test_the_store_holds_what_was_acknowledged(make_client: ClientMaker) -> None:
    client = make_client()

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(OPERATIONS)
    def run(operations: list[tuple]) -> None:
        base = next(EXAMPLE_USERS)
        expected: dict[tuple[int, int], float] = {}
        for operation in operations:
            if operation[0] == "write":
                _, user, movie, value = operation
                response = client.post(
                    "/ratings", json={"user_id": base + user, "movie_id": movie, "rating": value}
                )
                if value * 2 == int(value * 2) and 0.5 <= value <= 5:
                    assert response.status_code == (200 if (user, movie) in expected else 201), response.text
                    expected[(user, movie)] = value
                else:
                    assert response.status_code == 422, response.text
            elif operation[0] == "batch":
                rows = operation[1]
                body = {"ratings": [{"user_id": base + u, "movie_id": m, "rating": r} for u, m, r in rows]}
                response = client.post("/ratings/batch", json=body)
                valid = all(0.5 <= r <= 5 and r * 2 == int(r * 2) for _, _, r in rows)
                known = all(m != 999_999 for _, m, _ in rows)
                if not rows or (valid and known):
                    assert response.status_code == 200, response.text
                    expected |= {(u, m): r for u, m, r in rows}  # the last of a pair wins
                else:
                    assert response.status_code in (404, 422), response.text  # all or nothing
            else:
                _, user, movie = operation
                response = client.delete(f"/ratings/{base + user}/{movie}")
                assert response.status_code == (204 if (user, movie) in expected else 404), response.text
                expected.pop((user, movie), None)
        stored = {}
        for user in range(3):
            page = client.get(f"/users/{base + user}/ratings", params={"limit": 1000}).json()
            assert page["total"] == len(page["items"])
            stored |= {(user, item["movie_id"]): item["rating"] for item in page["items"]}
        assert stored == expected

    run()
