"""The export cache: memory-mapped arrays equal to the export, refreshed exactly when the database changed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.config import Settings
from app.data.training_set import TrainingSet
from app.db import array_cache
from app.db.array_cache import ARRAYS, cached_training_set, database_fingerprint
from app.db.export import export_training_set
from app.db.rating_writes import delete_rating, upsert_ratings
from app.db.repository import RatingRow, create_movie, movies_exist
from app.db.schema import upgrade
from app.db.session import make_engine
from app.jobs.training import train_and_save
from app.ml.train import TrainConfig

Rows = list[tuple[int, int, float, int]]


def store(engine: Engine, rows: Rows) -> None:
    """Upsert (user, movie, rating, unix time) rows, adding their movies to the catalog."""
    with Session(engine) as session:
        wanted = {movie for _, movie, _, _ in rows}
        for movie in sorted(wanted - movies_exist(session, wanted)):
            create_movie(session, movie, f"movie {movie}", None, [])
        upsert_ratings(session, [RatingRow(u, m, r, datetime.fromtimestamp(t, UTC)) for u, m, r, t in rows])
        session.commit()


def some_rows(n_users: int = 12, n_movies: int = 9, seed: int = 0) -> Rows:
    rng = np.random.default_rng(seed)
    return [
        (user, movie, float(rng.integers(1, 11)) / 2, int(rng.integers(1_000, 2_000)))
        for user in range(1, n_users + 1)
        for movie in range(1, n_movies + 1)
        if rng.random() < 0.6
    ]


@pytest.fixture
def exports(monkeypatch) -> list[int]:
    """Counts the database exports the cache makes (their row counts)."""
    made: list[int] = []
    real = array_cache.export_training_set

    def counting(engine: Engine) -> TrainingSet:
        training = real(engine)
        made.append(len(training))
        return training

    monkeypatch.setattr(array_cache, "export_training_set", counting)
    return made


def assert_same_set(cached: TrainingSet, exported: TrainingSet) -> None:
    for name, dtype in ARRAYS.items():
        array = getattr(cached, name)
        assert isinstance(array, np.memmap) and not array.flags.writeable, name
        assert array.dtype == dtype, name
        np.testing.assert_array_equal(array, getattr(exported, name), err_msg=name)
    assert cached.fingerprint == exported.fingerprint


def cache_folders(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir() if p.name != ".lock")


def test_miss_then_hit(engine: Engine, tmp_path: Path, exports: list[int]) -> None:
    store(engine, some_rows())
    cache_dir = tmp_path / "cache"

    first = cached_training_set(engine, cache_dir)
    second = cached_training_set(engine, cache_dir)

    assert exports == [len(first)] and len(first) > 50
    assert_same_set(first, export_training_set(engine))
    assert_same_set(second, export_training_set(engine))
    folders = cache_folders(cache_dir)
    assert len(folders) == 2 and folders[0] == "current" and folders[1].startswith("set-")
    assert (cache_dir / "current").resolve().name == folders[1]
    assert Path(second.user_rows.filename).parent == cache_dir / folders[1]


@pytest.mark.parametrize(
    ("change", "count_or_newest_moves"),
    [
        pytest.param(lambda engine: store(engine, [(50, 1, 3.0, 5_000)]), True, id="new-rating"),
        pytest.param(
            lambda engine: store(engine, [(1, 1, 0.5, 1_500), (1, 2, 0.5, 1_500)]), False, id="older-time"
        ),
        pytest.param(
            lambda engine: (_delete(engine, 1, 1), store(engine, [(99, 1, 2.0, 1_000)])),
            False,
            id="delete-insert",
        ),
    ],
)
def test_a_change_in_the_database_refreshes_the_cache(
    engine: Engine,
    tmp_path: Path,
    exports: list[int],
    change: Callable[[Engine], object],
    count_or_newest_moves: bool,
) -> None:
    rows = some_rows()
    store(engine, [*rows, (1, 1, 5.0, 1_000), (1, 2, 5.0, 1_000)])
    cache_dir = tmp_path / "cache"
    before = cached_training_set(engine, cache_dir)
    old_folder = (cache_dir / "current").resolve()
    old_fingerprint = database_fingerprint(engine)

    change(engine)
    after = cached_training_set(engine, cache_dir)

    new_fingerprint = database_fingerprint(engine)
    moved = [old_fingerprint[key] != new_fingerprint[key] for key in ("rows", "max_rated_at")]
    assert any(moved) == count_or_newest_moves

    assert len(exports) == 2
    assert_same_set(after, export_training_set(engine))
    assert (cache_dir / "current").resolve() != old_folder and not old_folder.exists()
    assert len(cache_folders(cache_dir)) == 2
    assert before.ratings.sum() > 0  # the old mapping is still readable after its files went away
    cached_training_set(engine, cache_dir)
    assert len(exports) == 2


def _delete(engine: Engine, user_id: int, movie_id: int) -> None:
    with Session(engine) as session:
        assert delete_rating(session, user_id, movie_id)
        session.commit()


def test_fingerprint_is_one_cheap_aggregate(engine: Engine) -> None:
    assert database_fingerprint(engine) == {
        "rows": 0,
        "max_rated_at": 0,
        "sum_rated_at": 0,
        "sum_half_stars": 0,
    }
    store(engine, [(1, 1, 4.5, 100), (2, 1, 0.5, 300), (2, 2, 3.0, 200)])
    assert database_fingerprint(engine) == {
        "rows": 3,
        "max_rated_at": 300,
        "sum_rated_at": 600,
        "sum_half_stars": 16,
    }


def test_an_empty_database_is_cached_too(engine: Engine, tmp_path: Path, exports: list[int]) -> None:
    first = cached_training_set(engine, tmp_path / "cache")
    second = cached_training_set(engine, tmp_path / "cache")
    assert len(first) == len(second) == 0 and exports == [0]
    assert second.fingerprint["rows"] == 0


def test_another_database_does_not_hit(tmp_path: Path, exports: list[int]) -> None:
    engines = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade(url)
        engines.append(make_engine(url))
        store(engines[-1], [(1, 1, 4.0, 10)])  # same fingerprint in both
    cache_dir = tmp_path / "cache"
    cached_training_set(engines[0], cache_dir)
    cached_training_set(engines[1], cache_dir)
    cached_training_set(engines[1], cache_dir)
    assert exports == [1, 1]
    for engine in engines:
        engine.dispose()


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / "ratings.npy").unlink(),
        lambda folder: (folder / "ratings.npy").write_bytes(b"junk"),
        lambda folder: (folder / "cache.json").write_text("{"),
        lambda folder: np.save(folder / "ratings.npy", np.zeros(3, np.float32)),
    ],
    ids=["missing", "junk", "bad-json", "wrong-length"],
)
def test_a_damaged_cache_is_rebuilt(engine: Engine, tmp_path: Path, exports: list[int], damage) -> None:
    store(engine, some_rows(seed=2))
    cache_dir = tmp_path / "cache"
    cached_training_set(engine, cache_dir)
    damage((cache_dir / "current").resolve())
    rebuilt = cached_training_set(engine, cache_dir)
    assert len(exports) == 2
    assert_same_set(rebuilt, export_training_set(engine))


def test_a_model_trains_from_the_cached_set(engine: Engine, tmp_path: Path) -> None:
    store(engine, some_rows(n_users=30, n_movies=20, seed=3))
    cached = cached_training_set(engine, tmp_path / "cache")
    settings = Settings(_env_file=None, models_dir=tmp_path / "models")
    trained = train_and_save(cached, settings, TrainConfig(n_factors=4, epochs=1))
    assert trained.path.exists()


def test_a_rating_written_during_the_export_is_cached_not_refused(
    engine: Engine, tmp_path: Path, monkeypatch
) -> None:
    store(engine, some_rows())
    real = array_cache.export_training_set

    def write_then_export(target: Engine) -> TrainingSet:
        store(target, [(999, 1, 4.5, 5_000)])  # lands after the fingerprint was read
        return real(target)

    monkeypatch.setattr(array_cache, "export_training_set", write_then_export)
    cached = cached_training_set(engine, tmp_path / "cache")
    assert 999 in cached.user_ids
    assert len(cached) == len(some_rows()) + 1
