import numpy as np
import pytest

from app.config import Settings
from app.ml.artifact import load_artifact
from app.ml.jobs import train_and_save
from app.ml.predictor import UNKNOWN, Predictor
from app.ml.train import TrainConfig


@pytest.fixture(scope="module")
def predictor(planted, tmp_path_factory) -> Predictor:
    settings = Settings(models_dir=tmp_path_factory.mktemp("models"))
    config = TrainConfig(n_factors=8, epochs=15, lr=2e-2, weight_decay=0.01, batch_size=512)
    version = train_and_save(planted.data, settings, config)
    return Predictor(load_artifact(version.path))


def test_ids_map_to_rows_and_unknown_ids_to_minus_one(predictor) -> None:
    rows = predictor.user_rows([1, 300, 301, 0, 10**12])
    assert rows.tolist() == [0, 299, UNKNOWN, UNKNOWN, UNKNOWN]
    assert predictor.movie_rows([200, 1]).tolist() == [199, 0]


def test_pairs_single_and_matrix_agree(predictor) -> None:
    users = np.array([0, 5, 17, 299])
    movies = np.array([3, 0, 199, 42, 8])
    matrix = predictor.matrix(users, movies)
    assert matrix.shape == (4, 5) and matrix.dtype == np.float32
    user_grid, movie_grid = np.meshgrid(users, movies, indexing="ij")
    pairs = predictor.pairs(user_grid.ravel(), movie_grid.ravel()).reshape(4, 5)
    np.testing.assert_allclose(matrix, pairs, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(predictor.all_movie_ratings(17)[movies], matrix[2], rtol=1e-6, atol=1e-5)


def test_explain_adds_up_to_the_prediction(predictor) -> None:
    parts = predictor.explain(4, 9)
    score = parts["dot_product"] + parts["user_bias"] + parts["movie_bias"]
    assert abs(sum(parts["factor_products"]) - parts["dot_product"]) < 1e-5
    assert predictor.squash(np.float32(score)) == pytest.approx(predictor.pairs([4], [9])[0], abs=1e-5)


def test_top_rows_are_best_first_and_skip_excluded(predictor) -> None:
    scores = predictor.all_movie_ratings(0)
    top = predictor.top_rows(scores, 10, exclude_rows=np.argsort(-scores)[:3])
    assert len(top) == 10
    assert (np.diff(scores[top]) <= 0).all()
    np.testing.assert_array_equal(top, np.argsort(-scores)[3:13])
    assert len(predictor.top_rows(scores, 10**9)) == predictor.n_movies


def test_similar_movies_are_ranked_by_cosine_and_exclude_the_movie(predictor) -> None:
    rows, similarity = predictor.similar(7, 5)
    assert 7 not in rows and (np.diff(similarity) <= 1e-7).all()
    emb = predictor.movie_emb
    expected = emb @ emb[7] / (np.linalg.norm(emb, axis=1) * np.linalg.norm(emb[7]))
    np.testing.assert_allclose(similarity, expected[rows], rtol=1e-5)


def test_fold_in_places_a_known_user_close_to_their_learnt_ratings(predictor, planted) -> None:
    data = planted.data
    errors, learnt_errors = [], []
    for user in range(0, 300, 30):
        mine = data.user_rows == user
        folded = predictor.fold_in(data.movie_rows[mine], data.ratings[mine])
        folded_scores = predictor.folded_movie_ratings(folded)
        learnt = predictor.all_movie_ratings(user)
        errors.append(np.sqrt(np.mean((folded_scores - planted.truth[user]) ** 2)))
        learnt_errors.append(np.sqrt(np.mean((learnt - planted.truth[user]) ** 2)))
        assert np.corrcoef(folded_scores, learnt)[0, 1] > 0.95
    assert np.mean(errors) < np.mean(learnt_errors) * 1.5


def test_baseline_is_mean_plus_movie_bias_clipped_to_the_scale(predictor) -> None:
    rows = np.arange(predictor.n_movies)
    baseline = predictor.baseline(rows)
    expected = np.clip(predictor.global_mean + predictor.baseline_movie_bias, 0.5, 5.0)
    np.testing.assert_allclose(baseline, expected, rtol=1e-6)
    assert predictor.popular_scores().argmax() == predictor.baseline_movie_bias.argmax()
