"""Fetch the official MovieLens archives from GroupLens into a local cache."""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"
# Data set name -> official archive URL. Looked up at call time, so tests can point one elsewhere.
GROUPLENS_NAMES: dict[str, str] = {
    name: f"{GROUPLENS_URL}/{name}.zip"
    for name in (
        "ml-100k",
        "ml-1m",
        "ml-10m",
        "ml-20m",
        "ml-25m",
        "ml-32m",
        "ml-latest-small",
        "ml-latest",
    )
}
_CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A data set could not be fetched (offline, HTTP error, or not a zip archive)."""


def download(name: str, cache_dir: Path, timeout_s: float = 30) -> Path:
    """The archive of data set `name` in `cache_dir` (`<name>.zip`), downloaded if not cached yet.

    The download streams into a temporary file in `cache_dir` that is renamed only when complete
    and a valid zip, so an interrupted download never leaves a half archive behind. `timeout_s`
    bounds connecting and each wait for data, not the whole transfer.
    """
    if name not in GROUPLENS_NAMES:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(GROUPLENS_NAMES)}")
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{name}.zip"
    if zipfile.is_zipfile(target):
        log.info("using cached %s", target)
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    url = GROUPLENS_NAMES[name]
    log.info("downloading %s from %s", name, url)
    partial = _fetch(url, cache_dir, timeout_s)
    if not zipfile.is_zipfile(partial):
        partial.unlink()
        raise DownloadError(f"{url} did not send a zip archive")
    os.replace(partial, target)
    log.info("saved %s (%d bytes)", target, target.stat().st_size)
    return target


def _fetch(url: str, folder: Path, timeout_s: float) -> Path:
    """Stream `url` into a new temporary file in `folder`; the file's path."""
    handle, name = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    partial = Path(name)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response,
        ):
            if response.is_error:
                raise DownloadError(f"could not download {url}: HTTP {response.status_code}")
            for chunk in response.iter_bytes(_CHUNK_BYTES):
                out.write(chunk)
    except httpx.HTTPError as error:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {url} ({type(error).__name__}: {error}); offline?"
        ) from error
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial
