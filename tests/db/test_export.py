"""Export to training arrays gives back exactly what was imported."""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine

from app.config import Settings
from app.data.movielens import RatingsSet
from app.data.training_set import TrainingSet
from app.db.export import ROW, export_training_set, sorted_by_key
from app.db.importer import import_ratings_set


def test_export_equals_the_imported_data(engine: Engine, ml100k_set: RatingsSet, settings: Settings) -> None:
    import_ratings_set(engine, ml100k_set, settings)

    exported = export_training_set(engine, chunk_rows=30_000)

    source = ml100k_set.ratings.sort_values(["user_id", "movie_id"])
    expected = TrainingSet.from_arrays(
        source["user_id"].to_numpy(),
        source["movie_id"].to_numpy(),
        source["rating"].to_numpy(),
        source["timestamp"].to_numpy(),
    )
    assert len(exported) == 100_000
    np.testing.assert_array_equal(exported.user_ids[exported.user_rows], source["user_id"].to_numpy())
    np.testing.assert_array_equal(exported.movie_ids[exported.movie_rows], source["movie_id"].to_numpy())
    np.testing.assert_array_equal(exported.ratings, source["rating"].to_numpy(np.float32))
    np.testing.assert_array_equal(exported.timestamps, source["timestamp"].to_numpy())
    assert exported.ratings.dtype == np.float32 and exported.timestamps.dtype == np.int64
    assert exported.fingerprint == {
        "rows": 100_000,
        "max_rated_at": int(source["timestamp"].max()),
        "sha256": expected.fingerprint["sha256"],
    }


def test_export_of_an_empty_store(engine: Engine) -> None:
    exported = export_training_set(engine)
    assert len(exported) == 0
    assert exported.fingerprint["rows"] == 0 and exported.fingerprint["max_rated_at"] == 0


def test_unordered_rows_are_sorted_by_user_then_movie() -> None:
    records = np.array([(2, 1, 3.0, 0), (1, 9, 4.0, 0), (1, 2, 5.0, 0)], dtype=ROW)
    ordered = sorted_by_key(records)
    assert ordered["user_id"].tolist() == [1, 1, 2]
    assert ordered["movie_id"].tolist() == [2, 9, 1]
