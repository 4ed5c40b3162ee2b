"""Issue 7: a corrupt, truncated or mismatched model artifact never serves, never crashes the service.

Every case damages a copy of a good version in one way and makes it the newest (`current`):

- `POST /admin/reload` refuses it (409, the problem named), logs why, and the model serving
  before keeps serving (same version, same ratings, /ready 200); a good version made current
  afterwards is picked up by the next reload, without a restart;
- a restart with the damaged version newest serves the newest good one;
- when the damaged version is the only one, the service starts anyway: /ready is 503 with the
  reason, the rating endpoints work, predictions and recommendations are 503 naming "no model".

Every case on SQLite, a representative set on PostgreSQL too (ON_BOTH_DATABASES).
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from api_support import NEW_USER, ClientMaker, add_version
from fastapi.testclient import TestClient
from safetensors.numpy import load_file, save_file

from app.ml.artifact import META_FILE, WEIGHTS_FILE, current_version_dir, point_current_at

DAMAGED = "29990101T000000000000Z-damaged0"
"""The damaged version's name: it sorts after every real version, so it is the newest."""

Damage = Callable[[Path], None]
"""Damages the version folder it is given, in place."""


# --- ways an artifact goes bad ------------------------------------------------------------------------


def header_length(folder: Path) -> int:
    return int.from_bytes((folder / WEIGHTS_FILE).read_bytes()[:8], "little")


def truncate_weights(keep: Callable[[Path], int]) -> Damage:
    """Cut the weights file after `keep(folder)` bytes, as an interrupted copy would."""

    def damage(folder: Path) -> None:
        weights = folder / WEIGHTS_FILE
        weights.write_bytes(weights.read_bytes()[: keep(folder)])

    return damage


def replace_header(text: Callable[[int], bytes]) -> Damage:
    """Swap the safetensors header for `text(length)`, keeping its length so only the JSON is bad."""

    def damage(folder: Path) -> None:
        weights = folder / WEIGHTS_FILE
        raw = weights.read_bytes()
        length = header_length(folder)
        new = text(length)
        assert len(new) == length
        weights.write_bytes(raw[:8] + new + raw[8 + length :])

    return damage


def write_weights(content: Callable[[dict[str, np.ndarray]], bytes]) -> Damage:
    """Replace the weights file by `content(the good tensors)`."""

    def damage(folder: Path) -> None:
        weights = folder / WEIGHTS_FILE
        weights.write_bytes(content(load_file(weights)))

    return damage


def as_pickle(tensors: dict[str, np.ndarray]) -> bytes:
    return pickle.dumps(tensors)


def as_torch_save(tensors: dict[str, np.ndarray]) -> bytes:
    import torch  # the tests may import torch; the server never does (test_service.py)

    buffer = io.BytesIO()
    torch.save({name: torch.from_numpy(array) for name, array in tensors.items()}, buffer)
    return buffer.getvalue()


def edit_weights(change: Callable[[dict[str, np.ndarray]], object]) -> Damage:
    """Rewrite the weights as a valid safetensors file after `change` edits the tensors."""

    def damage(folder: Path) -> None:
        tensors = {name: np.array(array) for name, array in load_file(folder / WEIGHTS_FILE).items()}
        change(tensors)
        save_file(tensors, folder / WEIGHTS_FILE)

    return damage


def set_value(name: str, value: float) -> Callable[[dict[str, np.ndarray]], object]:
    def change(tensors: dict[str, np.ndarray]) -> None:
        tensors[name].flat[-1] = value

    return change


def edit_meta(change: Callable[[dict], object]) -> Damage:
    """Rewrite meta.json after `change` edits it (`json` writes NaN and Infinity as they are)."""

    def damage(folder: Path) -> None:
        meta = json.loads((folder / META_FILE).read_text())
        change(meta)
        (folder / META_FILE).write_text(json.dumps(meta))

    return damage


def write_meta(content: bytes) -> Damage:
    return lambda folder: (folder / META_FILE).write_bytes(content)


def without_movies(folder: Path) -> None:
    """A consistent artifact of zero movies: valid files, nothing to recommend."""
    edit_meta(lambda meta: meta.update(movie_ids=[], n_movies=0))(folder)

    def drop_movies(tensors: dict[str, np.ndarray]) -> None:
        for name in ("movie_emb", "movie_bias", "baseline_movie_bias", "movie_popularity", "rank_movie_emb"):
            tensors[name] = tensors[name][:0]

    edit_weights(drop_movies)(folder)


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder)


