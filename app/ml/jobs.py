"""The two jobs built from the parts: train-and-save a version, and evaluate on held-out ratings."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from app import __version__
from app.config import Settings
from app.data.splits import SplitKind, carve_validation, k_folds, split
from app.data.training_set import TrainingSet
from app.ml import evaluate
from app.ml.artifact import new_version_name, save_artifact
from app.ml.distributed import Placement, current_placement
from app.ml.model import DotProductBias
from app.ml.train import EpochCallback, FitResult, TrainConfig, fit


def y_range_for(settings: Settings) -> tuple[float, float]:
    """The sigmoid's range: the rating scale widened by one step each side, so its ends are reachable."""
    return settings.rating_min - settings.rating_step, settings.rating_max + settings.rating_step


@dataclass(frozen=True)
class TrainedVersion:
    path: Path
    fit: FitResult
    metrics: dict


def train_and_save(
    data: TrainingSet,
    settings: Settings,
    config: TrainConfig,
    val_split: SplitKind = "random",
    on_epoch: EpochCallback | None = None,
    source: str = "",
    placement: Placement | None = None,
) -> TrainedVersion | None:
    """Fit on `data` less a validation part (for early stopping), then save a new version.

    In a distributed run every rank calls this; rank 0 alone saves and returns the version.
    """
    placement = placement or current_placement()
    train, validation = carve_validation(data, val_split, config.validation_share, config.seed)
    result = fit(train, config, y_range_for(settings), validation, on_epoch, placement)
    if not placement.is_main:
        return None
    baseline = evaluate.BiasBaseline.fit(data)
    metrics = validation_metrics(result.model, train, validation)
    weights = {
        "user_emb": result.model.user_emb.weight,
        "movie_emb": result.model.movie_emb.weight,
        "user_bias": result.model.user_bias.weight[:, 0],
        "movie_bias": result.model.movie_bias.weight[:, 0],
    }
    weights = {name: tensor.detach().cpu().numpy() for name, tensor in weights.items()}
    weights |= {
        "baseline_user_bias": baseline.user_bias,
        "baseline_movie_bias": baseline.movie_bias,
        "movie_popularity": evaluate.movie_popularity(data),
    }
    meta = {
        "version": new_version_name(data.fingerprint),
        "n_users": data.n_users,
        "n_movies": data.n_movies,
        "n_factors": config.n_factors,
        "n_ratings": len(data),
        "rating_scale": {
            "min": settings.rating_min,
            "max": settings.rating_max,
            "step": settings.rating_step,
        },
        "y_range": list(y_range_for(settings)),
        "global_mean": baseline.global_mean,
        "hyper_parameters": config.as_dict() | {"val_split": val_split},
        "metrics": metrics,
        "history": [asdict(epoch) for epoch in result.history],
        "best_epoch": result.best_epoch,
        "data_fingerprint": data.fingerprint,
        "data_source": source,
        "library_versions": library_versions(),
        "training_processes": placement.world,
        "device": str(placement.device),
        "user_ids": data.user_ids.tolist(),
        "movie_ids": data.movie_ids.tolist(),
    }
    path = save_artifact(settings.models_dir, weights, meta)
    return TrainedVersion(path, result, metrics)


@torch.no_grad()
def predict_rows(model: DotProductBias, data: TrainingSet) -> np.ndarray:
    device = model.user_emb.weight.device
    users, movies = (torch.from_numpy(rows).to(device) for rows in (data.user_rows, data.movie_rows))
    return model(users, movies).cpu().numpy()


def validation_metrics(model: DotProductBias, train: TrainingSet, held_out: TrainingSet) -> dict:
    """RMSE and MAE on `held_out` of the model and of the two baselines fitted on `train`.

    These are validation figures: the same ratings chose the best epoch (`dotrec evaluate`
    reports test figures). None where nothing was held out.
    """
    if len(held_out) == 0:
        names = ("rmse", "mae", "bias_only_rmse", "global_mean_rmse")
        return {"n_train": len(train), "n_held_out": 0} | dict.fromkeys(names)
    baseline = evaluate.BiasBaseline.fit(train)
    actual = held_out.ratings
    predicted = predict_rows(model, held_out)
    bias_only = baseline.predict(held_out.user_rows, held_out.movie_rows)
    return {
        "n_train": len(train),
        "n_held_out": len(held_out),
        "rmse": evaluate.rmse(predicted, actual),
        "mae": evaluate.mae(predicted, actual),
        "bias_only_rmse": evaluate.rmse(bias_only, actual),
        "global_mean_rmse": evaluate.rmse(np.full(len(actual), baseline.global_mean), actual),
    }


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
    predicted = predict_rows(result.model, test)
    bias_only = baseline.predict(test.user_rows, test.movie_rows)
    model_rank = popular_rank = evaluate.RankingScores(float("nan"), float("nan"), float("nan"), 0)
    if ranking:
        scorer = model_scorer(result.model, settings, evaluate.movie_popularity(train))
        model_rank = evaluate.ranking_scores(scorer, train, test)
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


def model_scorer(model: DotProductBias, settings: Settings, popularity: np.ndarray) -> evaluate.UserScorer:
    """Ranks movies as the service does: the predicted rating, clipped to the scale, plus
    popularity_weight * log(1 + ratings)."""
    all_movies = torch.arange(model.movie_emb.num_embeddings)
    boost = settings.popularity_weight * popularity

    @torch.no_grad()
    def score(user_rows: np.ndarray) -> np.ndarray:
        predicted = model.forward_matrix(torch.from_numpy(user_rows), all_movies).numpy()
        return np.clip(predicted, settings.rating_min, settings.rating_max) + boost

    return score


def library_versions() -> dict[str, str]:
    import safetensors

    return {
        "dotrec": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }
