"""Commands that serve a model: the REST API, and every user's top-k as a batch."""

from __future__ import annotations

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
) -> None:
    """Serve the REST API with uvicorn (the newest model in MODELS_DIR, ratings from DATABASE_URL)."""
    import uvicorn

    uvicorn.run(
        "app.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
    )
