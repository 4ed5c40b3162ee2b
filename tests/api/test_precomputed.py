"""GET /recommendations from a RECOMMENDATIONS_TABLE (`dotrec recommend-all`): strategy precomputed
while the table was made from the serving model, live scoring otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from api_support import NEW_USER, ClientMaker, Data, add_version
from fastapi.testclient import TestClient

from app.data.training_set import TrainingSet
from app.ml.artifact import current_version_dir, load_artifact
from app.ml.predictor import Predictor
from app.ml.recommend_all import recommend_all

TABLE_K = 12


def write_table(
    models_dir: Path, data: Data, out: Path, k: int = TABLE_K, exclude: bool = True, **metadata: str
) -> Path:
    """recommend-all of the current model in `models_dir`, the test ratings left out unless not
    `exclude`; `metadata` overrides the file's key-value metadata."""
    predictor = Predictor(load_artifact(current_version_dir(models_dir)), popularity_weight=0.5)
    rated = (
        TrainingSet.from_arrays(data.users, data.movies, data.ratings, data.timestamps) if exclude else None
    )
    recommend_all(predictor, rated, k, out)
    if metadata:
        table = pq.read_table(out)
        merged = {key.decode(): value.decode() for key, value in table.schema.metadata.items()} | metadata
        pq.write_table(table.replace_schema_metadata(merged), out)
    return out


def ids(body: dict) -> list[int]:
    return [item["movie_id"] for item in body["items"]]


def live(client: TestClient, user_id: int, **params: object) -> dict:
    """The answer with the table set aside (live scoring)."""
    model = client.app.state.dotrec.store.current
    table, model.precomputed = model.precomputed, None
    try:
        return client.get(f"/recommendations/{user_id}", params=params).json()
    finally:
        model.precomputed = table


def test_table_serves_the_same_lists_as_live_scoring(
    make_client: ClientMaker, models_dir: Path, data: Data, tmp_path: Path
) -> None:
    path = write_table(models_dir, data, tmp_path / "recs.parquet")
    client = make_client(recommendations_table=path)
    model = client.app.state.dotrec.store.current

    described = client.get("/model").json()["recommendations_table"]
    assert described["path"] == path.name and described["users"] == model.predictor.n_users
    assert described["k"] == TABLE_K and described["rated_excluded"] is True
    assert datetime.fromisoformat(described["created_at"]) >= datetime.fromisoformat(
        client.get("/model").json()["created_at"]
    )

    genre_answered = 0
    for user_id in model.predictor.user_ids.tolist():  # recommend-all agrees with the API for every user
        for params in ({"k": 5}, {"k": TABLE_K}, {"k": 3, "genre": "drama"}):
            body = client.get(f"/recommendations/{user_id}", params=params).json()
            if "genre" in params:  # a table list with fewer than 3 dramas is scored live
                genre_answered += body["strategy"] == "precomputed"
            else:
                assert body["strategy"] == "precomputed", (user_id, params)
            assert body["model_version"] == model.version
            expected = live(client, user_id, **params)
            assert expected["strategy"] == "model"
            assert ids(body) == ids(expected), (user_id, params)
            for got, want in zip(body["items"], expected["items"], strict=True):
                assert got["title"] == want["title"]
                assert got["predicted_rating"] == pytest.approx(want["predicted_rating"], abs=1e-4)
                assert got["score"] == pytest.approx(want["score"], abs=1e-4)
            assert not set(ids(body)) & set(data.rated_by(user_id))
            if "genre" in params:
                assert all("Drama" in data.genres_of(m) for m in ids(body))

    assert genre_answered >= model.predictor.n_users // 2, "most genre lists come from the table"

    # more than the table holds, or filters leaving fewer than k: scored live
    assert client.get("/recommendations/1", params={"k": TABLE_K + 1}).json()["strategy"] == "model"
    sparse = client.get("/recommendations/1", params={"k": 10, "genre": "Film-Noir"}).json()
    assert sparse["strategy"] == "model" and ids(sparse) == ids(live(client, 1, k=10, genre="Film-Noir"))
    # the table left rated movies out, so it cannot answer exclude_rated=false
    with_rated = client.get("/recommendations/1", params={"exclude_rated": "false"}).json()
    assert with_rated["strategy"] == "model"
    # users the table does not have are scored as before
    assert client.get(f"/recommendations/{NEW_USER}").json()["strategy"] == "popular"


