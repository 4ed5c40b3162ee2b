"""Evaluate on held-out ratings: train on each training part, score its test part with what the
API would serve (ratings clipped to the scale, lists ranked as GET /recommendations ranks),
beside the baselines."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from app.config import Settings
from app.data.splits import SplitKind, carve_validation, k_folds, split
from app.data.training_set import TrainingSet
from app.jobs.training import Objective, model_weights_and_meta, served_predictor, y_range_for
from app.ml import evaluate
from app.ml.artifact import artifact_in_memory
from app.ml.predictor import Predictor
from app.ml.ranking import RankingConfig, fit_ranking
from app.ml.ranking_metrics import RankingReport
from app.ml.train import TrainConfig, fit

#: the figures of a ranking report a FoldReport carries, under these names' prefixes
RANKING_FIGURES = {
    "precision_at_10": lambda r: r.all.precision,
    "recall_at_10": lambda r: r.all.recall,
    "ndcg_at_10": lambda r: r.all.ndcg,
    "precision_at_10_ge4": lambda r: r.ge4.precision,
    "recall_at_10_ge4": lambda r: r.ge4.recall,
    "ndcg_at_10_ge4": lambda r: r.ge4.ndcg,
    "coverage_at_10": lambda r: r.coverage,
    "popularity_rank_at_10": lambda r: r.mean_popularity_rank,
}


@dataclass(frozen=True)
class FoldReport:
    """One held-out evaluation: accuracy and top-10 ranking of the model and its baselines.

    Ranking figures (`ranking` and `popular_ranking`, names of RANKING_FIGURES): precision,
    recall and NDCG at 10 with every held-out rating relevant and (`_ge4`) with only those >= 4,
    the share of the catalogue in anyone's list, and the mean popularity rank of listed movies.
    """

    fold: int
    n_train: int
    n_test: int
    train_seconds: float
    ranking_seconds: float
    epochs_run: int
    rmse: float
    mae: float
    bias_only_rmse: float
    bias_only_mae: float
    global_mean_rmse: float
    ranking: dict[str, float]
    popular_ranking: dict[str, float]


def evaluate_folds(
    data: TrainingSet,
    settings: Settings,
    config: TrainConfig,
    folds: int | None = None,
    split_kind: SplitKind = "user",
    holdout: float = 0.25,
    ranking: bool = True,
    objective: Objective = "both",
    ranking_config: RankingConfig | None = None,
) -> list[FoldReport]:
    """Train on each training part and score on its test part, which never steers training.

    With `folds`, k seeded random folds; else one `split_kind` split holding out `holdout` (by
    default the ranking protocol: per user, a seeded random quarter of their ratings). Early
    stopping uses a validation share carved out of each training part.
    """
    parts = k_folds(data, folds, config.seed) if folds else [split(data, split_kind, holdout, config.seed)]
    return [
        evaluate_fold(index, train, test, settings, config, ranking, objective, ranking_config)
        for index, (train, test) in enumerate(parts, start=1)
    ]


def evaluate_fold(
    index: int,
    train: TrainingSet,
    test: TrainingSet,
    settings: Settings,
    config: TrainConfig,
    ranking: bool = True,
    objective: Objective = "both",
    ranking_config: RankingConfig | None = None,
) -> FoldReport:
    ranking_config = ranking_config or RankingConfig()
    fit_part, validation = carve_validation(train, "random", config.validation_share, config.seed + index)
    started = time.perf_counter()
    result = fit(fit_part, config, y_range_for(settings), validation) if objective != "ranking" else None
    seconds = time.perf_counter() - started
    head = fit_ranking(train, ranking_config) if objective != "rating" else None
    weights, meta = model_weights_and_meta(
        result.model if result else None, head, train, settings, config, ranking_config
    )
    predictor = served_predictor(artifact_in_memory(weights, meta), settings)
    baseline = evaluate.BiasBaseline.fit(train)
    predicted = predictor.pairs(test.user_rows, test.movie_rows)
    bias_only = baseline.predict(test.user_rows, test.movie_rows)
    model_rank, popular_rank = {}, {}
    if ranking:
        model_rank = _figures(evaluate.ranking_report(served_scorer(predictor), train, test))
        popular_rank = _figures(evaluate.ranking_report(evaluate.popularity_scorer(train), train, test))
    return FoldReport(
        fold=index,
        n_train=len(train),
        n_test=len(test),
        train_seconds=seconds,
        ranking_seconds=head.seconds if head else 0.0,
        epochs_run=len(result.history) if result else 0,
        rmse=evaluate.rmse(predicted, test.ratings),
        mae=evaluate.mae(predicted, test.ratings),
        bias_only_rmse=evaluate.rmse(bias_only, test.ratings),
        bias_only_mae=evaluate.mae(bias_only, test.ratings),
        global_mean_rmse=evaluate.rmse(np.full(len(test), baseline.global_mean), test.ratings),
        ranking=model_rank,
        popular_ranking=popular_rank,
    )


def served_scorer(predictor: Predictor) -> evaluate.UserScorer:
    """Ranks movies as GET /recommendations does (`Predictor.user_list_scores`)."""
    return predictor.user_list_scores


def _figures(report: RankingReport) -> dict[str, float]:
    return {name: float(figure(report)) for name, figure in RANKING_FIGURES.items()}