def make_symlink_loop(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.symlink_to(folder.name)


def empty_folder(folder: Path) -> None:
    for file in folder.iterdir():
        file.unlink()


def weights_as_folder(folder: Path) -> None:
    (folder / WEIGHTS_FILE).unlink()
    (folder / WEIGHTS_FILE).mkdir()


def reverse(key: str) -> Callable[[dict], object]:
    return lambda meta: meta.update({key: meta[key][::-1]})


def duplicate_first(key: str) -> Callable[[dict], object]:
    return lambda meta: meta.update({key: [meta[key][0], *meta[key][:-1]]})


def shift_ids(key: str, by: float) -> Callable[[dict], object]:
    return lambda meta: meta.update({key: [i + by for i in meta[key]]})


TORCH = importlib.util.find_spec("torch") is not None

DAMAGES = [
    # the weights file: truncated, not safetensors, not the tensors serving needs
    pytest.param(truncate_weights(lambda _: 5), "shorter than the 8-byte header length", id="cut-in-length"),
    pytest.param(truncate_weights(lambda f: 8 + header_length(f) // 2), "truncated?", id="cut-in-header"),
    pytest.param(
        truncate_weights(lambda f: (f / WEIGHTS_FILE).stat().st_size - 10), "truncated?", id="cut-in-data"
    ),
    pytest.param(truncate_weights(lambda _: 0), "0 bytes", id="weights-empty"),
    pytest.param(write_weights(as_pickle), "not a readable safetensors", id="weights-pickle"),
    pytest.param(
        write_weights(as_torch_save),
        "not a readable safetensors",
        id="weights-torch-save",
        marks=pytest.mark.skipif(not TORCH, reason="torch is not installed"),
    ),
    pytest.param(replace_header(lambda n: b"{" + b"x" * (n - 1)), "header is not JSON", id="header-not-json"),
    pytest.param(
        replace_header(lambda n: b"[" + b" " * (n - 2) + b"]"), "not a JSON object", id="header-not-object"
    ),
    pytest.param(weights_as_folder, "not a readable safetensors", id="weights-a-folder"),
    pytest.param(
        edit_weights(lambda t: t.update(user_emb=t["user_emb"][:-1])),
        "'user_emb' has shape",
        id="short-tensor",
    ),
    pytest.param(
        edit_weights(lambda t: t.update(movie_emb=np.hstack([t["movie_emb"], t["movie_emb"][:, :1]]))),
        "'movie_emb' has shape",
        id="extra-factor",
    ),
    pytest.param(edit_weights(lambda t: t.pop("movie_bias")), "'movie_bias' missing", id="missing-tensor"),
    pytest.param(
        edit_weights(lambda t: t.update(user_emb=t["user_emb"].astype(np.float64))), "dtype F64", id="float64"
    ),
    pytest.param(
        edit_weights(lambda t: t.update(movie_bias=t["movie_bias"].astype(np.int32))), "dtype I32", id="int32"
    ),
    pytest.param(edit_weights(set_value("movie_emb", np.nan)), "NaN or infinite", id="nan-embedding"),
    pytest.param(edit_weights(set_value("user_bias", np.nan)), "NaN or infinite", id="nan-bias"),
    pytest.param(edit_weights(set_value("user_emb", np.inf)), "NaN or infinite", id="inf-embedding"),
    pytest.param(edit_weights(set_value("movie_bias", -np.inf)), "NaN or infinite", id="inf-bias"),
    # finite weights whose scores overflow float32: a saturated sigmoid would serve them as 5 stars
    pytest.param(
        edit_weights(lambda t: [t[n].fill(1e20) for n in ("user_emb", "movie_emb")]),
        "overflow",
        id="overflowing-embeddings",
    ),
    pytest.param(
        edit_weights(lambda t: [t[n].fill(3e38) for n in ("user_bias", "movie_bias")]),
        "overflow",
        id="overflowing-biases",
    ),
    pytest.param(without_movies, "no movies", id="zero-movies"),
    # meta.json
    pytest.param(lambda f: (f / META_FILE).unlink(), "no meta.json", id="meta-missing"),
    pytest.param(write_meta(b'{"format_version": 1,'), "not valid JSON", id="meta-not-json"),
    pytest.param(write_meta(b"\xff\xfe{}"), "not valid JSON", id="meta-not-utf8"),
    pytest.param(write_meta(b"[1, 2]"), "must hold a JSON object", id="meta-not-object"),
    pytest.param(edit_meta(lambda m: m.update(format_version=2)), "format_version 2", id="format-version-2"),
    pytest.param(edit_meta(lambda m: m.pop("format_version")), "format_version None", id="no-format-version"),
    pytest.param(edit_meta(lambda m: m.update(version=7)), "version must be", id="version-not-string"),
    pytest.param(edit_meta(lambda m: m.pop("user_ids")), "lacks 'user_ids'", id="no-user-ids"),
    pytest.param(edit_meta(lambda m: m.pop("movie_ids")), "lacks 'movie_ids'", id="no-movie-ids"),
    pytest.param(edit_meta(reverse("user_ids")), "user_ids must be positive, unique", id="ids-descending"),
    pytest.param(
        edit_meta(duplicate_first("movie_ids")), "movie_ids must be positive, unique", id="ids-duplicated"
    ),
    pytest.param(edit_meta(shift_ids("user_ids", -2)), "user_ids must be positive", id="ids-not-positive"),
    pytest.param(
        edit_meta(shift_ids("movie_ids", 0.5)), "movie_ids must be a list of integers", id="ids-fractional"
    ),
    pytest.param(
        edit_meta(lambda m: m.update(movie_ids="1-40")), "movie_ids must be a list of integers", id="ids-text"
    ),
    pytest.param(edit_meta(lambda m: m["user_ids"].pop()), "'user_emb' has shape", id="fewer-user-ids"),
    pytest.param(
        edit_meta(lambda m: m["movie_ids"].append(m["movie_ids"][-1] + 1)),
        "'movie_emb' has shape",
        id="more-movie-ids",
    ),
    pytest.param(edit_meta(lambda m: m.update(n_factors=9)), "'user_emb' has shape", id="n-factors-mismatch"),
    pytest.param(edit_meta(lambda m: m.pop("y_range")), "y_range", id="no-y-range"),
    pytest.param(edit_meta(lambda m: m.update(y_range=m["y_range"][::-1])), "y_range", id="y-range-inverted"),
    pytest.param(edit_meta(lambda m: m.update(y_range=[0, float("inf")])), "y_range", id="y-range-infinite"),
    pytest.param(edit_meta(lambda m: m.update(y_range=5.5)), "y_range", id="y-range-not-pair"),
    pytest.param(edit_meta(lambda m: m.update(global_mean="high")), "global_mean", id="global-mean-text"),
    pytest.param(
        edit_meta(lambda m: m.update(global_mean=float("nan"))), "global_mean", id="global-mean-nan"
    ),
    pytest.param(edit_meta(lambda m: m.update(rating_scale=[0.5, 5])), "rating_scale", id="scale-not-object"),
    pytest.param(
        edit_meta(lambda m: m.update(rating_scale={"min": 5.0, "max": 0.5, "step": 0.5})),
        "rating_scale",
        id="scale-inverted",
    ),
    pytest.param(
        edit_meta(lambda m: m.update(hyper_parameters=None)), "hyper_parameters", id="hyper-not-object"
    ),
    # the folder
    pytest.param(remove_folder, "no such version folder", id="current-names-missing-folder"),
    pytest.param(make_symlink_loop, "no such version folder", id="current-in-a-symlink-loop"),
    pytest.param(empty_folder, "no meta.json", id="version-folder-empty"),
]


ON_BOTH_DATABASES = {
    "cut-in-data",
    "weights-pickle",
    "short-tensor",
    "nan-embedding",
    "meta-not-json",
    "ids-duplicated",
    "current-names-missing-folder",
}
"""The cases also run on PostgreSQL. The checks are the loader's and touch no database; these
show once on each database that the service around them (refusing, keeping the old model,
starting unready with the rating endpoints working) does not depend on which one it uses."""


def on_databases(cases: list) -> list:
    """`cases` as (database_url, damage, problem) params for an indirect `database_url`: all
    on SQLite, those of ON_BOTH_DATABASES on PostgreSQL too."""
    unknown = ON_BOTH_DATABASES - {case.id for case in cases}
    if unknown:
        raise ValueError(f"ON_BOTH_DATABASES names no case {sorted(unknown)}")
    params = [
        pytest.param("sqlite", *case.values, id=f"sqlite-{case.id}", marks=case.marks) for case in cases
    ]
    params += [
        pytest.param(
            "postgresql", *case.values, id=f"postgresql-{case.id}", marks=[*case.marks, pytest.mark.postgres]
        )
        for case in cases
        if case.id in ON_BOTH_DATABASES
    ]
    return params


# --- helpers ------------------------------------------------------------------------------------------


def add_damaged_version(models_dir: Path, damage: Damage) -> None:
    """Copy the current version as DAMAGED (its own version name), damage it, make it current."""
    folder = models_dir / DAMAGED
    shutil.copytree(current_version_dir(models_dir), folder)
    edit_meta(lambda meta: meta.update(version=DAMAGED))(folder)
    damage(folder)
    point_current_at(models_dir, DAMAGED)


def logged(caplog: pytest.LogCaptureFixture, *fragments: str) -> bool:
    """Whether one warning or error of the service's logger holds every fragment."""
    return any(
        record.name.startswith("dotrec.")
        and record.levelno >= logging.WARNING
        and all(fragment in record.getMessage() for fragment in fragments)
        for record in caplog.records
    )


def serves(client: TestClient, version: str, rating: float) -> None:
    """Assert that `client` serves `version`, giving user 1 movie 2 exactly `rating`, and is ready."""
    prediction = client.get("/predict/1/2")
    assert prediction.status_code == 200, prediction.text
    assert prediction.json()["model_version"] == version
    assert prediction.json()["rating"] == rating
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["model_version"] == version


# --- the tests ----------------------------------------------------------------------------------------

EVERY_DAMAGE = pytest.mark.parametrize(
    ("database_url", "damage", "problem"), on_databases(DAMAGES), indirect=["database_url"]
)


@EVERY_DAMAGE
def test_a_bad_version_is_refused_and_the_previous_model_keeps_serving(
    make_client: ClientMaker,
    models_dir: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Damage,
    problem: str,
) -> None:
    caplog.set_level(logging.INFO, logger="dotrec")
    # two good versions, so that "the newest good one" after a restart is not merely the only one
    good = add_version(models_dir)
    client = make_client()
    rating = client.get("/predict/1/2").json()["rating"]
    serves(client, good, rating)

    add_damaged_version(models_dir, damage)
    caplog.clear()
    for _ in range(2):  # a refused version is not remembered as loaded: refused again, never "unchanged"
        refused = client.post("/admin/reload")
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        assert problem in detail and f"still serving {good}" in detail
        assert logged(caplog, "model refused", problem)
        serves(client, good, rating)
    assert client.get("/model").json()["version"] == good

    caplog.clear()
    restarted = make_client()
    serves(restarted, good, rating)
    assert logged(caplog, "model refused", problem)
    assert logged(caplog, f"serving the older model {good}")

    # recovery without a restart: a good version made current after the bad one is loaded
    point_current_at(models_dir, good)
    recovered = add_version(models_dir, scale=0.8)
    reloaded = client.post("/admin/reload")
    assert reloaded.status_code == 200, reloaded.text
    body = reloaded.json()
    assert (body["reloaded"], body["version"], body["previous_version"]) == (True, recovered, good)
    assert client.get("/predict/1/2").json()["model_version"] == recovered
    assert client.get("/ready").status_code == 200


@EVERY_DAMAGE
def test_with_only_a_bad_version_the_service_starts_unready_and_ratings_work(
    make_client: ClientMaker,
    models_dir: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Damage,
    problem: str,
) -> None:
    caplog.set_level(logging.INFO, logger="dotrec")
    good = current_version_dir(models_dir)
    add_damaged_version(models_dir, damage)
    shutil.rmtree(good)
    assert all(p.name == DAMAGED for p in models_dir.glob("[0-9]*"))

    client = make_client()
    assert logged(caplog, "model refused", problem)
    assert logged(caplog, "no model is serving", problem)
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["detail"].startswith("not ready: model: ") and problem in ready.json()["detail"]
    assert ready.json()["checks"]["database"] == "ok" and problem in ready.json()["checks"]["model"]

    rating = {"user_id": NEW_USER, "movie_id": 1, "rating": 4}
    assert client.post("/ratings", json=rating).status_code == 201
    assert client.get(f"/users/{NEW_USER}/ratings").json()["total"] == 1
    assert client.delete(f"/ratings/{NEW_USER}/1").status_code == 204
    assert client.get(f"/users/{NEW_USER}/ratings").json()["total"] == 0
    for path in ("/predict/1/2", "/recommendations/1"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "no model" in response.json()["detail"] and problem in response.json()["detail"], path
    refused = client.post("/admin/reload")
    assert refused.status_code == 409
    assert problem in refused.json()["detail"] and "no model is serving" in refused.json()["detail"]
