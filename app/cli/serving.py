"""Commands that serve a model: the REST API, and every user's top-k as a batch."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Annotated

import typer

from app.cli import app, console
from app.config import get_settings


@app.command("recommend-all")
def recommend_all(
    k: Annotated[int, typer.Option(help="recommendations per user (1..32767)")] = 100,
    out: Annotated[Path, typer.Option(help="the parquet file to write")] = Path("recommendations.parquet"),
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Top-k unrated movies of every user of the current model, into one parquet file."""
    from app.jobs.recommend_all import run_recommend_all
    from app.jobs.training import EXPORT_CACHE

    settings = get_settings()
    try:
        report = run_recommend_all(settings, k, out, not quiet, settings.data_dir / EXPORT_CACHE)
    except ValueError as error:  # ArtifactError (no or bad model) is one, and so is a bad --k
        console.print(f"[red]{error}")
        raise typer.Exit(1) from error
    console.print(report.summary())


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    access_log: Annotated[bool, typer.Option(help="log every request (costs throughput)")] = True,
    keep_alive: Annotated[
        int | None, typer.Option(help="seconds an idle connection stays open [SERVER_KEEP_ALIVE_S: 5]", min=1)
    ] = None,
    header_timeout: Annotated[
        float | None,
        typer.Option(help="seconds a request's headers may take [SERVER_HEADER_TIMEOUT_S: 10]", min=0.1),
    ] = None,
    max_header_bytes: Annotated[
        int | None, typer.Option(help="largest request headers [SERVER_MAX_HEADER_BYTES: 16384]", min=1024)
    ] = None,
    max_connections: Annotated[
        int | None,
        typer.Option(help="connections at once, more get 503 [SERVER_MAX_CONNECTIONS: 1000]", min=1),
    ] = None,
) -> None:
    """Serve the REST API with uvicorn (the newest model in MODELS_DIR, ratings from DATABASE_URL),
    with limits on slow and oversized clients (README, "Serving limits")."""
    import uvicorn

    # the options become the settings every worker process reads (they start from this environment)
    given = {
        "SERVER_KEEP_ALIVE_S": keep_alive,
        "SERVER_HEADER_TIMEOUT_S": header_timeout,
        "SERVER_MAX_HEADER_BYTES": max_header_bytes,
        "SERVER_MAX_CONNECTIONS": max_connections,
    }
    os.environ.update({name: str(value) for name, value in given.items() if value is not None})
    return_freed_memory()
    get_settings.cache_clear()
    settings = get_settings()
    uvicorn.run(
        "app.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
        http="app.api.http_limits:GuardedHttpToolsProtocol",
        timeout_keep_alive=settings.server_keep_alive_s,
        limit_concurrency=settings.server_max_connections,
    )


#: glibc's malloc, as it holds memory for a server: arrays over this size get pages of their own,
#: returned when freed, and at most this many arenas (one per thread by default)
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": 128 * 1024, "MALLOC_ARENA_MAX": 2}
_MALLOPT = {"MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_ARENA_MAX": -8}  # M_MMAP_THRESHOLD, M_ARENA_MAX


def return_freed_memory() -> None:
    """Let the server give back what a large request freed (glibc only; a no-op elsewhere).

    glibc raises its mmap threshold each time a large block is freed, so after a few large
    requests their arrays come from the heap, which is not returned: 16 requests of the largest
    valid matrix at once left the server at 452 MB resident against 154 MB before, and 166 MB
    with this (BENCHMARKS.md, "Hostile requests"). A fixed threshold keeps large arrays in pages
    of their own. Worker processes read the same values from the environment when they start;
    this process is told by `mallopt`.
    """
    for name, value in MALLOC_TUNING.items():
        os.environ.setdefault(name, str(value))
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    for name, option in _MALLOPT.items():
        libc.mallopt(option, int(os.environ[name]))
