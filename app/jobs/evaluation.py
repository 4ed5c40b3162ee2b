"""Evaluate on held-out ratings: train on each training part, score its test part with the
predictions the API would serve, beside the baselines."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from app.config import Settings
from app.data.splits import SplitKind, carve_validation, k_folds, split
from app.data.training_set import TrainingSet
from app.jobs.training import model_weights_and_meta, served_predictor, y_range_for
from app.ml import evaluate
from app.ml.artifact import artifact_in_memory
from app.ml.predictor import Predictor
from app.ml.train import TrainConfig, fit


@dataclass(frozen=True)
class FoldReport:
    """One held-out evaluation: accuracy and top-10 ranking of the model and its baselines."""

    fold: int
    n_train: int
    n_test: int
    train_seconds: float
    epochs_run: int
    rmse: float
    mae: float
    bias_only_rmse: float
    bias_only_mae: float
    global_mean_rmse: float
    precision_at_10: float
    recall_at_10: float
    ndcg_at_10: float
    popular_precision_at_10: float
    popular_recall_at_10: float
    popular_ndcg_at_10: float


def evaluate_folds(
    data: TrainingSet,
    settings: Settings,
    config: TrainConfig,
    folds: int | None = None,
    split_kind: SplitKind = "random",
    holdout: float = 0.1,
    ranking: bool = True,
) -> list[FoldReport]:
    """Train on each training part and score on its test part, which never steers training.

    With `folds`, k seeded random folds; else one `split_kind` split holding out `holdout`.
    Early stopping uses a validation share carved out of each training part.
    """
    parts = k_folds(data, folds, config.seed) if folds else [split(data, split_kind, holdout, config.seed)]
    return [
        evaluate_fold(index, train, test, settings, config, ranking)
        for index, (train, test) in enumerate(parts, start=1)
    ]


def evaluate_fold(
    index: int, train: TrainingSet, test: TrainingSet, settings: Settings, config: TrainConfig, ranking: bool
) -> FoldReport:
    fit_part, validation = carve_validation(train, "random", config.validation_share, config.seed + index)
    started = time.perf_counter()
    result = fit(fit_part, config, y_range_for(settings), validation)
    seconds = time.perf_counter() - started
    baseline = evaluate.BiasBaseline.fit(train)
    predictor = served_predictor(
        artifact_in_memory(*model_weights_and_meta(result.model, train, settings, config)), settings
    )
    predicted = predictor.pairs(test.user_rows, test.movie_rows)
    bias_only = baseline.predict(test.user_rows, test.movie_rows)
    model_rank = popular_rank = evaluate.RankingScores(float("nan"), float("nan"), float("nan"), 0)
    if ranking:
        model_rank = evaluate.ranking_scores(served_scorer(predictor), train, test)
        popular_rank = evaluate.ranking_scores(evaluate.popularity_scorer(train), train, test)
    return FoldReport(
        fold=index,
        n_train=len(train),
        n_test=len(test),
        train_seconds=seconds,
        epochs_run=len(result.history),
        rmse=evaluate.rmse(predicted, test.ratings),
        mae=evaluate.mae(predicted, test.ratings),
        bias_only_rmse=evaluate.rmse(bias_only, test.ratings),
        bias_only_mae=evaluate.mae(bias_only, test.ratings),
        global_mean_rmse=evaluate.rmse(np.full(len(test), baseline.global_mean), test.ratings),
        precision_at_10=model_rank.precision,
        recall_at_10=model_rank.recall,
        ndcg_at_10=model_rank.ndcg,
        popular_precision_at_10=popular_rank.precision,
        popular_recall_at_10=popular_rank.recall,
        popular_ndcg_at_10=popular_rank.ndcg,
    )


def served_scorer(predictor: Predictor) -> evaluate.UserScorer:
    """Ranks movies as GET /recommendations does (`Predictor.ranking_scores` of served ratings)."""
    return lambda user_rows: predictor.ranking_scores(predictor.matrix(user_rows))
