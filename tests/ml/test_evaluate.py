import numpy as np
import pytest

from app.data.training_set import TrainingSet
from app.ml.evaluate import BiasBaseline, mae, popularity_scorer, ranking_report, rmse


def test_rmse_and_mae() -> None:
    assert rmse(np.array([1.0, 3.0]), np.array([2.0, 5.0])) == pytest.approx(np.sqrt(2.5))
    assert mae(np.array([1.0, 3.0]), np.array([2.0, 5.0])) == pytest.approx(1.5)


def test_bias_baseline_learns_user_and_movie_offsets(planted) -> None:
    data = planted.data
    baseline = BiasBaseline.fit(data)
    assert baseline.global_mean == pytest.approx(float(data.ratings.mean()))
    per_movie = np.bincount(data.movie_rows, data.ratings) / np.bincount(data.movie_rows)
    assert np.corrcoef(baseline.movie_bias, per_movie)[0, 1] > 0.9
    predicted = baseline.predict(data.user_rows, data.movie_rows)
    assert rmse(predicted, data.ratings) < rmse(np.full(len(data), baseline.global_mean), data.ratings)


def tiny_sets() -> tuple[TrainingSet, TrainingSet]:
    """Users 1-2, movies 1-6; user 1 rated movie 1 in training, and loves movies 2 and 3 in the test."""
    users = np.array([1, 2, 2, 2, 1, 1, 1, 2])
    movies = np.array([1, 1, 2, 6, 2, 3, 4, 5])
    ratings = np.array([5, 4, 4, 3, 5, 4, 1, 2], dtype=np.float32)
    full = TrainingSet.from_arrays(users, movies, ratings)
    is_test = np.array([False, False, False, False, True, True, True, True])
    return full.subset(~is_test), full.subset(is_test)


def test_ranking_report_by_hand() -> None:
    train, test = tiny_sets()
    # user row 0 prefers movies in this order: 1 (rated, must be skipped), 4, 2, 5, 6, 3; movies
    # 3, 4 and 5 have no training rating (no model knows them), so only 2 and 6 can be listed
    preference = np.array([[9, 7, 1, 8, 6, 5]], dtype=np.float32)
    report = ranking_report(lambda users: np.repeat(preference, len(users), axis=0), train, test, k=3)
    # >= 4: only user 1 has relevant test ratings (movies 2 and 3); their list [2, 6] hits at rank 1
    assert report.ge4.users == 1
    assert report.ge4.precision == pytest.approx(1 / 3)
    assert report.ge4.recall == pytest.approx(1 / 2)
    assert report.ge4.ndcg == pytest.approx(1 / (1 + 1 / np.log2(3)))
    # every rating: user 1 (relevant 2, 3, 4: one hit) and user 2 (relevant 5, nothing left to list)
    assert report.all.users == 2
    assert report.all.precision == pytest.approx((1 / 3 + 0) / 2)
    assert report.all.recall == pytest.approx((1 / 3 + 0) / 2)
    assert report.all.ndcg == pytest.approx(1 / (1 + 1 / np.log2(3) + 1 / 2) / 2)
    # movies 2 and 6 of the catalogue {1, 2, 6}, popularity ranks 2 and 3 (movie 1 is first)
    assert report.coverage == pytest.approx(2 / 3)
    assert report.mean_popularity_rank == pytest.approx(2.5)


def test_popularity_ranks_by_training_counts() -> None:
    train, _ = tiny_sets()
    scores = popularity_scorer(train)(np.array([0, 1]))
    assert scores.shape == (2, 6)
    assert scores[0].argmax() == 0
