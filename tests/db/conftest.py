"""Data for the ratings-store tests: ml-100k (real when shared, else generated) and small files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from app.config import Settings
from app.data.movielens import RatingsSet, read_ratings_set
from app.data.synth import PRESETS, write_synthetic


@pytest.fixture(scope="session")
def ml100k_set(ml100k_archive: Path | None, tmp_path_factory: pytest.TempPathFactory) -> RatingsSet:
    """The real ml-100k when the shared folder has it, else a generated set of the same size."""
    if ml100k_archive is not None:
        return read_ratings_set(ml100k_archive)
    folder = tmp_path_factory.mktemp("ml-100k-like")
    return read_ratings_set(write_synthetic(folder, *PRESETS["ml-100k"], seed=0))


@pytest.fixture
def settings() -> Settings:
    """Default settings (0.5..5.0 step 0.5), whatever the environment or a `.env` file says."""
    return Settings(_env_file=None, rating_min=0.5, rating_max=5.0, rating_step=0.5)


RatingsSetMaker = Callable[[list[str], list[str]], RatingsSet]


@pytest.fixture
def make_ratings_set(tmp_path: Path) -> RatingsSetMaker:
    """Makes a `RatingsSet` from CSV lines, read back from a plain-CSV source by the real reader.

    The lines are `ratings.csv`'s after its header `user_id,movie_id,rating,timestamp` (so the
    first one is line 2) and `movies.csv`'s after `movieId,title,genres`.
    """
    made = iter(range(1_000))

    def make(ratings: list[str], movies: list[str]) -> RatingsSet:
        folder = tmp_path / f"source-{next(made)}"
        folder.mkdir()
        (folder / "ratings.csv").write_text(
            "\n".join(["user_id,movie_id,rating,timestamp", *ratings]) + "\n", encoding="utf-8"
        )
        (folder / "movies.csv").write_text(
            "\n".join(["movieId,title,genres", *movies]) + "\n", encoding="utf-8"
        )
        return read_ratings_set(folder)

    return make
