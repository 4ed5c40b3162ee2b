"""Train-and-save a model version: the training data (files or the database), the fit, the
artifact, and its validation metrics computed on the served predictions."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from sqlalchemy.orm import Session

from app import __version__
from app.config import Settings
from app.data.sources import resolve_source
from app.data.splits import SplitKind, carve_validation
from app.data.training_set import TrainingSet
from app.db.array_cache import cached_training_set
from app.db.repository import movie_titles
from app.db.schema import migrated_engine
from app.ml import evaluate
from app.ml.artifact import Artifact, artifact_in_memory, new_version_name, save_artifact
from app.ml.distributed import Placement, current_placement
from app.ml.model import DotProductBias
from app.ml.predictor import Predictor
from app.ml.ranking import RankingConfig, RankingFit, fit_ranking
from app.ml.train import EpochCallback, FitResult, TrainConfig, fit


def y_range_for(settings: Settings) -> tuple[float, float]:
    """The sigmoid's range: the rating scale widened by one step each side, so its ends are reachable."""
    return settings.rating_min - settings.rating_step, settings.rating_max + settings.rating_step


EXPORT_CACHE = "export-cache"
"""Folder of DATA_DIR holding the memory-mapped export of the ratings (app/db/array_cache.py)."""


class NoTrainingData(ValueError):
    """The source named holds no usable ratings; the message says why and what to do."""


@dataclass(frozen=True)
class TrainingData:
    """Ratings to train on, with the titles of their movies and where they came from."""

    ratings: TrainingSet
    titles: dict[int, str]
    description: str
    note: str = ""
    """What resolving the source had to say (a download, a generated stand-in)."""


def load_training_data(source: str | None, settings: Settings) -> TrainingData:
    """The ratings of `source` (a path or GroupLens name), or of the database when None.

    Raises NoTrainingData for ratings that cannot be trained on, SchemaOutOfDate when the
    database is not migrated."""
    if source is not None:
        ratings_set, note = resolve_source(source, settings.cache_dir)
        titles = dict(zip(ratings_set.movies["movie_id"], ratings_set.movies["title"], strict=True))
        try:
            training_set = TrainingSet.from_frame(ratings_set.ratings)
        except ValueError as error:
            raise NoTrainingData(f"{source}: {error}") from error
        return TrainingData(training_set, titles, ratings_set.name, note)
    engine = migrated_engine(settings.database_url, settings)
    try:
        training_set = cached_training_set(engine, settings.data_dir / EXPORT_CACHE)
        if len(training_set) == 0:
            raise NoTrainingData("the database holds no ratings: run `dotrec import SOURCE` or pass --data")
        with Session(engine) as session:
            titles = movie_titles(session, training_set.movie_ids.tolist())
        # the kind of database only: meta.json is shown by GET /model, and a URL holds hosts,
        # paths and sometimes credentials
        return TrainingData(training_set, titles, f"database ({engine.dialect.name})")
    finally:
        engine.dispose()


Objective = Literal["rating", "ranking", "both"]
"""What `dotrec train --objective` fits: the rating head (GET /predict's ratings), the ranking
head (the order of GET /recommendations), or both (the default). Without a rating head the
ratings are the damped biases' baseline; without a ranking head lists rank by rating."""


@dataclass(frozen=True)
class TrainedVersion:
    path: Path
    fit: FitResult | None
    """The rating head's fit (None with --objective ranking)."""
    ranking: RankingFit | None
    metrics: dict


def train_and_save(
    data: TrainingSet,
    settings: Settings,
    config: TrainConfig,
    val_split: SplitKind = "random",
    on_epoch: EpochCallback | None = None,
    source: str = "",
    placement: Placement | None = None,
    objective: Objective = "both",
    ranking_config: RankingConfig | None = None,
) -> TrainedVersion | None:
    """Fit the heads `objective` names, the rating head on `data` less a validation part (for
    early stopping), the ranking head on all of it; then save a new version.

    In a distributed run every rank calls this; the rating head is trained by all, the ranking
    head and the artifact by rank 0 alone, which returns the version.
    """
    placement = placement or current_placement()
    train, validation = carve_validation(data, val_split, config.validation_share, config.seed)
    result = None
    if objective != "ranking":
        result = fit(train, config, y_range_for(settings), validation, on_epoch, placement)
    if not placement.is_main:
        return None
    ranking_config = ranking_config or RankingConfig()
    ranking = fit_ranking(data, ranking_config) if objective != "rating" else None
    weights, meta = model_weights_and_meta(
        result.model if result else None, ranking, data, settings, config, ranking_config, train
    )
    metrics = validation_metrics(artifact_in_memory(weights, meta), settings, train, validation)
    meta |= {
        "objective": objective,
        "hyper_parameters": config.as_dict() | {"val_split": val_split},
        "metrics": metrics,
        "history": [asdict(epoch) for epoch in result.history] if result else [],
        "best_epoch": result.best_epoch if result else 0,
        "data_source": source,
        "library_versions": library_versions(),
        "training_processes": placement.world,
        "device": str(placement.device),
    }
    path = save_artifact(settings.models_dir, weights, meta)
    return TrainedVersion(path, result, ranking, metrics)


