"""The scoring kernel: the formulas every part of dotrec scores through."""

import numpy as np
import pytest
import torch

from app.ml import scoring
from app.ml.model import DotProductBias

Y_RANGE = (0.0, 5.5)
SCALE = (0.5, 5.0)


def test_squash_is_one_formula_for_training_and_serving() -> None:
    scores = np.array([-200.0, -3.0, -0.5, 0.0, 0.25, 4.0, 200.0], dtype=np.float32)
    served = scoring.squash(scores, Y_RANGE)
    trained = scoring.squash(torch.from_numpy(scores), Y_RANGE).numpy()
    np.testing.assert_allclose(served, trained, rtol=1e-6, atol=1e-6)
    assert served[0] == pytest.approx(0.0) and served[-1] == pytest.approx(5.5)
    assert served[3] == pytest.approx(2.75)
    model = DotProductBias(3, 4, 2, Y_RANGE)
    np.testing.assert_allclose(model.squash(torch.from_numpy(scores)).detach().numpy(), served, atol=1e-6)
    # gradients flow through the torch path, and stay finite at the ends
    tensor = torch.tensor([-200.0, 0.0, 200.0], requires_grad=True)
    scoring.squash(tensor, Y_RANGE).sum().backward()
    assert torch.isfinite(tensor.grad).all() and tensor.grad[1] == pytest.approx(5.5 / 4)


def test_served_ratings_clip_to_the_scale_in_place_or_not() -> None:
    scores = np.array([-50.0, 0.0, 50.0], dtype=np.float32)
    copy = scoring.served_ratings(scores, Y_RANGE, SCALE)
    assert copy.tolist() == pytest.approx([0.5, 2.75, 5.0])
    assert scores.tolist() == [-50.0, 0.0, 50.0], "the input is left alone"
    same = scoring.served_ratings(scores, Y_RANGE, SCALE, in_place=True)
    assert same is scores and same.tolist() == pytest.approx([0.5, 2.75, 5.0])


def test_one_pair_on_floats_is_the_served_rating_of_the_buffers() -> None:
    scores = np.array([-200.0, -7.0, -3.0, -0.5, 0.0, 0.25, 1.7, 4.0, 9.0, 200.0], dtype=np.float32)
    buffers = scoring.served_ratings(scores, Y_RANGE, SCALE)
    one_by_one = [scoring.served_rating(float(score), Y_RANGE, SCALE) for score in scores]
    np.testing.assert_allclose(one_by_one, buffers, rtol=0, atol=2e-6)
    assert one_by_one[0] == SCALE[0] and one_by_one[-1] == SCALE[1], "clipped to the scale"
    linear = scoring.linear_ratings(scores.copy(), 3.5, SCALE)
    by_floats = [scoring.linear_rating(float(s), 3.5, SCALE) for s in scores]
    np.testing.assert_allclose(by_floats, linear, atol=1e-6)


def test_pairs_are_the_diagonal_of_the_matrix() -> None:
    rng = np.random.default_rng(0)
    users, movies = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 4)).astype(np.float32)
    user_bias, movie_bias = rng.normal(size=6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    pairs = scoring.pair_scores(users, user_bias, movies, movie_bias)
    matrix = scoring.matrix_scores(users, user_bias, movies.T, movie_bias)
    np.testing.assert_allclose(pairs, np.diag(matrix), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [10, 31, 1000, 5000])
def test_top_k_is_best_first_ties_by_row_and_skips_blocked(n: int) -> None:
    rng = np.random.default_rng(n)
    scores = rng.integers(0, 50, size=n).astype(np.float32)  # many ties
    blocked = rng.random(n + 1) < 0.2
    expected_scores = np.where(blocked[:n], -np.inf, scores)
    expected = np.lexsort((np.arange(n), -expected_scores))[:10]
    expected = expected[np.isfinite(expected_scores[expected])]
    np.testing.assert_array_equal(scoring.top_k(scores.copy(), 10, blocked), expected)
    assert len(scoring.top_k(np.full(n, -np.inf, np.float32), 5)) == 0
    assert len(scoring.top_k(scores.copy(), n * 2)) == n


def test_top_k_rows_agrees_with_top_k_row_by_row() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(7, 300)).astype(np.float32)
    scores[2, 5:] = -np.inf  # a row with only 5 finite scores
    columns, values = scoring.top_k_rows(scores, 12)
    assert columns.shape == values.shape == (7, 12)
    for row in range(7):
        finite = np.isfinite(values[row])
        np.testing.assert_array_equal(columns[row][finite], scoring.top_k(scores[row].copy(), 12))
        np.testing.assert_array_equal(values[row], scores[row, columns[row]])
    assert finite.all() and np.isfinite(values[2]).sum() == 5
    assert scoring.top_k_rows(scores, 1000)[0].shape == (7, 300)


def test_cosine_neighbours_exclude_the_movie_and_blocked_ones() -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(50, 6)).astype(np.float32)
    vectors[9] = 0  # a zero row has similarity 0, not NaN
    norms = scoring.row_norms(vectors)
    blocked = np.zeros(51, dtype=bool)
    blocked[[3, 4]] = True
    rows, similarity = scoring.cosine_neighbours(vectors, norms, 7, 5, blocked)
    expected = vectors @ vectors[7] / np.where(norms * norms[7] > 0, norms * norms[7], 1)
    expected[[7, 3, 4]] = -np.inf
    np.testing.assert_array_equal(rows, np.argsort(-expected, kind="stable")[:5])
    np.testing.assert_allclose(similarity, expected[rows], rtol=1e-5)
    assert (np.diff(similarity) <= 1e-7).all()


def test_fold_in_recovers_a_user_from_noise_free_ratings() -> None:
    rng = np.random.default_rng(5)
    movies, movie_bias = rng.normal(size=(40, 3)), rng.normal(scale=0.1, size=40)
    vector, bias = np.array([0.5, -0.3, 0.2]), 0.1
    ratings = scoring.squash((movies @ vector + bias + movie_bias).astype(np.float32), Y_RANGE)
    found, found_bias = scoring.fold_in_rating(movies, movie_bias, ratings, Y_RANGE, ridge=1e-6)
    np.testing.assert_allclose(found, vector, atol=1e-3)
    assert found_bias == pytest.approx(bias, abs=1e-3)