def test_a_rating_posted_after_the_table_is_left_out(
    make_client: ClientMaker, models_dir: Path, data: Data, tmp_path: Path
) -> None:
    client = make_client(recommendations_table=write_table(models_dir, data, tmp_path / "recs.parquet"))
    before = client.get("/recommendations/3", params={"k": 5}).json()
    assert before["strategy"] == "precomputed"
    best = ids(before)[0]
    stored = client.post("/ratings", json={"user_id": 3, "movie_id": best, "rating": 4})
    assert stored.status_code == 201

    after = client.get("/recommendations/3", params={"k": 5}).json()
    assert after["strategy"] == "precomputed"
    assert best not in ids(after) and ids(after)[:4] == ids(before)[1:]
    assert ids(after) == ids(live(client, 3, k=5))


def test_a_table_made_without_exclusions_leaves_rated_movies_out_now(
    make_client: ClientMaker, models_dir: Path, data: Data, tmp_path: Path
) -> None:
    path = write_table(models_dir, data, tmp_path / "recs.parquet", k=40, exclude=False)
    client = make_client(recommendations_table=path)
    assert client.get("/model").json()["recommendations_table"]["rated_excluded"] is False
    for params in ({"k": 5}, {"k": 40, "exclude_rated": "false"}):
        body = client.get("/recommendations/2", params=params).json()
        assert body["strategy"] == "precomputed", params
        assert ids(body) == ids(live(client, 2, **params)), params
    assert not set(ids(client.get("/recommendations/2", params={"k": 5}).json())) & set(data.rated_by(2))


@pytest.mark.parametrize(
    "spoil",
    ["other_version", "before_model", "corrupt", "not_parquet_metadata", "missing"],
)
def test_a_table_that_cannot_serve_is_ignored(
    make_client: ClientMaker, models_dir: Path, data: Data, tmp_path: Path, spoil: str
) -> None:
    path = tmp_path / "recs.parquet"
    if spoil == "other_version":
        write_table(models_dir, data, path, model_version="19990101T000000000000Z-elsewhere")
    elif spoil == "before_model":
        write_table(models_dir, data, path, created_at=(datetime.now(UTC) - timedelta(days=3650)).isoformat())
    elif spoil == "corrupt":
        write_table(models_dir, data, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif spoil == "not_parquet_metadata":
        write_table(models_dir, data, path, created_at="yesterday")
    client = make_client(recommendations_table=path)
    assert client.get("/ready").status_code == 200
    assert client.get("/model").json()["recommendations_table"] is None
    body = client.get("/recommendations/1", params={"k": 5}).json()
    assert body["strategy"] == "model" and len(body["items"]) == 5


def test_reload_picks_a_new_table_up(
    make_client: ClientMaker, models_dir: Path, data: Data, tmp_path: Path
) -> None:
    path = tmp_path / "recs.parquet"
    client = make_client(recommendations_table=path)  # no file yet
    assert client.get("/recommendations/1").json()["strategy"] == "model"

    write_table(models_dir, data, path)
    reloaded = client.post("/admin/reload")
    assert reloaded.status_code == 200 and reloaded.json()["reloaded"] is False  # same model
    first = client.get("/model").json()["recommendations_table"]
    assert first is not None and first["k"] == TABLE_K
    assert client.get("/recommendations/1").json()["strategy"] == "precomputed"

    # a rewritten table is read again; an unchanged one is kept as it is
    write_table(models_dir, data, path, k=20)
    client.post("/admin/reload")
    assert client.get("/model").json()["recommendations_table"]["k"] == 20
    table = client.app.state.dotrec.store.current.precomputed
    client.post("/admin/reload")
    assert client.app.state.dotrec.store.current.precomputed is table

    # a new model: the table of the old one no longer serves
    version = add_version(models_dir)
    assert client.post("/admin/reload").json()["version"] == version
    assert client.get("/model").json()["recommendations_table"] is None
    assert client.get("/recommendations/1").json()["strategy"] == "model"
    write_table(models_dir, data, path)
    client.post("/admin/reload")
    assert client.get("/model").json()["recommendations_table"]["users"] > 0
    assert client.get("/recommendations/1").json()["strategy"] == "precomputed"

    path.unlink()  # gone: back to live scoring
    client.post("/admin/reload")
    assert client.get("/model").json()["recommendations_table"] is None
    assert client.get("/recommendations/1").json()["strategy"] == "model"
