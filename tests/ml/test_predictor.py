import numpy as np
import pytest

from app.config import Settings
from app.jobs.training import train_and_save
from app.ml import scoring
from app.ml.artifact import load_artifact
from app.ml.ids import UNKNOWN
from app.ml.predictor import Predictor
from app.ml.train import TrainConfig


@pytest.fixture(scope="module")
def predictor(planted, tmp_path_factory) -> Predictor:
    settings = Settings(models_dir=tmp_path_factory.mktemp("models"))
    config = TrainConfig(n_factors=8, epochs=15, lr=2e-2, weight_decay=0.01, batch_size=512)
    version = train_and_save(planted.data, settings, config)
    return Predictor(load_artifact(version.path))


def test_ids_map_to_rows_and_unknown_ids_to_minus_one(predictor) -> None:
    rows = predictor.users.rows([1, 300, 301, 0, -5, 10**12])
    assert rows.tolist() == [0, 299, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN]
    assert predictor.movies.rows([200, 1]).tolist() == [199, 0]
    assert predictor.users.row(300) == 299 and predictor.users.row(301) is None
    assert 1 in predictor.movies and 10**12 not in predictor.movies


def test_pairs_matrix_and_user_terms_agree(predictor) -> None:
    users = np.array([0, 5, 17, 299])
    movies = np.array([3, 0, 199, 42, 8])
    matrix = predictor.matrix(users, movies)
    assert matrix.shape == (4, 5) and matrix.dtype == np.float32
    user_grid, movie_grid = np.meshgrid(users, movies, indexing="ij")
    pairs = predictor.pairs(user_grid.ravel(), movie_grid.ravel()).reshape(4, 5)
    np.testing.assert_allclose(matrix, pairs, rtol=1e-6, atol=1e-5)
    every_movie = predictor.ratings_matrix(predictor.user_emb[users], predictor.user_bias[users])
    np.testing.assert_allclose(every_movie[:, movies], matrix, rtol=1e-6, atol=1e-5)
    # the formula, written out
    score = (
        predictor.user_emb[17] @ predictor.movie_emb[42] + predictor.user_bias[17] + predictor.movie_bias[42]
    )
    lo, hi = predictor.y_range
    expected = np.clip(lo + (hi - lo) / (1 + np.exp(-score)), *predictor.scale)
    assert matrix[2, 3] == pytest.approx(expected, abs=1e-5)
    assert ((matrix >= predictor.scale[0]) & (matrix <= predictor.scale[1])).all()
    # one pair on floats (GET /predict) is the same rating
    for i, user in enumerate(users):
        for j, movie in enumerate(movies):
            one = predictor.pair_rating(predictor.user_emb[user], predictor.user_bias[user], int(movie))
            assert isinstance(one, float) and one == pytest.approx(matrix[i, j], abs=2e-6)


def test_fold_in_places_a_known_user_close_to_their_learnt_ratings(predictor, planted) -> None:
    data = planted.data
    errors, learnt_errors = [], []
    for user in range(0, 300, 30):
        mine = data.user_rows == user
        folded = predictor.fold_in(data.movie_rows[mine], data.ratings[mine])
        folded_scores = predictor.ratings_matrix(folded.vector[None], np.array([folded.bias]))[0]
        learnt = predictor.matrix(np.array([user]))[0]
        errors.append(np.sqrt(np.mean((folded_scores - planted.truth[user]) ** 2)))
        learnt_errors.append(np.sqrt(np.mean((learnt - planted.truth[user]) ** 2)))
        assert np.corrcoef(folded_scores, learnt)[0, 1] > 0.95
    assert np.mean(errors) < np.mean(learnt_errors) * 1.5


def test_fold_in_stays_solvable_without_weight_decay(predictor, monkeypatch) -> None:
    """`dotrec train --wd 0`: a user with fewer ratings than factors still gets a finite answer."""
    monkeypatch.setattr(predictor, "weight_decay", 0.0)
    folded = predictor.fold_in(np.array([3, 7]), np.array([4.0, 2.0], np.float32))
    assert np.isfinite(folded.vector).all() and np.isfinite(folded.bias)


def test_baseline_is_mean_plus_movie_bias_clipped_to_the_scale(predictor) -> None:
    rows = np.arange(predictor.n_movies)
    baseline = predictor.baseline(rows)
    expected = np.clip(predictor.global_mean + predictor.baseline_movie_bias, 0.5, 5.0)
    np.testing.assert_allclose(baseline, expected, rtol=1e-6)
    assert predictor.popular_scores().argmax() == predictor.baseline_movie_bias.argmax()
    assert predictor.user_baseline(100.0) == predictor.scale[1]
    assert predictor.user_baseline(-100.0) == predictor.scale[0]


def test_lists_rank_by_the_ranking_head(predictor) -> None:
    users = np.array([0, 7])
    ranking = predictor.ranking
    assert ranking is not None
    expected = ranking.user_factors[users] @ ranking.movie_factors.T
    np.testing.assert_allclose(predictor.user_list_scores(users), expected, rtol=1e-5, atol=1e-6)


def test_without_a_ranking_head_lists_add_the_popularity_prior(planted, tmp_path) -> None:
    settings = Settings(models_dir=tmp_path)
    config = TrainConfig(n_factors=4, epochs=2)
    rating_only = Predictor(
        load_artifact(train_and_save(planted.data, settings, config, objective="rating").path)
    )
    assert rating_only.ranking is None and "ranking_head" not in rating_only.meta
    ratings = rating_only.matrix(np.array([0]))[0]
    boost = rating_only.user_list_scores(np.array([0]))[0] - ratings
    np.testing.assert_allclose(boost, 0.5 * rating_only.artifact.weights["movie_popularity"], rtol=1e-5)
    assert scoring.top_k(rating_only.user_list_scores(np.array([0]))[0], 1)[0] == np.argmax(ratings + boost)
