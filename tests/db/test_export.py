"""Export to training arrays gives back exactly what was imported."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sqlalchemy import Engine

from app.config import Settings
from app.data.movielens import RatingsSet
from app.data.training_set import TrainingSet
from app.db.export import export_training_set
from app.db.importer import import_ratings_set

RatingsSetMaker = Callable[[list[str], list[str]], RatingsSet]


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


def test_export_after_later_imports_is_sorted_by_user_then_movie(
    engine: Engine, make_ratings_set: RatingsSetMaker, settings: Settings
) -> None:
    movies = ["1,A (2001),Drama", "2,B (2002),Drama", "3,C (2003),Drama"]
    import_ratings_set(engine, make_ratings_set(["9,3,1,10", "9,1,2,20"], movies), settings)
    import_ratings_set(engine, make_ratings_set(["5,2,3,30", "9,2,4,40", "1,3,5,50"], movies), settings)

    exported = export_training_set(engine, chunk_rows=2)

    users = exported.user_ids[exported.user_rows].tolist()
    pairs = list(zip(users, exported.movie_ids[exported.movie_rows].tolist(), strict=True))
    assert pairs == [(1, 3), (5, 2), (9, 1), (9, 2), (9, 3)]
    assert exported.ratings.tolist() == [5, 3, 2, 4, 1]
    assert exported.fingerprint["rows"] == 5 and exported.fingerprint["max_rated_at"] == 50
