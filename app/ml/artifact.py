"""The trained artifact, the one contract between training and serving.

`models/<version>/weights.safetensors` (float32 tensors, never pickle) and `meta.json` (id maps,
scale, hyper-parameters, metrics, fingerprint, versions), written atomically, with the symlink
`models/current` naming the newest good version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"
CURRENT_LINK = "current"

#: tensor name -> shape in terms of (users, movies, factors)
TENSOR_SHAPES: dict[str, tuple[str, ...]] = {
    "user_emb": ("users", "factors"),
    "movie_emb": ("movies", "factors"),
    "user_bias": ("users",),
    "movie_bias": ("movies",),
    "baseline_user_bias": ("users",),
    "baseline_movie_bias": ("movies",),
    "movie_popularity": ("movies",),
}


class ArtifactError(ValueError):
    """The artifact is missing, corrupt or incompatible; the message says which and why."""


@dataclass(frozen=True)
class Artifact:
    """A loaded, validated model version.

    Attributes:
        path: the version's folder.
        weights: float32 arrays named as in TENSOR_SHAPES.
        meta: the parsed meta.json.
        user_ids: int64 (n_users,), external id of each user row, ascending.
        movie_ids: int64 (n_movies,), external id of each movie row, ascending.
    """

    path: Path
    weights: dict[str, np.ndarray]
    meta: dict
    user_ids: np.ndarray
    movie_ids: np.ndarray

    @property
    def version(self) -> str:
        return self.meta["version"]


def new_version_name(fingerprint: dict) -> str:
    """`<UTC time>-<data digest>`: sorts by creation time, names the data it learnt from."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{str(fingerprint.get('sha256', 'nodata'))[:8]}"


def save_artifact(models_dir: Path, weights: dict[str, np.ndarray], meta: dict) -> Path:
    """Write a version into a temp folder, check it loads, rename it into place, move `current`.

    `meta` must hold `version`, `user_ids`, `movie_ids` and whatever else the caller records;
    `format_version` and `created_at` are filled in here. Returns the version's folder.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "created_at": datetime.now(UTC).isoformat(), **meta}
    staging = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=models_dir))
    try:
        save_file(
            {name: np.ascontiguousarray(w, np.float32) for name, w in weights.items()}, staging / WEIGHTS_FILE
        )
        (staging / META_FILE).write_text(json.dumps(meta, indent=1))
        load_artifact(staging)
        final = models_dir / meta["version"]
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    point_current_at(models_dir, final.name)
    return final


def point_current_at(models_dir: Path, version: str) -> None:
    """Atomically make `models_dir/current` a relative symlink to `version`."""
    temporary = models_dir / f".{CURRENT_LINK}-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(version)
    os.replace(temporary, models_dir / CURRENT_LINK)


def current_version_dir(models_dir: Path) -> Path | None:
    """The folder `current` points at, else the newest version folder, else None."""
    current = models_dir / CURRENT_LINK
    if current.exists():
        return current.resolve()
    versions = sorted(p for p in models_dir.glob("[0-9]*") if p.is_dir()) if models_dir.is_dir() else []
    return versions[-1] if versions else None


def load_artifact(path: Path) -> Artifact:
    """Load and validate a version folder; any problem raises ArtifactError naming it."""
    meta = _read_meta(path)
    weights = _read_weights(path)
    user_ids = _id_map(meta, "user_ids")
    movie_ids = _id_map(meta, "movie_ids")
    sizes = {"users": len(user_ids), "movies": len(movie_ids), "factors": meta.get("n_factors")}
    for name, dims in TENSOR_SHAPES.items():
        if name not in weights:
            raise ArtifactError(f"{path}: tensor {name!r} missing from {WEIGHTS_FILE}")
        expected = tuple(sizes[d] for d in dims)
        if weights[name].shape != expected:
            raise ArtifactError(
                f"{path}: tensor {name!r} has shape {weights[name].shape}, meta.json implies {expected}"
            )
        if not np.isfinite(weights[name]).all():
            raise ArtifactError(f"{path}: tensor {name!r} holds NaN or infinite values")
    lo, hi = meta.get("y_range", (None, None))
    if not (isinstance(lo, int | float) and isinstance(hi, int | float) and lo < hi):
        raise ArtifactError(f"{path}: meta.json y_range must be [lo, hi] with lo < hi")
    return Artifact(path, weights, meta, user_ids, movie_ids)


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / META_FILE).read_text())
    except FileNotFoundError as error:
        raise ArtifactError(f"{path}: no {META_FILE}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path}: {META_FILE} is not valid JSON ({error})") from error
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: {META_FILE} must hold a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {meta.get('format_version')!r} is not the supported {FORMAT_VERSION}"
        )
    for key in ("version", "n_factors", "global_mean", "user_ids", "movie_ids"):
        if key not in meta:
            raise ArtifactError(f"{path}: {META_FILE} lacks {key!r}")
    return meta


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    try:
        return load_file(path / WEIGHTS_FILE)
    except FileNotFoundError as error:
        raise ArtifactError(f"{path}: no {WEIGHTS_FILE}") from error
    except (SafetensorError, OSError, ValueError) as error:
        raise ArtifactError(f"{path}: {WEIGHTS_FILE} is not a readable safetensors file ({error})") from error


def _id_map(meta: dict, key: str) -> np.ndarray:
    try:
        ids = np.asarray(meta[key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as error:
        raise ArtifactError(f"meta.json {key} must be a list of integers ({error})") from error
    if ids.ndim != 1 or (len(ids) > 1 and not (np.diff(ids) > 0).all()) or (ids <= 0).any():
        raise ArtifactError(f"meta.json {key} must be positive, unique and ascending")
    return ids
