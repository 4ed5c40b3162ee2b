"""download and resolve_source, offline: local servers and unreachable addresses only."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.data import download as download_module
from app.data.download import GROUPLENS_NAMES, DownloadError, download
from app.data.sources import SourceUnavailable, resolve_source
from app.data.synth import PRESETS

SMALL_RATINGS = "userId,movieId,rating,timestamp\n1,10,4.0,100\n2,10,3.5,200\n"
SMALL_MOVIES = "movieId,title,genres\n10,Heat (1995),Action|Crime\n"


def unreachable_url() -> str:
    """An address on this machine where nothing listens: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/ml-100k.zip"


def small_zip(path: Path, folder: str = "ml-latest-small") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{folder}/ratings.csv", SMALL_RATINGS)
        archive.writestr(f"{folder}/movies.csv", SMALL_MOVIES)
    return path


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on localhost serving a folder: (base URL, folder)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *_: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def point(monkeypatch: pytest.MonkeyPatch, name: str, url: str) -> None:
    monkeypatch.setitem(download_module.GROUPLENS_NAMES, name, url)


def test_the_known_names_are_the_official_archives() -> None:
    assert set(GROUPLENS_NAMES) == {
        "ml-100k",
        "ml-1m",
        "ml-10m",
        "ml-20m",
        "ml-25m",
        "ml-32m",
        "ml-latest-small",
        "ml-latest",
    }
    assert GROUPLENS_NAMES["ml-25m"] == "https://files.grouplens.org/datasets/movielens/ml-25m.zip"


def test_an_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ml-100k.*ml-latest"):
        download("ml-7", tmp_path)


def test_offline_fails_fast_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point(monkeypatch, "ml-100k", unreachable_url())
    started = time.monotonic()
    with pytest.raises(DownloadError, match="could not download"):
        download("ml-100k", tmp_path / "cache", timeout_s=5)
    assert time.monotonic() - started < 5
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_saves_the_archive_then_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_server: tuple[str, Path]
) -> None:
    base, served = file_server
    small_zip(served / "ml-latest-small.zip")
    point(monkeypatch, "ml-latest-small", f"{base}/ml-latest-small.zip")
    cache = tmp_path / "cache"
    archive = download("ml-latest-small", cache)
    assert archive == cache / "ml-latest-small.zip"
    assert archive.read_bytes() == (served / "ml-latest-small.zip").read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["ml-latest-small.zip"]  # no temp file left

    point(monkeypatch, "ml-latest-small", unreachable_url())
    assert download("ml-latest-small", cache) == archive  # cached: no network needed


@pytest.mark.parametrize(
    ("served_name", "content", "message"),
    [("other.zip", b"", "HTTP 404"), ("ml-100k.zip", b"<html>maintenance</html>", "not send a zip")],
    ids=["http-error", "not-a-zip"],
)
def test_bad_answers_are_download_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    file_server: tuple[str, Path],
    served_name: str,
    content: bytes,
    message: str,
) -> None:
    base, served = file_server
    (served / served_name).write_bytes(content)
    point(monkeypatch, "ml-100k", f"{base}/ml-100k.zip")
    with pytest.raises(DownloadError, match=message):
        download("ml-100k", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_existing_path_is_read(tmp_path: Path) -> None:
    archive = small_zip(tmp_path / "mine.zip")
    data, note = resolve_source(str(archive), tmp_path / "cache")
    assert len(data.ratings) == 2
    assert note == f"read {archive}"
    assert not (tmp_path / "cache").exists()


def test_a_cached_grouplens_archive_is_read_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    small_zip(cache / "ml-latest-small.zip")
    point(monkeypatch, "ml-latest-small", unreachable_url())
    data, note = resolve_source("ml-latest-small", cache)
    assert data.name == "ml-latest-small"
    assert len(data.ratings) == 2
    assert "GENERATED" not in note


def test_offline_a_named_set_is_an_error_that_says_how_to_give_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    point(monkeypatch, "ml-25m", unreachable_url())
    cache = tmp_path / "cache"
    with pytest.raises(SourceUnavailable, match=r"could not fetch ml-25m .*give the path of a copy"):
        resolve_source("ml-25m", cache)
    assert not (cache / "synthetic-ml-100k").exists(), "nothing generated"


def test_offline_the_first_run_falls_back_to_generated_data_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    point(monkeypatch, "ml-25m", unreachable_url())
    cache = tmp_path / "cache"
    data, note = resolve_source("ml-25m", cache, generated_if_offline=True)
    assert "GENERATED" in note
    assert "ml-25m" in note
    assert "could not fetch" in note
    n_users, n_movies, n_ratings = PRESETS["ml-100k"]
    assert len(data.ratings) == n_ratings
    assert data.ratings["user_id"].nunique() == n_users
    assert data.ratings["movie_id"].nunique() == n_movies
    folder = cache / "synthetic-ml-100k"
    assert (folder / "synth.json").exists()

    written = (folder / "ratings.csv").stat().st_mtime_ns
    again, _ = resolve_source("ml-25m", cache, generated_if_offline=True)
    assert (folder / "ratings.csv").stat().st_mtime_ns == written  # generated once, then reused
    assert again.ratings.equals(data.ratings)


def test_anything_else_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither an existing file or folder nor a known data set"):
        resolve_source(str(tmp_path / "no-such-file.csv"), tmp_path / "cache")
    with pytest.raises(ValueError, match="ml-100k"):
        resolve_source("ml-3m", tmp_path / "cache")
