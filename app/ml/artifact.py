"""The trained artifact, the one contract between training and serving.

`models/<version>/weights.safetensors` (float32 tensors, never pickle) and `meta.json` (id maps,
scale, hyper-parameters, metrics, fingerprint, versions), written atomically, with the symlink
`models/current` naming the newest good version.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from app.data.links import CURRENT_LINK, point_current_at
from app.ml.safetensors_layout import SAFETENSORS_F32, UnsupportedTensor, safetensors_layout

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"

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
#: the ranking head's tensors, present exactly when meta.json has a `ranking_head` (an artifact
#: of `dotrec train --objective rating`, or of an older version, has none and serves as before)
RANKING_TENSOR_SHAPES: dict[str, tuple[str, ...]] = {
    "rank_user_emb": ("users", "rank_factors"),
    "rank_movie_emb": ("movies", "rank_factors"),
}
#: what serving needs of meta.json's `ranking_head` to fold a new user in (finite numbers)
RANKING_HEAD_TERMS = (
    "unobserved_weight",
    "reg",
    "reg_exponent",
    "rating_weight",
    "rating_pivot",
    "min_weight",
)
#: how a rating head's score becomes a rating: `sigmoid` (trained) or `linear` (biases alone)
RATING_TRANSFORMS = ("sigmoid", "linear")


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
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the version from a server run as another user
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


def current_version_dir(models_dir: Path) -> Path | None:
    """The folder `current` points at, else the newest version folder, else None.

    A `current` naming a folder that is gone (or a symlink loop) is returned as it is, for
    load_artifact to refuse: quietly serving some other version would hide the mistake.
    """
    current = models_dir / CURRENT_LINK
    if current.is_symlink() or current.exists():
        return Path(os.path.realpath(current))  # unlike Path.resolve, never raises on a loop
    versions = sorted(p for p in models_dir.glob("[0-9]*") if p.is_dir()) if models_dir.is_dir() else []
    return versions[-1] if versions else None


def load_artifact(path: Path) -> Artifact:
    """Load and validate a version folder; any problem raises ArtifactError naming it."""
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such version folder")
    meta = _read_meta(path)
    return _validated(path, _read_weights(path), meta)


def artifact_in_memory(weights: dict[str, np.ndarray], meta: dict) -> Artifact:
    """An artifact that was never saved (a model just trained, to score held-out data exactly as
    it would be served), validated as `load_artifact` validates a saved one."""
    arrays = {name: np.ascontiguousarray(w, np.float32) for name, w in weights.items()}
    return _validated(Path("<memory>"), arrays, {"format_version": FORMAT_VERSION, **meta})


def _validated(path: Path, weights: dict[str, np.ndarray], meta: dict) -> Artifact:
    user_ids = _id_map(meta, "user_ids")
    movie_ids = _id_map(meta, "movie_ids")
    sizes = {"users": len(user_ids), "movies": len(movie_ids), "factors": meta.get("n_factors")}
    shapes = dict(TENSOR_SHAPES)
    if "ranking_head" in meta:
        sizes["rank_factors"] = _ranking_head_factors(path, meta["ranking_head"])
        shapes |= RANKING_TENSOR_SHAPES
    unexpected = sorted(set(RANKING_TENSOR_SHAPES) & set(weights) - set(shapes))
    if unexpected:
        raise ArtifactError(f"{path}: tensor {unexpected[0]!r} without a ranking_head in {META_FILE}")
    transform = meta.get("rating_head", {}).get("transform", "sigmoid")
    if transform not in RATING_TRANSFORMS:
        raise ArtifactError(f"{path}: {META_FILE} rating_head transform must be sigmoid or linear")
    for name, dims in shapes.items():
        if name not in weights:
            raise ArtifactError(f"{path}: tensor {name!r} missing from {WEIGHTS_FILE}")
        expected = tuple(sizes[d] for d in dims)
        if weights[name].shape != expected:
            raise ArtifactError(
                f"{path}: tensor {name!r} has shape {weights[name].shape}, meta.json implies {expected}"
            )
        if not np.isfinite(weights[name]).all():
            raise ArtifactError(f"{path}: tensor {name!r} holds NaN or infinite values")
    _check_scale(path, meta)
    return Artifact(path, weights, meta, user_ids, movie_ids)


def _ranking_head_factors(path: Path, head: object) -> int:
    """The width of the ranking head meta.json describes; ArtifactError unless it is whole."""
    if not isinstance(head, dict):
        raise ArtifactError(f"{path}: {META_FILE} ranking_head must be an object")
    factors = head.get("n_factors")
    if type(factors) is not int or factors < 1:
        raise ArtifactError(f"{path}: {META_FILE} ranking_head n_factors must be a positive integer")
    for term in RANKING_HEAD_TERMS:
        if not _is_finite_number(head.get(term)):
            raise ArtifactError(f"{path}: {META_FILE} ranking_head {term} must be a finite number")
    return factors


def _is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_scale(path: Path, meta: dict) -> None:
    """y_range, rating_scale and global_mean: finite numbers, ranges with lo < hi.

    An infinite end or an inverted scale still gives finite ratings (the sigmoid and the clip
    see to that), all of them at one end of the scale: only a check here refuses such a model.
    """
    y_range = meta.get("y_range")
    if not (
        isinstance(y_range, list)
        and len(y_range) == 2
        and all(_is_finite_number(v) for v in y_range)
        and y_range[0] < y_range[1]
    ):
        raise ArtifactError(
            f"{path}: meta.json y_range must be [lo, hi], finite with lo < hi, not {y_range!r}"
        )
    scale = meta.get("rating_scale", {})
    lo, hi = scale.get("min", y_range[0]), scale.get("max", y_range[1])
    if not (all(_is_finite_number(v) for v in scale.values()) and lo < hi):
        raise ArtifactError(
            f"{path}: meta.json rating_scale must be finite numbers with min < max, not {scale!r}"
        )
    if not _is_finite_number(meta["global_mean"]):
        raise ArtifactError(
            f"{path}: meta.json global_mean must be a finite number, not {meta['global_mean']!r}"
        )


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
    for key, (types, wanted) in _META_TYPES.items():
        value = meta.get(key)
        if key in meta and (not isinstance(value, types) or isinstance(value, bool)):
            raise ArtifactError(f"{path}: {META_FILE} {key} must be {wanted}, not {value!r}")
    if not meta["version"]:
        raise ArtifactError(f"{path}: {META_FILE} version must be a non-empty string")
    return meta


#: The JSON type of each meta.json value serving reads (besides the id maps and y_range, checked
#: on their own): a wrong one would fail in the middle of a request, or of a reload.
_META_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "version": ((str,), "a string"),
    "created_at": ((str, type(None)), "a string or null"),
    "n_factors": ((int,), "an integer"),
    "n_ratings": ((int, type(None)), "an integer or null"),
    "global_mean": ((int, float), "a number"),
    "rating_scale": ((dict,), "an object"),
    "rating_head": ((dict,), "an object"),
    "hyper_parameters": ((dict,), "an object"),
    "metrics": ((dict,), "an object"),
    "data_fingerprint": ((dict,), "an object"),
    "data_source": ((str, type(None)), "a string or null"),
}


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    """The tensors of `weights.safetensors`, memory-mapped read-only (`np.memmap` views).

    Nothing is copied: the arrays are views of one shared, read-only mapping of the file, so
    every process serving the same version shares its pages (they count once in the machine's
    memory, and in each process's PSS as a share). The file is checked against the safetensors
    format first (`safetensors_layout`): a truncated file, a header that is not JSON, a tensor
    that is not F32 or offsets outside the file raise ArtifactError, never a crash later.
    Version folders are written once and never modified in place, which a mapping relies on.
    """
    file = path / WEIGHTS_FILE
    try:
        with open(file, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            layout = safetensors_layout(handle, size)
            mapped = np.memmap(handle, dtype=np.uint8, mode="r", shape=(size,))
    except FileNotFoundError as error:
        raise ArtifactError(f"{path}: no {WEIGHTS_FILE}") from error
    except UnsupportedTensor as error:
        raise ArtifactError(f"{path}: {WEIGHTS_FILE}: {error}") from error
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path}: {WEIGHTS_FILE} is not a readable safetensors file ({error})") from error
    return {
        name: mapped[start:stop].view(SAFETENSORS_F32).reshape(shape)
        for name, (shape, start, stop) in layout.items()
    }


def _id_map(meta: dict, key: str) -> np.ndarray:
    # numpy would truncate 1.5 to 1, and parse "1": a wrong id map must not load as a right one
    values = meta[key]
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise ArtifactError(f"meta.json {key} must be a list of integers")
    try:
        ids = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as error:
        raise ArtifactError(f"meta.json {key} must be a list of integers ({error})") from error
    if ids.ndim != 1 or (len(ids) > 1 and not (np.diff(ids) > 0).all()) or (ids <= 0).any():
        raise ArtifactError(f"meta.json {key} must be positive, unique and ascending")
    return ids
