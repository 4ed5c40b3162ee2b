"""write_synthetic: exact, deterministic, MovieLens-shaped, with the planted signal recoverable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data import synth, synth_layout
from app.data.movielens import RatingsSet, read_ratings_set
from app.data.synth import PRESETS, planted_factors, write_synthetic

FILES = ("ratings.csv", "movies.csv", "synth.json")


@pytest.fixture(scope="module")
def like_100k(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RatingsSet]:
    folder = write_synthetic(tmp_path_factory.mktemp("like-100k"), *PRESETS["ml-100k"], seed=3)
    return folder, read_ratings_set(folder)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    sizes = (300, 400, 12_000)
    first = file_bytes(write_synthetic(tmp_path / "a", *sizes, seed=5))
    again = file_bytes(write_synthetic(tmp_path / "b", *sizes, seed=5))
    other = file_bytes(write_synthetic(tmp_path / "c", *sizes, seed=6))
    assert first == again
    assert other["ratings.csv"] != first["ratings.csv"]


def test_exact_counts_distinct_pairs_everyone_rated(like_100k: tuple[Path, RatingsSet]) -> None:
    folder, data = like_100k
    ratings = data.ratings
    n_users, n_movies, n_ratings = PRESETS["ml-100k"]
    assert data.name == folder.name
    assert data.problems == []
    assert len(ratings) == n_ratings
    assert not ratings.duplicated(["user_id", "movie_id"]).any()
    assert sorted(ratings["user_id"].unique()) == list(range(1, n_users + 1))
    assert sorted(ratings["movie_id"].unique()) == list(range(1, n_movies + 1))
    assert data.movies["movie_id"].tolist() == list(range(1, n_movies + 1))
    assert data.movies["year"].notna().all()
    assert (data.movies["genres"] != "").all()
    # GroupLens order: by user, then movie.
    keys = ratings["user_id"].to_numpy() * n_movies + ratings["movie_id"].to_numpy()
    assert (np.diff(keys) > 0).all()


def test_whole_stars_by_default(like_100k: tuple[Path, RatingsSet]) -> None:
    _, data = like_100k
    assert set(data.ratings["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_half_stars(tmp_path: Path) -> None:
    data = read_ratings_set(write_synthetic(tmp_path, 200, 300, 8_000, half_stars=True))
    assert set(data.ratings["rating"].unique()) == {x / 2 for x in range(1, 11)}
    summary = json.loads((tmp_path / "synth.json").read_text())
    assert (summary["rating_min"], summary["rating_step"], summary["half_stars"]) == (0.5, 0.5, True)


def test_popularity_and_activity_are_skewed(like_100k: tuple[Path, RatingsSet]) -> None:
    _, data = like_100k
    movie_counts = data.ratings["movie_id"].value_counts().to_numpy()  # descending
    top_tenth_share = movie_counts[: len(movie_counts) // 10].sum() / movie_counts.sum()
    assert top_tenth_share > 0.35  # uniform popularity would give 0.10; real ml-100k 0.43
    assert movie_counts[-1] < 5 < np.median(movie_counts) < movie_counts[0] / 10
    user_counts = data.ratings["user_id"].value_counts().to_numpy()
    assert user_counts.min() >= synth_layout.MIN_RATINGS_PER_USER
    assert user_counts.max() > 3 * np.median(user_counts)  # all equal without a power law


def test_timestamps_follow_user_join_order(like_100k: tuple[Path, RatingsSet]) -> None:
    _, data = like_100k
    times = data.ratings["timestamp"]
    assert times.min() >= synth_layout.START_TIME
    assert times.max() < synth_layout.START_TIME + 20 * 365 * 86_400
    first_rating = data.ratings.groupby("user_id")["timestamp"].min()
    assert first_rating.rank().corr(pd.Series(first_rating.index, index=first_rating.index)) > 0.99


def test_planted_signal_is_recoverable(like_100k: tuple[Path, RatingsSet]) -> None:
    """The planted model explains the ratings down to the noise, and synth.json says how well."""
    folder, data = like_100k
    summary = json.loads((folder / "synth.json").read_text())
    assert summary["noise"] == 0.5
    assert (summary["seed"], summary["rank"]) == (3, 8)
    n_users, n_movies, _ = PRESETS["ml-100k"]
    planted = planted_factors(n_users, n_movies, seed=3, rank=8)
    assert summary["scale"] == pytest.approx(planted.scale)
    ratings = data.ratings["rating"].to_numpy(np.float64)
    expected = planted.expected(
        data.ratings["user_id"].to_numpy() - 1, data.ratings["movie_id"].to_numpy() - 1
    )
    residual = ratings - np.clip(expected, 1, 5)
    rmse = np.sqrt(np.mean(residual**2))
    assert rmse == pytest.approx(summary["rmse_planted"])
    # Gaussian noise plus rounding to whole stars, a little less for clipping at the ends.
    assert 0.45 < rmse < np.sqrt(0.5**2 + 1 / 12) + 0.02
    assert rmse < 0.6 * ratings.std()
    assert summary["mean_rating"] == pytest.approx(ratings.mean())
    # A wrong model (another seed's factors) explains nothing beyond the mean.
    wrong = planted_factors(n_users, n_movies, seed=4, rank=8).expected(
        data.ratings["user_id"].to_numpy() - 1, data.ratings["movie_id"].to_numpy() - 1
    )
    assert np.corrcoef(wrong, ratings)[0, 1] < 0.1 < 0.7 < np.corrcoef(expected, ratings)[0, 1]


def test_without_noise_only_rounding_is_left(tmp_path: Path) -> None:
    write_synthetic(tmp_path, 100, 200, 5_000, noise=0.0)
    assert json.loads((tmp_path / "synth.json").read_text())["rmse_planted"] < np.sqrt(1 / 12) + 0.01


@pytest.mark.parametrize(
    ("n_users", "n_movies", "n_ratings"),
    [(50, 40, 2_000), (50, 40, 1_500), (30, 10, 7), (1, 1, 1), (200, 5_000, 40_000)],
    ids=["all-pairs", "dense", "fewer-ratings-than-users", "one", "sparse"],
)
def test_edge_sizes_are_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n_users: int, n_movies: int, n_ratings: int
) -> None:
    monkeypatch.setattr(synth_layout, "_CHUNK_RATINGS", 700)  # several chunks even when small
    data = read_ratings_set(write_synthetic(tmp_path, n_users, n_movies, n_ratings, seed=1))
    ratings = data.ratings
    assert len(ratings) == n_ratings
    assert not ratings.duplicated(["user_id", "movie_id"]).any()
    assert ratings["user_id"].between(1, n_users).all()
    assert ratings["movie_id"].between(1, n_movies).all()
    assert ratings["user_id"].nunique() == min(n_users, n_ratings)
    assert ratings["movie_id"].nunique() == min(n_movies, n_ratings)


def test_impossible_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        write_synthetic(tmp_path, 3, 4, 13)
    with pytest.raises(ValueError, match="positive"):
        write_synthetic(tmp_path, 0, 4, 1)
    with pytest.raises(ValueError, match="noise"):
        write_synthetic(tmp_path, 3, 4, 5, noise=-1)


def test_synth_json_marks_a_complete_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_synthetic(tmp_path, 20, 30, 100)
    write_synthetic(tmp_path, 20, 30, 200)
    assert json.loads((tmp_path / "synth.json").read_text())["n_ratings"] == 200
    assert len(read_ratings_set(tmp_path).ratings) == 200

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_write_movies", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(tmp_path, 20, 30, 300)
    assert not (tmp_path / "synth.json").exists()
