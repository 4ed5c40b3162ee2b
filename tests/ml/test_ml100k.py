"""End to end on real ml-100k (../shared/data) or, without it, a generated set of the same shape."""

import numpy as np
import pytest

from app.config import Settings
from app.data.movielens import read_ratings_set
from app.data.synth import PRESETS, write_synthetic
from app.data.training_set import TrainingSet
from app.jobs.evaluation import evaluate_folds
from app.jobs.training import train_and_save
from app.ml.artifact import load_artifact
from app.ml.predictor import Predictor
from app.ml.train import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ml100k(ml100k_archive, tmp_path_factory) -> TrainingSet:
    source = ml100k_archive
    if source is None:
        source = write_synthetic(tmp_path_factory.mktemp("synth"), *PRESETS["ml-100k"], seed=0)
    return TrainingSet.from_frame(read_ratings_set(source).ratings)


def test_model_beats_the_baselines_by_a_clear_margin(ml100k) -> None:
    (report,) = evaluate_folds(ml100k, Settings(), TrainConfig())  # the ranking protocol's split
    assert report.rmse < report.bias_only_rmse - 0.02, report
    assert report.rmse < report.global_mean_rmse - 0.15, report
    for rule in ("ndcg_at_10", "ndcg_at_10_ge4"):  # the ranking head, far above a popularity list
        assert report.ranking[rule] > report.popular_ranking[rule] * 1.5, report


def test_saved_model_serves_the_numbers_it_was_trained_to(ml100k, tmp_path) -> None:
    settings = Settings(models_dir=tmp_path)
    version = train_and_save(ml100k, settings, TrainConfig(epochs=4))
    predictor = Predictor(load_artifact(version.path))
    sample = np.arange(0, len(ml100k), 97)
    served = predictor.pairs(ml100k.user_rows[sample], ml100k.movie_rows[sample])
    rmse = float(np.sqrt(np.mean((served - ml100k.ratings[sample]) ** 2)))
    assert rmse < version.metrics["global_mean_rmse"]
