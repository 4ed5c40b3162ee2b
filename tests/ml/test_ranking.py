"""The ranking head: implicit ALS on who rated what, scored by the same dot product."""

import numpy as np
import pytest

from app.config import Settings
from app.data.splits import split_per_user
from app.data.training_set import TrainingSet
from app.jobs.training import train_and_save
from app.ml import evaluate, scoring
from app.ml.artifact import load_artifact
from app.ml.predictor import Predictor, RankingHead
from app.ml.ranking import RankingConfig, fit_ranking
from app.ml.train import TrainConfig


def taste_groups(n_users: int = 240, n_movies: int = 120, groups: int = 4, seed: int = 0) -> TrainingSet:
    """Users in `groups` taste groups; each mostly rates movies of its own group (rated 4-5) and
    sometimes a random other movie (rated 1-3): who rated what holds the planted structure."""
    rng = np.random.default_rng(seed)
    user_group = np.arange(n_users) % groups
    movie_group = np.arange(n_movies) % groups
    users, movies, ratings = [], [], []
    for user in range(n_users):
        own = np.flatnonzero(movie_group == user_group[user])
        liked = rng.choice(own, size=12, replace=False)
        other = rng.choice(np.flatnonzero(movie_group != user_group[user]), size=3, replace=False)
        for movie, rating in [
            *((m, rng.integers(4, 6)) for m in liked),
            *((m, rng.integers(1, 4)) for m in other),
        ]:
            users.append(user)
            movies.append(movie)
            ratings.append(rating)
    return TrainingSet.from_arrays(np.array(users) + 1, np.array(movies) + 1, np.array(ratings, np.float32))


def test_the_head_recovers_planted_tastes_and_beats_popularity() -> None:
    data = taste_groups()
    train, test = split_per_user(data, 0.25, seed=0)
    # the default penalty is scaled for catalogues of thousands; 120 movies need a lighter one
    fitted = fit_ranking(train, RankingConfig(n_factors=8, epochs=10, reg_scale=0.5))
    assert fitted.user_factors.shape == (data.n_users, 8) and fitted.movie_factors.shape == (data.n_movies, 8)
    scores = fitted.user_factors @ fitted.movie_factors.T
    # a user's own group outranks the others: the mean score of own-group movies is higher for all
    groups = 4
    own = (np.arange(data.n_users)[:, None] % groups) == (np.arange(data.n_movies)[None, :] % groups)
    assert ((scores * own).sum(1) / own.sum(1) > (scores * ~own).sum(1) / (~own).sum(1)).all()
    head = evaluate.ranking_report(
        lambda rows: fitted.user_factors[rows] @ fitted.movie_factors.T, train, test
    )
    popular = evaluate.ranking_report(evaluate.popularity_scorer(train), train, test)
    # knowing only the groups, a list of 10 unrated own-group movies holds about 10 * 3/18 = 1.7
    # of a user's 3 held-out ones (precision 0.17): the head comes close, popularity nowhere near
    assert head.all.precision > 0.13, head
    assert head.all.ndcg > popular.all.ndcg * 3 and head.ge4.ndcg > popular.ge4.ndcg * 3, (head, popular)


def test_a_fold_in_is_the_closed_form_of_the_training_objective() -> None:
    """Folding a trained user back in from their own ratings solves their row of the loss with the
    movies fixed: the normal equations hold, and it lands near the row training found."""
    data = taste_groups(seed=1)
    config = RankingConfig(n_factors=6, epochs=15, cg_steps=4)
    fitted = fit_ranking(data, config)
    terms = {
        "unobserved_weight": config.unobserved_weight,
        "reg": fitted.reg,
        "reg_exponent": config.reg_exponent,
        "rating_weight": config.rating_weight,
        "rating_pivot": config.rating_pivot,
        "min_weight": config.min_weight,
    }
    head = RankingHead(fitted.user_factors, fitted.movie_factors, terms)
    for user in (0, 17, 101):
        mine = data.user_rows == user
        movies, ratings = data.movie_rows[mine], data.ratings[mine]
        folded = head.fold_in(movies, ratings)
        weights = scoring.ranking_weights(
            ratings, config.rating_weight, config.rating_pivot, config.min_weight
        )
        factors = fitted.movie_factors.astype(np.float64)
        penalty = scoring.row_penalties(np.array([len(movies)]), data.n_movies, fitted.reg, 0.3, 1.0)[0]
        # the gradient of the user's part of the loss is zero at the fold-in
        residual_observed = factors[movies] @ folded - 1.0
        gradient = (  # halved: sum w (y - 1)^2 + alpha0 sum_all y^2 + penalty |u|^2
            factors[movies].T @ (weights * residual_observed)
            + config.unobserved_weight * factors.T @ (factors @ folded)
            + penalty * folded
        )
        assert np.abs(gradient).max() < 1e-4
        assert np.corrcoef(folded, fitted.user_factors[user])[0, 1] > 0.95


