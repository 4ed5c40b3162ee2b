"""Weights are memory-mapped read-only from weights.safetensors, and a bad file is refused cleanly."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from app.config import Settings
from app.data.training_set import TrainingSet
from app.jobs.training import train_and_save
from app.ml.artifact import RANKING_TENSOR_SHAPES, TENSOR_SHAPES, WEIGHTS_FILE, ArtifactError, load_artifact
from app.ml.predictor import Predictor
from app.ml.train import TrainConfig


@pytest.fixture(scope="module")
def version(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    users, movies = rng.integers(1, 30, 600), rng.integers(1, 20, 600)
    data = TrainingSet.from_arrays(users, movies, rng.integers(1, 11, 600) / 2)
    settings = Settings(_env_file=None, models_dir=tmp_path_factory.mktemp("models"))
    return train_and_save(data, settings, TrainConfig(n_factors=4, epochs=2)).path


@pytest.fixture
def copy(version, tmp_path) -> Path:
    target = tmp_path / version.name
    shutil.copytree(version, target)
    return target


def write_raw(path: Path, header: dict | bytes, data: bytes) -> None:
    """A safetensors file by hand: 8-byte little-endian header length, header, data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    (path / WEIGHTS_FILE).write_bytes(len(raw).to_bytes(8, "little") + raw + data)


def header_and_data(path: Path) -> tuple[dict, bytes]:
    raw = (path / WEIGHTS_FILE).read_bytes()
    length = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def test_weights_are_read_only_memory_maps_of_the_file(version) -> None:
    artifact = load_artifact(version)
    expected = load_file(version / WEIGHTS_FILE)
    assert set(artifact.weights) == set(TENSOR_SHAPES) | set(RANKING_TENSOR_SHAPES)
    for name, array in artifact.weights.items():
        assert isinstance(array, np.memmap), name
        assert not array.flags.writeable and array.dtype == np.float32
        np.testing.assert_array_equal(array, expected[name])
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0
    if sys.platform == "linux":
        maps = Path("/proc/self/maps").read_text()
        assert str(version / WEIGHTS_FILE) in maps


def test_the_predictor_serves_from_the_maps_as_from_copies(version) -> None:
    artifact = load_artifact(version)
    mapped = Predictor(artifact)
    copied = Predictor(replace(artifact, weights=load_file(version / WEIGHTS_FILE)))
    rows, movies = np.arange(mapped.n_users), np.arange(mapped.n_movies)
    np.testing.assert_array_equal(mapped.matrix(rows, movies), copied.matrix(rows, movies))
    assert type(mapped.matrix(rows[:2], movies[:3])) is np.ndarray


def test_header_padding_and_metadata_are_accepted(copy) -> None:
    header, data = header_and_data(copy)
    header["__metadata__"] = {"note": "written by hand"}
    raw = json.dumps(header).encode()
    write_raw(copy, raw + b" " * (-len(raw) % 8 + 8), data)
    artifact = load_artifact(copy)
    np.testing.assert_array_equal(artifact.weights["user_emb"], load_file(copy / WEIGHTS_FILE)["user_emb"])


@pytest.mark.parametrize("keep", [0, 5, 8, 20, -4, -1], ids=lambda k: f"keep{k}")
def test_a_truncated_file_is_refused(copy, keep) -> None:
    raw = (copy / WEIGHTS_FILE).read_bytes()
    (copy / WEIGHTS_FILE).write_bytes(raw[:keep])
    with pytest.raises(ArtifactError, match="not a readable safetensors file") as refused:
        load_artifact(copy)
    if keep < 0:  # header intact, data short
        assert "truncated" in str(refused.value) or "cover" in str(refused.value)


def test_a_tensor_other_than_f32_is_refused(copy) -> None:
    weights = load_file(copy / WEIGHTS_FILE)
    weights["movie_bias"] = weights["movie_bias"].astype(np.float16)
    save_file(weights, copy / WEIGHTS_FILE)
    with pytest.raises(ArtifactError, match=r"'movie_bias'.*F16; only F32"):
        load_artifact(copy)


def bad_offsets(header: dict) -> None:
    header["user_bias"]["data_offsets"][1] += 4


def beyond_the_end(header: dict) -> None:
    entry = header["user_bias"]
    size = entry["data_offsets"][1] - entry["data_offsets"][0]
    entry["data_offsets"] = [10**9, 10**9 + size]


def overlapping(header: dict) -> None:
    first, second = sorted(header.values(), key=lambda e: e.get("data_offsets", [-1])[0])[-2:]
    size = second["data_offsets"][1] - second["data_offsets"][0]
    second["data_offsets"] = [first["data_offsets"][0], first["data_offsets"][0] + size]


def negative_shape(header: dict) -> None:
    header["user_bias"]["shape"] = [-1]


def not_an_object(header: dict) -> None:
    header["user_bias"] = [1, 2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (bad_offsets, "spans"),
        (beyond_the_end, "truncated"),
        (overlapping, "overlap"),
        (negative_shape, "no valid dtype, shape"),
        (not_an_object, "no valid dtype, shape"),
    ],
)
def test_inconsistent_headers_are_refused(copy, change, message) -> None:
    header, data = header_and_data(copy)
    change(header)
    write_raw(copy, header, data)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(copy)


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        (b"{not json", b"", "not JSON"),
        (b"[1, 2]", b"", "not a JSON object"),
        (b"\xff\xfe", b"", "not JSON"),
    ],
)
def test_unreadable_headers_are_refused(copy, header, data, message) -> None:
    write_raw(copy, header, data)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(copy)


def test_trailing_bytes_are_refused(copy) -> None:
    header, data = header_and_data(copy)
    write_raw(copy, header, data + b"\0" * 4)
    with pytest.raises(ArtifactError, match="cover"):
        load_artifact(copy)


def test_missing_weights_file(copy) -> None:
    (copy / WEIGHTS_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"no weights\.safetensors"):
        load_artifact(copy)
