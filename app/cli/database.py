"""Commands on the ratings database: its schema, imports, and synthetic data to import."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli import app, console, db_app
from app.config import get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.data.movielens import RowProblem


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Migrate the database named by DATABASE_URL up to `revision` (default: the newest)."""
    from app.db.schema import upgrade

    upgrade(get_settings().database_url, revision)
    console.print(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str = "base") -> None:
    """Migrate the database down to `revision` (default: empty)."""
    from app.db.schema import downgrade

    downgrade(get_settings().database_url, revision)
    console.print(f"database at {revision}")


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="folder to write ratings.csv, movies.csv, synth.json")],
    like: Annotated[str | None, typer.Option(help="preset sizes: ml-100k, ml-1m or ml-25m")] = None,
    users: int = 943,
    movies: int = 1682,
    ratings: int = 100_000,
    seed: int = 0,
    rank: int = 8,
    noise: float = 0.5,
    half_stars: bool = False,
    quiet: bool = False,
) -> None:
    """Generate a MovieLens-shaped data set with a planted low-rank signal."""
    from app.data.synth import PRESETS, write_synthetic

    if like is not None:
        if like not in PRESETS:
            raise typer.BadParameter(f"--like must be one of {', '.join(PRESETS)}")
        users, movies, ratings = PRESETS[like]
    write_synthetic(out, users, movies, ratings, seed, rank, noise, half_stars, progress=not quiet)
    console.print(f"wrote {ratings:,} ratings of {users:,} users x {movies:,} movies to {out}")


@app.command("import")
def import_(
    source: Annotated[
        str | None, typer.Argument(help="a path or GroupLens name; default: DATA_SOURCE")
    ] = None,
    on_error: Annotated[str, typer.Option(help="skip bad lines, or fail and import nothing")] = "skip",
    if_empty: Annotated[bool, typer.Option(help="import only into a database that holds no ratings")] = False,
    generated_if_offline: Annotated[
        bool,
        typer.Option(
            help="when a named data set cannot be downloaded, import GENERATED ratings of its shape "
            "instead (scripts/run.sh's first run; never into a database that matters)"
        ),
    ] = False,
    quiet: bool = False,
) -> None:
    """Load a MovieLens data set or a CSV into the ratings database, idempotently."""
    from sqlalchemy.orm import Session

    from app.data.sources import resolve_source
    from app.db.importer import ImportRefused, import_ratings_set
    from app.db.repository import count_ratings

    if on_error not in ("skip", "fail"):
        raise typer.BadParameter("--on-error must be skip or fail")
    settings = get_settings()
    engine = migrated_engine_or_exit()
    if if_empty:
        with Session(engine) as session:
            stored = count_ratings(session)
        if stored:
            console.print(f"the database holds {stored:,} ratings: not importing (--if-empty)")
            return
    try:
        data, note = resolve_source(source or settings.data_source, settings.cache_dir, generated_if_offline)
    except ValueError as error:  # SourceUnavailable, or neither a path nor a known name
        console.print(f"[red]{error}")
        raise typer.Exit(1) from error
    console.print(note)
    try:
        report = import_ratings_set(engine, data, settings, on_error=on_error, progress=not quiet)
    except ImportRefused as refused:
        _print_problems(refused.report.problems)
        console.print(f"[red]import refused: {len(refused.report.problems)} bad lines; nothing was written")
        raise typer.Exit(1) from refused
    _print_problems(report.problems)
    console.print(report.summary())


def migrated_engine_or_exit() -> Engine:
    """The engine of DATABASE_URL, once its schema is known to be current (else a clear exit)."""
    from app.db.schema import SchemaOutOfDate, migrated_engine

    settings = get_settings()
    try:
        return migrated_engine(settings.database_url, settings)
    except SchemaOutOfDate as error:
        console.print(f"[red]{error}")
        raise typer.Exit(1) from error


def _print_problems(problems: list[RowProblem], shown: int = 20) -> None:
    for problem in problems[:shown]:
        console.print(f"  line {problem.line}: {problem.reason}")
    if len(problems) > shown:
        console.print(f"  ... and {len(problems) - shown} more")
