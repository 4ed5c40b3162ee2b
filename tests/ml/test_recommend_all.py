"""Batch top-N: the parquet file holds, for every user, the list the predictor gives one user."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy.orm import Session

from app.config import Settings
from app.data.training_set import TrainingSet
from app.db.rating_writes import upsert_ratings
from app.db.repository import RatingRow, create_movie
from app.db.schema import upgrade
from app.db.session import make_engine
from app.jobs.recommend_all import run_recommend_all
from app.jobs.training import train_and_save
from app.ml.artifact import ArtifactError, load_artifact
from app.ml.predictor import Predictor
from app.ml.recommend_all import recommend_all
from app.ml.recommendations_table import SCHEMA, load_recommendations
from app.ml.train import TrainConfig

K = 10


def id_of_user(row: np.ndarray | int) -> np.ndarray:
    return np.asarray(row) * 3 + 7


def id_of_movie(row: np.ndarray | int) -> np.ndarray:
    return np.asarray(row) * 5 + 2


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Settings, Predictor, TrainingSet]:
    """A tiny trained model (60 users x 40 movies, sparse ids) and its training set."""
    rng = np.random.default_rng(0)
    n = 1500
    users, movies = rng.integers(0, 60, n), rng.integers(0, 40, n)
    users[:60], movies[:40] = np.arange(60), np.arange(40)  # every user and movie at least once
    data = TrainingSet.from_arrays(id_of_user(users), id_of_movie(movies), rng.integers(1, 11, n) / 2)
    settings = Settings(_env_file=None, models_dir=tmp_path_factory.mktemp("models"))
    version = train_and_save(data, settings, TrainConfig(n_factors=4, epochs=2))
    return settings, Predictor(load_artifact(version.path)), data


@pytest.fixture(scope="module")
def rated(model) -> TrainingSet:
    """What the database says was rated: coded with its own rows, unlike the model's.

    User row 1 rated every movie but 3, user row 2 every movie; one user and one movie the
    model does not know also have ratings (ignored).
    """
    _, predictor, data = model
    trained_users, trained_movies = data.user_ids[data.user_rows], data.movie_ids[data.movie_rows]
    others = ~np.isin(trained_users, predictor.user_ids[[1, 2]])
    keep = np.random.default_rng(1).random(len(data)) < 0.8  # not the training set itself
    users, movies = [trained_users[others & keep]], [trained_movies[others & keep]]
    for row, skip in ((1, 3), (2, 0)):
        users.append(np.full(predictor.n_movies - skip, predictor.user_ids[row]))
        movies.append(predictor.movie_ids[skip:])
    users.append(np.array([10**9, predictor.user_ids[5]]))
    movies.append(np.array([predictor.movie_ids[0], 10**9]))
    pairs = np.unique(np.column_stack([np.concatenate(users), np.concatenate(movies)]), axis=0)
    return TrainingSet.from_arrays(pairs[:, 0], pairs[:, 1], np.full(len(pairs), 3.0, np.float32))


def rated_rows_of(predictor: Predictor, rated: TrainingSet, user_id: int) -> np.ndarray:
    mine = rated.user_ids[rated.user_rows] == user_id
    rows = predictor.movies.rows(rated.movie_ids[rated.movie_rows[mine]])
    return rows[rows >= 0]


def read(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def test_every_users_list_is_the_predictors_top_n(model, rated, tmp_path) -> None:
    _, predictor, _ = model
    out = recommend_all(predictor, rated, K, tmp_path / "top.parquet", chunk_users=7)
    columns = read(out)
    exact = 0
    for row in range(predictor.n_users):
        user_id = int(predictor.user_ids[row])
        excluded = rated_rows_of(predictor, rated, user_id)
        ratings = predictor.matrix(np.array([row]))[0]
        scores = predictor.user_list_scores(np.array([row]))[0]
        allowed = scores.copy()
        allowed[excluded] = -np.inf
        expected = np.argsort(-allowed, kind="stable")[: min(K, int(np.isfinite(allowed).sum()))]
        mine = columns["user_id"] == user_id
        got = predictor.movies.rows(columns["movie_id"][mine])
        assert len(got) == len(expected), user_id
        assert (got >= 0).all() and not np.isin(got, excluded).any() and len(set(got)) == len(got)
        np.testing.assert_array_equal(columns["rank"][mine], np.arange(1, len(got) + 1))
        # the same scores best first: the same list up to float32 rounding among near-ties
        np.testing.assert_allclose(scores[got], scores[expected], rtol=0, atol=1e-5)
        np.testing.assert_allclose(columns["predicted_rating"][mine], ratings[got], rtol=0, atol=1e-5)
        np.testing.assert_allclose(columns["score"][mine], scores[got], rtol=0, atol=1e-6)
        exact += np.array_equal(got, expected)
    assert exact >= predictor.n_users - 1
    lengths = {row: int((columns["user_id"] == predictor.user_ids[row]).sum()) for row in (1, 2, 3)}
    assert lengths == {1: 3, 2: 0, 3: K}


def test_chunk_size_does_not_change_the_result(model, rated, tmp_path) -> None:
    _, predictor, _ = model
    small = read(recommend_all(predictor, rated, K, tmp_path / "small.parquet", chunk_users=1))
    whole = read(recommend_all(predictor, rated, K, tmp_path / "whole.parquet", chunk_users=10_000))
    for name in ("user_id", "rank", "movie_id"):
        np.testing.assert_array_equal(small[name], whole[name])
    np.testing.assert_allclose(small["predicted_rating"], whole["predicted_rating"], atol=1e-6)


def test_without_rated_every_user_gets_k_sorted_rows(model, tmp_path) -> None:
    _, predictor, _ = model
    columns = read(recommend_all(predictor, None, K, tmp_path / "all.parquet", chunk_users=16))
    assert len(columns["user_id"]) == predictor.n_users * K
    np.testing.assert_array_equal(columns["user_id"], np.repeat(predictor.user_ids, K))
    np.testing.assert_array_equal(columns["rank"], np.tile(np.arange(1, K + 1), predictor.n_users))
    assert pq.read_metadata(tmp_path / "all.parquet").metadata[b"rated_excluded"] == b"false"


def test_schema_metadata_and_row_groups(model, rated, tmp_path) -> None:
    _, predictor, _ = model
    before = datetime.now(UTC)
    out = recommend_all(predictor, rated, K, tmp_path / "sub" / "top.parquet", chunk_users=16)
    schema = pq.read_schema(out)
    assert [(f.name, f.type, f.nullable) for f in schema] == [
        ("user_id", pa.int64(), False),
        ("rank", pa.int16(), False),
        ("movie_id", pa.int64(), False),
        ("predicted_rating", pa.float32(), False),
        ("score", pa.float32(), False),
    ]
    assert schema.remove_metadata().equals(SCHEMA)
    parquet = pq.ParquetFile(out)
    metadata = parquet.metadata.metadata
    assert metadata[b"model_version"].decode() == predictor.version
    created = datetime.fromisoformat(metadata[b"created_at"].decode())
    assert created.tzinfo is not None and before <= created <= datetime.now(UTC)
    assert metadata[b"k"] == b"10" and metadata[b"rated_excluded"] == b"true"
    assert parquet.metadata.num_row_groups == -(-predictor.n_users // 16)
    assert [p.name for p in out.parent.iterdir()] == ["top.parquet"]  # no temporary left


def test_load_recommendations_looks_users_up(model, rated, tmp_path) -> None:
    _, predictor, _ = model
    out = recommend_all(predictor, rated, K, tmp_path / "top.parquet", chunk_users=5)
    columns = read(out)
    loaded = load_recommendations(out)
    assert loaded.model_version == predictor.version
    assert loaded.created_at == pq.read_metadata(out).metadata[b"created_at"].decode()
    assert loaded.metadata["k"] == "10"
    with_rows = np.unique(columns["user_id"])
    assert len(loaded) == len(with_rows) == predictor.n_users - 1  # user row 2 rated everything
    assert list(loaded) == with_rows.tolist()
    for user_id in with_rows.tolist():
        mine = columns["user_id"] == user_id
        movies, ratings, scores = loaded[user_id]
        np.testing.assert_array_equal(movies, columns["movie_id"][mine])
        np.testing.assert_array_equal(ratings, columns["predicted_rating"][mine])
        np.testing.assert_array_equal(scores, columns["score"][mine])
        assert user_id in loaded and np.int64(user_id) in loaded
    assert int(predictor.user_ids[2]) not in loaded and 10**9 not in loaded and "7" not in loaded
    assert loaded.get(10**9) is None
    with pytest.raises(KeyError):
        loaded[10**9]


def test_load_recommendations_sorts_a_shuffled_file(model, tmp_path) -> None:
    _, predictor, _ = model
    out = recommend_all(predictor, None, 3, tmp_path / "top.parquet")
    table = pq.read_table(out)
    shuffled = tmp_path / "shuffled.parquet"
    pq.write_table(table.take(np.random.default_rng(0).permutation(table.num_rows)), shuffled)
    original, loaded = load_recommendations(out), load_recommendations(shuffled)
    for user_id in original:
        np.testing.assert_array_equal(loaded[user_id].movie_ids, original[user_id].movie_ids)


def test_load_recommendations_refuses_other_files(tmp_path) -> None:
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="not a recommend-all"):
        load_recommendations(tmp_path / "junk.parquet")
    pq.write_table(
        pa.table({"user_id": [1], "rank": [1], "movie_id": [2], "predicted_rating": [3.0], "score": [1.0]}),
        p := tmp_path / "x.parquet",
    )
    with pytest.raises(ValueError, match="model_version"):
        load_recommendations(p)


def test_bad_arguments(model, tmp_path) -> None:
    _, predictor, _ = model
    for k in (0, 40_000):
        with pytest.raises(ValueError, match="k must be"):
            recommend_all(predictor, None, k, tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="chunk_users"):
        recommend_all(predictor, None, 5, tmp_path / "x.parquet", chunk_users=0)
    assert not list(tmp_path.iterdir())


def test_run_recommend_all_excludes_what_the_database_holds(model, tmp_path) -> None:
    settings, predictor, _ = model
    url = f"sqlite:///{tmp_path / 'dotrec.db'}"
    upgrade(url)
    engine = make_engine(url)
    user_id, movie_ids = int(predictor.user_ids[0]), predictor.movie_ids[:-2].tolist()
    with Session(engine) as session:
        for movie_id in predictor.movie_ids.tolist():
            create_movie(session, movie_id, f"movie {movie_id}", None, [])
        moment = datetime(2024, 1, 1, tzinfo=UTC)
        upsert_ratings(session, [RatingRow(user_id, m, 4.0, moment) for m in movie_ids])
        session.commit()
    engine.dispose()
    report = run_recommend_all(
        Settings(_env_file=None, models_dir=settings.models_dir, database_url=url),
        K,
        tmp_path / "top.parquet",
    )
    assert report.rated_excluded and report.model_version == predictor.version
    assert report.users == predictor.n_users and report.rows == (predictor.n_users - 1) * K + 2
    loaded = load_recommendations(report.path)
    assert sorted(loaded[user_id].movie_ids.tolist()) == predictor.movie_ids[-2:].tolist()
    assert str(report.path) in report.summary()


def test_run_recommend_all_without_a_migrated_database_excludes_nothing(model, tmp_path, caplog) -> None:
    settings, predictor, _ = model
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    report = run_recommend_all(
        Settings(_env_file=None, models_dir=settings.models_dir, database_url=url),
        4,
        tmp_path / "top.parquet",
    )
    assert not report.rated_excluded and report.rows == predictor.n_users * 4
    assert "not excluded" in caplog.text


def test_run_recommend_all_without_a_model(tmp_path) -> None:
    settings = Settings(_env_file=None, models_dir=tmp_path / "none")
    with pytest.raises(ArtifactError, match="no model"):
        run_recommend_all(settings, K, tmp_path / "top.parquet")
