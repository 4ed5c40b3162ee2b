"""GET /recommendations and the strategy transitions: popular -> fold_in -> (retrained) model."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from api_support import CATALOG_ONLY, NEW_USER, ClientMaker, Data, add_version, train_model
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app.db.rating_writes import upsert_rating
from app.db.reads import Reads
from app.ml import scoring
from app.serving.caches import CandidateCache, ListCache


def test_known_user_gets_best_first_unrated_movies(client: TestClient, data: Data) -> None:
    response = client.get("/recommendations/1", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    model = client.app.state.dotrec.store.current
    assert body["strategy"] == "model" and body["model_version"] == model.version
    items = body["items"]
    assert len(items) == 5
    rated = set(data.rated_by(1))
    assert not rated & {item["movie_id"] for item in items}
    assert all(item["movie_id"] not in CATALOG_ONLY for item in items)
    assert all(item["title"].startswith(f"Movie {item['movie_id']} ") for item in items)

    predictor = model.predictor
    row = predictor.users.row(1)
    ranking = predictor.ranking  # the ranking head decides the order: P[u] . Q[m]
    assert ranking is not None
    scores = ranking.movie_factors @ ranking.user_factors[row]
    scores[predictor.movies.rows(sorted(rated))] = -np.inf
    expected = predictor.movie_ids[np.argsort(-scores, kind="stable")[:5]].tolist()
    assert [item["movie_id"] for item in items] == expected
    listed = [item["score"] for item in items]
    assert listed == sorted(listed, reverse=True)
    for item in items:
        assert item["score"] == pytest.approx(float(scores[predictor.movies.row(item["movie_id"])]), abs=2e-6)
        single = client.get(f"/predict/1/{item['movie_id']}").json()["rating"]
        assert item["predicted_rating"] == pytest.approx(single, abs=2e-5)

    # the same lists when the cached candidates run short: a longer list replaces them, once
    model.n_candidates = 3
    model.candidates = CandidateCache()
    model.lists = ListCache()
    client.app.state.dotrec.answers.clear()
    assert client.get("/recommendations/1", params={"k": 5}).json() == body
    assert len(model.candidates) == 1
    longer = model.candidates.get(row)
    assert len(longer.rows) >= 5 + len(rated)
    client.app.state.dotrec.answers.clear()
    assert client.get("/recommendations/1", params={"k": 5}).json() == body
    assert model.candidates.get(row) is longer

    with_rated = client.get("/recommendations/1", params={"k": 100, "exclude_rated": "false"}).json()
    assert len(with_rated["items"]) == predictor.n_movies
    assert rated <= {item["movie_id"] for item in with_rated["items"]}


def test_genre_filter_and_parameter_errors(client: TestClient, data: Data) -> None:
    comedies = client.get("/recommendations/2", params={"genre": "comedy", "k": 50}).json()["items"]
    assert comedies
    assert all("Comedy" in data.genres_of(item["movie_id"]) for item in comedies)
    assert client.get("/recommendations/2", params={"genre": "Western"}).json()["items"] == []
    assert client.get(f"/recommendations/{NEW_USER}", params={"genre": "Western"}).json()["items"] == []
    popular_noir = client.get(f"/recommendations/{NEW_USER}", params={"genre": "FILM-NOIR", "k": 50}).json()
    assert popular_noir["items"]
    assert all("Film-Noir" in data.genres_of(item["movie_id"]) for item in popular_noir["items"])
    for params in (
        {"k": 0},
        {"k": 10**9},
        {"k": "ten"},
        {"k": -1},
        {"exclude_rated": "perhaps"},
        {"genre": "x" * 65},
    ):
        response = client.get("/recommendations/2", params=params)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["loc"][0] == "query"
    for path in ("/recommendations/0", "/recommendations/abc", f"/recommendations/{2**63}"):
        assert client.get(path).status_code == 422, path


def test_new_visitor_popular_then_fold_in_then_cache_invalidated(client: TestClient, data: Data) -> None:
    model = client.app.state.dotrec.store.current
    predictor = model.predictor

    visitor = client.get(f"/recommendations/{NEW_USER}", params={"k": 5}).json()
    assert visitor["strategy"] == "popular"
    popular_rows = np.argsort(-predictor.popular_scores(), kind="stable")[:5]
    assert [item["movie_id"] for item in visitor["items"]] == predictor.movie_ids[popular_rows].tolist()
    assert client.get(f"/predict/{NEW_USER}/1").json()["strategy"] == "baseline"

    posted = client.post("/ratings", json={"user_id": NEW_USER, "movie_id": 3, "rating": 5})
    assert posted.status_code == 201
    folded = client.get(f"/recommendations/{NEW_USER}", params={"k": 5}).json()
    assert folded["strategy"] == "fold_in"
    assert 3 not in {item["movie_id"] for item in folded["items"]}
    first = client.get(f"/predict/{NEW_USER}/1").json()
    assert first["strategy"] == "fold_in"
    expected = predictor.fold_in(predictor.movies.rows([3]), np.array([5.0], np.float32))
    score = float(predictor.movie_emb[predictor.movies.rows([1])[0]] @ expected.vector) + expected.bias
    score += float(predictor.movie_bias[predictor.movies.rows([1])[0]])
    served = scoring.served_ratings(np.array([score], np.float32), predictor.y_range, predictor.scale)
    assert first["rating"] == pytest.approx(float(served[0]), abs=2e-5)
    assert len(model.fold_cache) == 1

    client.post("/ratings", json={"user_id": NEW_USER, "movie_id": 4, "rating": 0.5})
    assert len(model.fold_cache) == 0  # dropped by the rating, not just outdated
    second = client.get(f"/predict/{NEW_USER}/1").json()
    assert second["strategy"] == "fold_in"
    assert second["rating"] != pytest.approx(first["rating"], abs=1e-4)

    hits = model.fold_cache.hits
    assert client.get(f"/predict/{NEW_USER}/1").json() == second
    assert model.fold_cache.hits == hits + 1

    # a rating stored by another process (another worker, an import) is seen at once too
    with Session(client.app.state.dotrec.engine) as session, session.begin():
        upsert_rating(session, NEW_USER, 5, 5.0, datetime.now(UTC))
    third = client.get(f"/predict/{NEW_USER}/1").json()
    assert third["rating"] != pytest.approx(second["rating"], abs=1e-4)
    listed = client.get(f"/recommendations/{NEW_USER}", params={"k": 50}).json()["items"]
    assert not {3, 4, 5} & {item["movie_id"] for item in listed}

    # a user whose only ratings are of movies the model lacks stays on the popular list
    client.post("/ratings", json={"user_id": NEW_USER + 2, "movie_id": CATALOG_ONLY[0], "rating": 4})
    outside = client.get(f"/recommendations/{NEW_USER + 2}").json()
    assert outside["strategy"] == "popular"
    assert client.get(f"/predict/{NEW_USER + 2}/1").json()["strategy"] == "baseline"


def test_similar_movies(client: TestClient) -> None:
    response = client.get("/movies/1/similar", params={"k": 4})
    assert response.status_code == 200
    body = response.json()
    items = body["items"]
    assert len(items) == 4 and 1 not in {item["movie_id"] for item in items}
    predictor = client.app.state.dotrec.store.current.predictor
    factors = predictor.ranking.movie_factors  # the head whose neighbours measured better
    rows, similarities = scoring.cosine_neighbours(
        factors, scoring.row_norms(factors), predictor.movies.row(1), 4
    )
    assert [item["movie_id"] for item in items] == predictor.movie_ids[rows].tolist()
    np.testing.assert_allclose([item["similarity"] for item in items], similarities, atol=1e-5)
    similarity = [item["similarity"] for item in items]
    assert similarity == sorted(similarity, reverse=True)

    assert client.get("/movies/424242/similar").status_code == 404
    not_in_model = client.get(f"/movies/{CATALOG_ONLY[0]}/similar")
    assert not_in_model.status_code == 404
    assert "no embedding" in not_in_model.json()["detail"]
    for params in ({"k": 0}, {"k": 1001}):
        assert client.get("/movies/1/similar", params=params).status_code == 422


def test_without_a_ranking_head_lists_rank_by_rating_and_popularity_weight(
    make_client: ClientMaker, data: Data, models_dir: Path
) -> None:
    train_model(data, models_dir, seed=1, objective="rating")  # an artifact as the first versions made
    client = make_client(popularity_weight=0.0)
    model = client.app.state.dotrec.store.current
    predictor = model.predictor
    assert predictor.ranking is None and not predictor.popularity_boost.any()
    row = int(predictor.users.rows([4])[0])
    ratings = predictor.matrix(np.array([row]), np.arange(predictor.n_movies))[0]
    ratings[predictor.movies.rows(sorted(data.rated_by(4)))] = -np.inf
    expected = predictor.movie_ids[np.argsort(-ratings, kind="stable")[:5]].tolist()
    items = client.get("/recommendations/4", params={"k": 5}).json()["items"]
    assert [item["movie_id"] for item in items] == expected
    assert [item["score"] for item in items] == [item["predicted_rating"] for item in items]
    weighted = make_client(popularity_weight=0.5).get("/recommendations/4", params={"k": 5}).json()["items"]
    assert [item["movie_id"] for item in weighted] != expected, "the prior moves popular movies up"


def test_a_failed_inline_read_is_retried_in_the_thread_pool(
    client: TestClient, data: Data, database_url: str
) -> None:
    reads = client.app.state.dotrec.reads
    assert reads.inline == database_url.startswith("sqlite"), "only SQLite reads on the event loop"
    if not reads.inline:
        return  # PostgreSQL reads always go through the thread pool: nothing to retry

    assert client.get("/recommendations/1").status_code == 200  # opens the inline connection
    cursor = reads._cursor

    class Busy:
        """The version check answers; the read itself finds the database locked."""

        def execute(self, sql: str, *args: object) -> object:
            if sql == "PRAGMA data_version":
                return cursor.execute(sql)
            raise sqlite3.OperationalError("database is locked")

    reads._cursor = Busy()
    items = client.get("/recommendations/2", params={"k": 50}).json()["items"]  # user 2: not kept yet
    assert not set(data.rated_by(2)) & {item["movie_id"] for item in items}
    assert reads._cursor is None  # dropped; the next read opens a fresh connection
    # the dropped connection's short busy timeout went with it: none is back in the pool,
    # whose connections (the writes') keep the full one
    engine = client.app.state.dotrec.engine
    connections = [engine.connect() for _ in range(engine.pool.checkedin() + 1)]
    try:
        assert {c.exec_driver_sql("PRAGMA busy_timeout").scalar() for c in connections} == {5000}
    finally:
        for connection in connections:
            connection.close()
    assert client.get(f"/predict/{NEW_USER}/1").json()["strategy"] == "baseline"
    assert reads._cursor is not None


def test_rated_movies_are_reread_after_any_commit(client: TestClient, data: Data, database_url: str) -> None:
    """Each user's rated movies (and finished lists) are kept while the ratings version stands
    still: SQLite's `PRAGMA data_version`, PostgreSQL's notifications; a rating committed by
    another process must be left out of the next list (on PostgreSQL once its notification is
    heard: within milliseconds)."""
    state = client.app.state.dotrec
    first = client.get("/recommendations/3", params={"k": 5}).json()["items"]
    unrated = next(m for m in (item["movie_id"] for item in first) if m not in data.rated_by(3))
    model = state.store.current
    version = wait_for_a_version(state.reads)
    client.get("/recommendations/3", params={"k": 5})  # kept under the version now current
    assert len(state.rated) >= 1
    cached = state.rated._cache.get((3, version))
    assert cached is not None and set(cached.tolist()) == set(data.rated_by(3))
    key = (model.predictor.users.row(3), "", version, model.view().revision)
    kept = model.lists.get(key)
    assert kept is not None and kept[0] == 5, "the finished list is kept, with the k it was made for"
    assert [item.model_dump() for item in kept[1]] == first
    assert client.get("/recommendations/3", params={"k": 5}).json()["items"] == first
    # a shorter list is the first items of the kept one; a longer one replaces it
    assert client.get("/recommendations/3", params={"k": 3}).json()["items"] == first[:3]
    assert model.lists.get(key)[0] == 5
    longer = client.get("/recommendations/3", params={"k": 8}).json()["items"]
    assert longer[:5] == first and model.lists.get(key)[0] == 8

    insert = (
        "import sqlalchemy as sa, sys; e = sa.create_engine(sys.argv[1]);"
        "c = e.connect(); c.exec_driver_sql("
        f"'INSERT INTO ratings (user_id, movie_id, rating, rated_at) VALUES (3, {unrated}, 4.5, "
        "1700000000)'); c.commit()"
    )
    url = database_url.replace("postgresql://", "postgresql+psycopg://")
    done = subprocess.run([sys.executable, "-c", insert, url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 2
    while state.reads.ratings_version() == version and time.monotonic() < deadline:
        time.sleep(0.005)  # PostgreSQL: the notification is on its way (SQLite: already moved)
    assert state.reads.ratings_version() != version
    after = client.get("/recommendations/3", params={"k": 5}).json()["items"]
    assert unrated not in {item["movie_id"] for item in after}


def test_finished_answers_are_kept_under_everything_they_depend_on(
    client: TestClient, data: Data, engine: Engine, models_dir: Path
) -> None:
    """A model user's answer is sent again, byte for byte, only while the ratings version, the
    catalog, the model, k, genre and exclude_rated are what it was made under."""
    state = client.app.state.dotrec
    wait_for_a_version(state.reads)
    asked = {"k": 4}
    first = client.get("/recommendations/5", params=asked)
    assert first.headers["content-type"] == "application/json"
    assert len(state.answers) == 1
    assert client.get("/recommendations/5", params=asked).content == first.content
    assert len(state.answers) == 1, "the same request is answered from the kept answer"
    items = first.json()["items"]

    shorter = client.get("/recommendations/5", params={"k": 2}).json()
    with_rated = client.get("/recommendations/5", params={"k": 4, "exclude_rated": "false"}).json()
    comedies = client.get("/recommendations/5", params={"k": 4, "genre": "Comedy"}).json()
    assert shorter["items"] == items[:2]
    assert set(data.rated_by(5)) & {item["movie_id"] for item in with_rated["items"]}
    assert all("Comedy" in data.genres_of(item["movie_id"]) for item in comedies["items"])
    assert len(state.answers) == 4, "each k, exclude_rated and genre is an answer of its own"

    # a rating committed: a new ratings version, so the rated movie leaves the list at once
    top = items[0]["movie_id"]
    assert client.post("/ratings", json={"user_id": 5, "movie_id": top, "rating": 1}).status_code == 201
    after = client.get("/recommendations/5", params=asked).json()["items"]
    assert top not in {item["movie_id"] for item in after} and after[0] == items[1]
    # ... but not a list that leaves nothing out: it depends on no rating
    assert client.get("/recommendations/5", params={"k": 4, "exclude_rated": "false"}).json() == with_rated

    # the catalog reloaded with a new title: a new catalog revision, so the new title is sent
    retitled = after[0]["movie_id"]
    with engine.begin() as connection:
        connection.execute(text("UPDATE movies SET title = 'Retitled' WHERE id = :m"), {"m": retitled})
    assert client.post("/admin/reload").status_code == 200
    listed = client.get("/recommendations/5", params=asked).json()["items"]
    assert listed[0]["movie_id"] == retitled and listed[0]["title"] == "Retitled"

    # a new model: its own answers
    newer = add_version(models_dir)
    assert client.post("/admin/reload").json()["version"] == newer
    swapped = client.get("/recommendations/5", params=asked).json()
    assert swapped["model_version"] == newer
    ratings = [item["predicted_rating"] for item in swapped["items"]]
    assert ratings != [item["predicted_rating"] for item in listed]


def wait_for_a_version(reads: Reads, timeout_s: float = 5) -> object:
    """The ratings version once there is one (PostgreSQL's listener connects in the background)."""
    deadline = time.monotonic() + timeout_s
    while (version := reads.ratings_version()) is None:
        assert time.monotonic() < deadline, "no ratings version: the listener never connected"
        time.sleep(0.01)
    return version


def test_postgresql_lists_are_reread_while_the_listener_is_down(
    make_client: ClientMaker, data: Data, database_url: str
) -> None:
    """Without its notifications nothing read can be trusted to be current: every request reads."""
    client = make_client()
    reads = client.app.state.dotrec.reads
    if reads.listener is None:
        return  # SQLite has its version on every read
    wait_for_a_version(reads)
    client.portal.call(reads.listener.close)  # the listener's connection is gone
    assert reads.ratings_version() is None
    for _ in range(2):
        items = client.get("/recommendations/4", params={"k": 5}).json()["items"]
        assert not set(data.rated_by(4)) & {item["movie_id"] for item in items}
    assert len(client.app.state.dotrec.rated) == 0, "nothing kept without a version"


def test_a_user_who_rated_after_training_is_folded_into_the_ranking_head(
    client: TestClient, data: Data
) -> None:
    model = client.app.state.dotrec.store.current
    predictor = model.predictor
    rated = {3: 5.0, 7: 4.0, 11: 2.0}
    for movie_id, rating in rated.items():
        assert (
            client.post(
                "/ratings", json={"user_id": NEW_USER, "movie_id": movie_id, "rating": rating}
            ).status_code
            == 201
        )
    body = client.get(f"/recommendations/{NEW_USER}", params={"k": 8}).json()
    assert body["strategy"] == "fold_in"
    rows = predictor.movies.rows(sorted(rated))
    vector = predictor.ranking.fold_in(rows, np.array([rated[m] for m in sorted(rated)], np.float32))
    scores = predictor.ranking.movie_factors @ vector
    scores[rows] = -np.inf
    expected = predictor.movie_ids[np.argsort(-scores, kind="stable")[:8]].tolist()
    assert [item["movie_id"] for item in body["items"]] == expected
    for item in body["items"]:
        assert item["score"] == pytest.approx(float(scores[predictor.movies.row(item["movie_id"])]), abs=2e-6)
        single = client.get(f"/predict/{NEW_USER}/{item['movie_id']}").json()
        assert single["strategy"] == "fold_in"
        assert item["predicted_rating"] == pytest.approx(single["rating"], abs=2e-5)
