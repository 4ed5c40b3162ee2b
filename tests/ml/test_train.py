import numpy as np
import pytest
import torch

from app.data.splits import carve_validation, k_fold_masks, split_by_time, split_random
from app.data.training_set import TrainingSet
from app.ml.evaluate import BiasBaseline, rmse
from app.ml.train import LARGE_TRAINING_SET, TrainConfig, defaults_for, fit
from app.ml.train import rmse as model_rmse

CONFIG = TrainConfig(n_factors=8, epochs=30, lr=2e-2, weight_decay=0.01, batch_size=512, patience=3)


def test_training_recovers_a_planted_low_rank_matrix(planted) -> None:
    data, truth = planted.data, planted.truth
    train, test = split_random(data, 0.2, seed=0)
    fit_part, validation = split_random(train, 0.1, seed=1)
    result = fit(fit_part, CONFIG, (0.0, 5.5), validation)
    held_out = model_rmse(result.model, test)
    baseline = BiasBaseline.fit(train)
    bias_only = rmse(baseline.predict(test.user_rows, test.movie_rows), test.ratings)
    assert held_out < planted.noise * 1.35, held_out
    assert held_out < 0.6 * bias_only
    with torch.no_grad():
        recovered = result.model.forward_matrix(torch.arange(300), torch.arange(200)).numpy()
    assert np.sqrt(np.mean((recovered - truth) ** 2)) < planted.noise


def test_training_is_reproducible_for_a_seed(planted) -> None:
    data = planted.data
    config = TrainConfig(n_factors=4, epochs=2, batch_size=1024, seed=7)
    first = fit(data, config, (0.0, 5.5)).model.state_dict()
    second = fit(data, config, (0.0, 5.5)).model.state_dict()
    other = fit(data, TrainConfig(**config.as_dict() | {"seed": 8}), (0.0, 5.5)).model.state_dict()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)
    assert not torch.equal(first["user_emb.weight"], other["user_emb.weight"])


def test_early_stopping_keeps_the_best_epoch(planted) -> None:
    data = planted.data
    train, validation = split_random(data, 0.2, seed=0)
    overfitting = TrainConfig(n_factors=64, epochs=40, lr=5e-2, weight_decay=0.0, batch_size=256, patience=2)
    result = fit(train, overfitting, (0.0, 5.5), validation)
    history = [h.val_rmse for h in result.history]
    assert len(history) < 40, "should have stopped early"
    assert result.best_epoch == int(np.argmin(history)) + 1
    assert abs(model_rmse(result.model, validation) - min(history)) < 1e-5


def test_time_split_holds_out_each_users_newest_ratings(planted) -> None:
    data = planted.data
    train, held = split_by_time(data, 0.2)
    assert len(train) + len(held) == len(data)
    for user in range(0, data.n_users, 37):
        newest_train = train.timestamps[train.user_rows == user].max()
        held_times = held.timestamps[held.user_rows == user]
        assert len(held_times) > 0 and held_times.min() >= newest_train
    assert set(np.unique(held.user_rows)) <= set(np.unique(train.user_rows))


def test_k_folds_test_every_rating_once(planted) -> None:
    masks = np.stack(list(k_fold_masks(len(planted.data), 5, seed=0)))
    assert (masks.sum(axis=0) == 1).all()
    assert abs(masks.sum(axis=1) - len(planted.data) / 5).max() <= 1


@pytest.mark.parametrize("kind", ["random", "time"])
def test_validation_never_holds_a_users_or_movies_only_ratings(kind) -> None:
    rng = np.random.default_rng(0)
    users = np.concatenate([rng.integers(1, 30, 600), np.arange(100, 140)])  # 40 one-rating users
    movies = np.concatenate([rng.integers(1, 50, 600), rng.integers(1, 50, 40)])
    data = TrainingSet.from_arrays(users, movies, rng.integers(1, 6, 640).astype(np.float32), np.arange(640))
    train, validation = carve_validation(data, kind, 0.3, seed=1)
    assert len(train) + len(validation) == len(data) and len(validation) > 0
    assert set(validation.user_rows) <= set(train.user_rows)
    assert set(validation.movie_rows) <= set(train.movie_rows)
    assert set(np.unique(train.user_rows)) == set(range(data.n_users))


def test_ids_must_be_positive() -> None:
    with pytest.raises(ValueError, match="user ids must be positive"):
        TrainingSet.from_arrays(np.array([0, 1]), np.array([1, 2]), np.array([3.0, 4.0]))


def test_small_training_sets_keep_the_tuned_defaults() -> None:
    assert defaults_for(80_000) == {}
    assert TrainConfig.for_ratings(80_000) == TrainConfig()
    assert TrainConfig.for_ratings(LARGE_TRAINING_SET - 1) == TrainConfig()


def test_large_training_sets_take_fewer_larger_steps() -> None:
    small, large = TrainConfig(), TrainConfig.for_ratings(LARGE_TRAINING_SET)
    assert large == TrainConfig.for_ratings(487_650)
    assert (large.batch_size, large.lr, large.epochs) == (4096, 0.015, 5)
    assert (large.weight_decay, large.validation_share) == (0.08, 0.01)
    assert large.batch_size > small.batch_size and large.epochs < small.epochs
    # what the rule does not name stays the class default
    assert (large.n_factors, large.threads, large.sparse, large.seed) == (50, 1, False, 0)


def test_given_options_override_the_size_rule() -> None:
    config = TrainConfig.for_ratings(10**6, batch_size=512, epochs=3, weight_decay=0.2)
    assert (config.batch_size, config.epochs, config.weight_decay) == (512, 3, 0.2)
    assert config.lr == 0.015, "what was not given still comes from the rule"
    assert TrainConfig.for_ratings(1_000, lr=0.05).lr == 0.05


def test_the_rule_hands_out_copies() -> None:
    defaults_for(10**6)["epochs"] = 99
    assert TrainConfig.for_ratings(10**6).epochs == 5
