"""The database export as memory-mapped `.npy` files, re-read from the database only when it changed.

`cached_training_set(engine, cache_dir)` asks the database for its fingerprint (one aggregate
query, `database_fingerprint`) and, when the cache was written for the same database and
fingerprint, returns a `TrainingSet` whose arrays are `np.load(..., mmap_mode="r")` views of
the files: no export, no copy, pages shared between processes and reclaimable by the kernel.
Otherwise it exports (`export_training_set`), writes the arrays into a temporary folder,
renames it into place and points `cache_dir/current` at it atomically (a symlink swap), then
removes older folders. Rebuilds are serialised by an advisory lock (`cache_dir/.lock`), so
concurrent callers export once.

Layout of one cached set (a folder `set-<UTC time>-<random>`): `user_rows.npy` int32,
`movie_rows.npy` int32, `ratings.npy` float32, `timestamps.npy` int64, `user_ids.npy` int64,
`movie_ids.npy` int64, and `cache.json` (format, database URL without password, the database
fingerprint the set was read under, the export's own fingerprint, creation time).

The fingerprint is read before the export: a write landing in between makes the cached data
newer than its key, so the next call refreshes once (never the reverse, a stale hit).
"""

from __future__ import annotations

import fcntl
import json
import logging
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import BigInteger, Engine, cast, func, select

from app.data.links import CURRENT_LINK, point_current_at
from app.data.training_set import TrainingSet
from app.db.export import export_training_set
from app.db.models import Rating

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
META_FILE = "cache.json"
LOCK_FILE = ".lock"
#: the arrays of a TrainingSet and the dtype each is stored in
ARRAYS: dict[str, np.dtype] = {
    "user_rows": np.dtype(np.int32),
    "movie_rows": np.dtype(np.int32),
    "ratings": np.dtype(np.float32),
    "timestamps": np.dtype(np.int64),
    "user_ids": np.dtype(np.int64),
    "movie_ids": np.dtype(np.int64),
}
PER_RATING = ("user_rows", "movie_rows", "ratings", "timestamps")


def database_fingerprint(engine: Engine) -> dict[str, int]:
    """What tells one state of the ratings table from another, in one aggregate query.

    `rows` (count) and `max_rated_at` (newest unix time) as the export records them, plus
    `sum_rated_at` and `sum_half_stars` (sum of rating x 2, exact: the schema allows only
    half steps), which catch what the first two miss for the same single scan: a rating
    changed with an older time, or one deleted and another inserted.
    """
    query = select(
        func.count(),
        func.coalesce(func.max(Rating.rated_at), 0),
        func.coalesce(func.sum(Rating.rated_at), 0),
        func.coalesce(func.sum(cast(Rating.rating * 2, BigInteger)), 0),
    )
    with engine.connect() as connection:
        rows, max_rated_at, sum_rated_at, sum_half_stars = connection.execute(query).one()
    return {
        "rows": int(rows),
        "max_rated_at": int(max_rated_at),
        "sum_rated_at": int(sum_rated_at),
        "sum_half_stars": int(sum_half_stars),
    }


def cached_training_set(engine: Engine, cache_dir: Path) -> TrainingSet:
    """The database's ratings as a `TrainingSet` of read-only memory-mapped arrays.

    Read from `cache_dir` when it holds the export of this database at its current
    fingerprint, else exported and cached first.
    """
    key = _cache_key(engine)
    fingerprint = database_fingerprint(engine)
    cached = _load_current(cache_dir, key, fingerprint)
    if cached is not None:
        log.info("export cache hit: %s rows from %s", f"{fingerprint['rows']:,}", cache_dir)
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / LOCK_FILE):
        fingerprint = database_fingerprint(engine)
        cached = _load_current(cache_dir, key, fingerprint)
        if cached is not None:  # another process refreshed it while this one waited
            return cached
        log.info("export cache miss: exporting %s rows into %s", f"{fingerprint['rows']:,}", cache_dir)
        folder = _write(cache_dir, export_training_set(engine), key, fingerprint)
        point_current_at(cache_dir, folder.name)
        _remove_all_but(cache_dir, folder.name)
        loaded = _load(folder, key, fingerprint)
    if loaded is None:
        raise RuntimeError(f"{folder}: the export cache just written does not load back")
    return loaded


def _cache_key(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _load_current(cache_dir: Path, key: str, fingerprint: dict[str, int]) -> TrainingSet | None:
    current = cache_dir / CURRENT_LINK
    if not current.exists():
        return None
    return _load(current.resolve(), key, fingerprint)


def _load(folder: Path, key: str, fingerprint: dict[str, int]) -> TrainingSet | None:
    """The set cached in `folder` when it was written for `key` at `fingerprint`, else None."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
        if (meta.get("format"), meta.get("database"), meta.get("database_fingerprint")) != (
            CACHE_FORMAT,
            key,
            fingerprint,
        ):
            return None
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    except (OSError, ValueError) as error:  # removed by a concurrent refresh, or damaged
        log.warning("export cache at %s unusable (%s): exporting again", folder, error)
        return None
    lengths = {len(arrays[name]) for name in PER_RATING}
    # the export's own row count: a rating written between the fingerprint and the export is in it
    if lengths != {meta["fingerprint"]["rows"]} or any(arrays[n].dtype != d for n, d in ARRAYS.items()):
        log.warning("export cache at %s does not match its metadata: exporting again", folder)
        return None
    return TrainingSet(**arrays, fingerprint=meta["fingerprint"])


def _write(cache_dir: Path, training: TrainingSet, key: str, fingerprint: dict[str, int]) -> Path:
    """Write `training` into a temporary folder of `cache_dir`, then rename it to its final name."""
    staging = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=cache_dir))
    try:
        for name, dtype in ARRAYS.items():
            np.save(staging / f"{name}.npy", np.ascontiguousarray(getattr(training, name), dtype=dtype))
        meta = {
            "format": CACHE_FORMAT,
            "database": key,
            "database_fingerprint": fingerprint,
            "fingerprint": training.fingerprint,
            "created_at": datetime.now(UTC).isoformat(),
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=1))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = cache_dir / f"set-{stamp}-{secrets.token_hex(4)}"
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _remove_all_but(cache_dir: Path, keep: str) -> None:
    """Remove older sets (a process still mapping one keeps its pages: unlinked, not gone)."""
    for folder in cache_dir.glob("set-*"):
        if folder.name != keep:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
