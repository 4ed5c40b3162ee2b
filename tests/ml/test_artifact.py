import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from app.config import Settings
from app.jobs.training import train_and_save
from app.ml.artifact import (
    CURRENT_LINK,
    ArtifactError,
    current_version_dir,
    load_artifact,
    save_artifact,
)
from app.ml.predictor import Predictor
from app.ml.train import TrainConfig


@pytest.fixture(scope="module")
def trained(planted, tmp_path_factory):
    settings = Settings(models_dir=tmp_path_factory.mktemp("models"))
    version = train_and_save(planted.data, settings, TrainConfig(n_factors=6, epochs=3, batch_size=2048))
    return settings, version


def copy_version(version_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / version_dir.name
    shutil.copytree(version_dir, target)
    return target


def test_save_then_load_gives_identical_predictions(trained, planted) -> None:
    settings, version = trained
    assert current_version_dir(settings.models_dir) == version.path
    predictor = Predictor(load_artifact(version.path))
    data = planted.data
    np.testing.assert_array_equal(predictor.user_ids, data.user_ids)
    with torch.no_grad():
        expected = version.fit.model(
            torch.from_numpy(data.user_rows), torch.from_numpy(data.movie_rows)
        ).numpy()
    np.testing.assert_allclose(
        predictor.pairs(data.user_rows, data.movie_rows), expected, rtol=1e-5, atol=1e-5
    )


def test_meta_records_what_serving_and_people_need(trained) -> None:
    _, version = trained
    meta = json.loads((version.path / "meta.json").read_text())
    for key in (
        "format_version",
        "version",
        "created_at",
        "user_ids",
        "movie_ids",
        "rating_scale",
        "y_range",
        "global_mean",
        "hyper_parameters",
        "metrics",
        "data_fingerprint",
        "library_versions",
    ):
        assert key in meta, key
    assert meta["hyper_parameters"]["n_factors"] == 6
    assert meta["data_fingerprint"]["rows"] == meta["n_ratings"]
    assert meta["metrics"]["rmse"] < meta["metrics"]["global_mean_rmse"]


def corrupt_weights_truncated(path: Path) -> None:
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def corrupt_weights_pickle(path: Path) -> None:
    (path / "weights.safetensors").write_bytes(pickle.dumps({"user_emb": [1, 2, 3]}))


def corrupt_weights_nan(path: Path) -> None:
    weights = load_file(path / "weights.safetensors")
    weights["movie_emb"][0, 0] = np.nan
    save_file(weights, path / "weights.safetensors")


def corrupt_weights_shape(path: Path) -> None:
    weights = load_file(path / "weights.safetensors")
    weights["user_emb"] = weights["user_emb"][:-1]
    save_file(weights, path / "weights.safetensors")


def corrupt_missing_tensor(path: Path) -> None:
    weights = load_file(path / "weights.safetensors")
    del weights["movie_bias"]
    save_file(weights, path / "weights.safetensors")


def corrupt_meta(change) -> callable:
    def apply(path: Path) -> None:
        meta = json.loads((path / "meta.json").read_text())
        change(meta)
        (path / "meta.json").write_text(json.dumps(meta))

    return apply


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (corrupt_weights_truncated, "not a readable safetensors"),
        (corrupt_weights_pickle, "not a readable safetensors"),
        (corrupt_weights_nan, "NaN"),
        (corrupt_weights_shape, "shape"),
        (corrupt_missing_tensor, "missing"),
        (lambda p: (p / "meta.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "meta.json").unlink(), "no meta.json"),
        (corrupt_meta(lambda m: m.update(format_version=99)), "format_version"),
        (corrupt_meta(lambda m: m.pop("movie_ids")), "movie_ids"),
        (corrupt_meta(lambda m: m.update(user_ids=m["user_ids"][::-1])), "ascending"),
        (corrupt_meta(lambda m: m.update(movie_ids=m["movie_ids"][:-1])), "shape"),
        (corrupt_meta(lambda m: m.update(y_range=[5, 1])), "y_range"),
    ],
    ids=[
        "truncated",
        "pickle",
        "nan",
        "shape",
        "missing-tensor",
        "bad-json",
        "no-meta",
        "format",
        "no-ids",
        "unsorted-ids",
        "ids-vs-shape",
        "y-range",
    ],
)
def test_corrupt_artifacts_fail_with_a_clear_message(trained, tmp_path, corrupt, message) -> None:
    _, version = trained
    broken = copy_version(version.path, tmp_path)
    corrupt(broken)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(broken)


def test_a_failed_save_leaves_nothing_behind_and_current_unchanged(trained, tmp_path) -> None:
    settings, version = trained
    models = tmp_path / "models"
    shutil.copytree(settings.models_dir, models, symlinks=True)
    before = current_version_dir(models)
    good = load_artifact(version.path)
    bad_weights = dict(good.weights, user_emb=np.full_like(good.weights["user_emb"], np.nan))
    with pytest.raises(ArtifactError):
        save_artifact(models, bad_weights, dict(good.meta, version="20990101T000000Z-bad"))
    assert current_version_dir(models) == before
    assert sorted(p.name for p in models.iterdir()) == sorted([CURRENT_LINK, version.path.name])


def test_current_moves_to_the_newest_save(trained, tmp_path) -> None:
    _, version = trained
    good = load_artifact(version.path)
    models = tmp_path / "models"
    first = save_artifact(models, good.weights, dict(good.meta, version="20250101T000000Z-a"))
    second = save_artifact(models, good.weights, dict(good.meta, version="20260101T000000Z-b"))
    assert current_version_dir(models) == second
    assert (models / CURRENT_LINK).is_symlink() and first.exists()
