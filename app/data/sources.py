"""Turn a data source setting (a path or a GroupLens name) into ratings, offline included."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from app.data.download import GROUPLENS_NAMES, DownloadError, download
from app.data.movielens import RatingsSet, read_ratings_set
from app.data.synth import PRESETS, write_synthetic

log = logging.getLogger(__name__)

# What stands in for a GroupLens data set that cannot be fetched.
FALLBACK_PRESET = "ml-100k"
FALLBACK_SEED = 0


class SourceUnavailable(ValueError):
    """A named data set could not be fetched (and generated data was not asked for)."""


def resolve_source(
    source: str, cache_dir: Path, generated_if_offline: bool = False
) -> tuple[RatingsSet, str]:
    """The ratings `source` names, and a note saying where they came from.

    `source` is an existing file, folder or archive (read as is) or a GroupLens name such as
    "ml-100k" (read from `cache_dir`, downloaded first if need be). When the download fails,
    SourceUnavailable says so and how to give a path instead; only with `generated_if_offline`
    (the first-run script, scripts/run.sh) is synthetic data shaped like ml-100k generated into
    `cache_dir` instead, the note saying so loudly. Anything else raises ValueError.
    """
    path = Path(source)
    if path.exists():
        return read_ratings_set(path), f"read {path}"
    if source not in GROUPLENS_NAMES:
        raise ValueError(
            f"data source {source!r} is neither an existing file or folder nor a known data set "
            f"({', '.join(GROUPLENS_NAMES)})"
        )
    cache_dir = Path(cache_dir)
    try:
        archive = download(source, cache_dir)
    except DownloadError as error:
        if generated_if_offline:
            return _generated_instead(source, cache_dir, error)
        raise SourceUnavailable(
            f"could not fetch {source} ({error}); give the path of a copy instead (a folder, .zip "
            f"or .tar.gz of it), or put its archive in {cache_dir}"
        ) from error
    return read_ratings_set(archive), f"read {source} from {archive}"


def _generated_instead(source: str, cache_dir: Path, error: DownloadError) -> tuple[RatingsSet, str]:
    """Synthetic stand-in data (reused from `cache_dir` when already generated) and its note."""
    n_users, n_movies, n_ratings = PRESETS[FALLBACK_PRESET]
    folder = cache_dir / f"synthetic-{FALLBACK_PRESET}"
    if not _is_generated(folder, n_users, n_movies, n_ratings, FALLBACK_SEED):
        write_synthetic(folder, n_users, n_movies, n_ratings, seed=FALLBACK_SEED)
    note = (
        f"WARNING: could not fetch {source} ({error}). Using GENERATED synthetic data instead, "
        f"shaped like {FALLBACK_PRESET} ({n_users} users, {n_movies} movies, {n_ratings} ratings, "
        f"seed {FALLBACK_SEED}) from {folder}; results on it say nothing about real MovieLens data."
    )
    log.warning(note)
    return read_ratings_set(folder), note


def _is_generated(folder: Path, n_users: int, n_movies: int, n_ratings: int, seed: int) -> bool:
    """Whether `folder` holds a complete synthetic set with these sizes and seed."""
    try:
        summary = json.loads((folder / "synth.json").read_text())
    except (OSError, ValueError):
        return False
    wanted = {"n_users": n_users, "n_movies": n_movies, "n_ratings": n_ratings, "seed": seed}
    return all(summary.get(key) == value for key, value in wanted.items())