def test_rating_weights_and_penalties() -> None:
    weights = scoring.ranking_weights(np.array([1.0, 3.0, 5.0]), 0.5, 3.0, 0.05)
    assert weights.tolist() == pytest.approx([0.05, 1.0, 2.0])
    assert scoring.ranking_weights(np.array([1.0, 5.0]), 0.0, 3.0, 0.05).tolist() == [1.0, 1.0]
    penalties = scoring.row_penalties(np.array([0, 10]), 100, 0.01, 0.3, 1.0)
    assert penalties.tolist() == pytest.approx([0.01 * 30, 0.01 * 40])


def test_duplicate_ratings_of_a_pair_count_as_one_cell() -> None:
    data = TrainingSet.from_arrays(
        np.array([1, 1, 1, 2, 2]), np.array([1, 1, 2, 1, 3]), np.array([5, 4, 3, 2, 5], np.float32)
    )
    fitted = fit_ranking(data, RankingConfig(n_factors=2, epochs=2))
    assert np.isfinite(fitted.user_factors).all() and np.isfinite(fitted.movie_factors).all()


@pytest.mark.parametrize("objective", ["both", "ranking", "rating"])
def test_each_objective_saves_a_servable_artifact(planted, tmp_path, objective) -> None:
    settings = Settings(_env_file=None, models_dir=tmp_path)
    trained = train_and_save(planted.data, settings, TrainConfig(n_factors=4, epochs=2), objective=objective)
    predictor = Predictor(load_artifact(trained.path))
    assert predictor.meta["objective"] == objective
    assert (predictor.ranking is not None) == (objective != "rating")
    assert predictor.linear == (objective == "ranking")
    ratings = predictor.matrix(np.arange(5))
    assert ((ratings >= 0.5) & (ratings <= 5.0)).all()
    if objective == "ranking":  # the rating head is damped biases: mean + b_u + b_m, clipped
        assert predictor.user_emb.shape[1] == 0
        expected = np.clip(
            predictor.global_mean + predictor.user_bias[:5, None] + predictor.movie_bias,
            0.5,
            5.0,
        )
        np.testing.assert_allclose(ratings, expected, rtol=1e-5)
        assert trained.fit is None and predictor.meta["metrics"]["rmse"] == pytest.approx(
            predictor.meta["metrics"]["bias_only_rmse"], abs=0.02
        )


def test_the_metrics_saved_are_those_of_the_served_predictions(planted, tmp_path) -> None:
    """meta.json's validation RMSE is computed on ratings clipped to the scale, as served."""
    from app.data.splits import carve_validation

    config = TrainConfig(n_factors=4, epochs=3)
    settings = Settings(_env_file=None, models_dir=tmp_path)
    trained = train_and_save(planted.data, settings, config)
    predictor = Predictor(load_artifact(trained.path))
    _, validation = carve_validation(planted.data, "random", config.validation_share, config.seed)
    served = predictor.pairs(validation.user_rows, validation.movie_rows)
    assert served.max() <= 5.0 and served.min() >= 0.5
    assert predictor.meta["metrics"]["rmse"] == pytest.approx(
        evaluate.rmse(served, validation.ratings), abs=1e-6
    )