def model_weights_and_meta(
    model: DotProductBias | None,
    ranking: RankingFit | None,
    data: TrainingSet,
    settings: Settings,
    config: TrainConfig,
    ranking_config: RankingConfig,
    rating_data: TrainingSet | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """The tensors and the core of meta.json of heads trained on `data`: what serving needs
    (the callers add the training's history and provenance). Without a trained rating head
    (`model` None) the rating head is the damped biases alone (`rating_head.transform` linear),
    fitted on `rating_data` (default `data`): what a trained rating head would have learnt from,
    so that validation figures stay honest."""
    baseline = evaluate.BiasBaseline.fit(data)
    if model is not None:
        tensors = {
            "user_emb": model.user_emb.weight,
            "movie_emb": model.movie_emb.weight,
            "user_bias": model.user_bias.weight[:, 0],
            "movie_bias": model.movie_bias.weight[:, 0],
        }
        weights = {name: tensor.detach().cpu().numpy() for name, tensor in tensors.items()}
    else:
        biases = baseline if rating_data is None else evaluate.BiasBaseline.fit(rating_data)
        weights = {
            "user_emb": np.zeros((data.n_users, 0), np.float32),
            "movie_emb": np.zeros((data.n_movies, 0), np.float32),
            "user_bias": biases.user_bias,
            "movie_bias": biases.movie_bias,
        }
    weights |= {
        "baseline_user_bias": baseline.user_bias,
        "baseline_movie_bias": baseline.movie_bias,
        "movie_popularity": evaluate.movie_popularity(data),
    }
    meta = {
        "version": new_version_name(data.fingerprint),
        "n_users": data.n_users,
        "n_movies": data.n_movies,
        "n_factors": weights["user_emb"].shape[1],
        "n_ratings": len(data),
        "rating_head": {"transform": "sigmoid" if model is not None else "linear"},
        "rating_scale": {
            "min": settings.rating_min,
            "max": settings.rating_max,
            "step": settings.rating_step,
        },
        "y_range": list(y_range_for(settings)),
        "global_mean": baseline.global_mean,
        "hyper_parameters": config.as_dict(),
        "data_fingerprint": data.fingerprint,
        "user_ids": data.user_ids.tolist(),
        "movie_ids": data.movie_ids.tolist(),
    }
    if ranking is not None:
        weights |= {"rank_user_emb": ranking.user_factors, "rank_movie_emb": ranking.movie_factors}
        meta["ranking_head"] = {
            "n_factors": ranking.user_factors.shape[1],
            "unobserved_weight": ranking_config.unobserved_weight,
            "reg": ranking.reg,
            "reg_exponent": ranking_config.reg_exponent,
            "rating_weight": ranking_config.rating_weight,
            "rating_pivot": ranking_config.rating_pivot,
            "min_weight": ranking_config.min_weight,
            "fit_seconds": round(ranking.seconds, 3),
            "hyper_parameters": ranking_config.as_dict(),
        }
    return weights, meta


def served_predictor(artifact: Artifact, settings: Settings) -> Predictor:
    """The Predictor serving would make of `artifact` with these settings."""
    return Predictor(artifact, settings.popularity_weight)


def validation_metrics(
    artifact: Artifact, settings: Settings, train: TrainingSet, held_out: TrainingSet
) -> dict:
    """RMSE and MAE on `held_out` of the served predictions (clipped to the scale, as the API
    answers) and of the two baselines fitted on `train`.

    These are validation figures: the same ratings chose the best epoch (`dotrec evaluate`
    reports test figures). None where nothing was held out.
    """
    if len(held_out) == 0:
        names = ("rmse", "mae", "bias_only_rmse", "global_mean_rmse")
        return {"n_train": len(train), "n_held_out": 0} | dict.fromkeys(names)
    baseline = evaluate.BiasBaseline.fit(train)
    actual = held_out.ratings
    predicted = served_predictor(artifact, settings).pairs(held_out.user_rows, held_out.movie_rows)
    bias_only = baseline.predict(held_out.user_rows, held_out.movie_rows)
    return {
        "n_train": len(train),
        "n_held_out": len(held_out),
        "rmse": evaluate.rmse(predicted, actual),
        "mae": evaluate.mae(predicted, actual),
        "bias_only_rmse": evaluate.rmse(bias_only, actual),
        "global_mean_rmse": evaluate.rmse(np.full(len(actual), baseline.global_mean), actual),
    }


def library_versions() -> dict[str, str]:
    import safetensors

    return {
        "dotrec": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }
