"""`dotrec`: the command line (typer). Heavy imports live inside the commands so each starts fast."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from app.config import get_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Engine

    from app.data.movielens import RowProblem
    from app.data.training_set import TrainingSet
    from app.ml.jobs import FoldReport, TrainedVersion
    from app.ml.train import EpochStats, TrainConfig

app = typer.Typer(help="dotrec: dot-product recommendations for explicit ratings.", no_args_is_help=True)
db_app = typer.Typer(help="The ratings database's schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=True)
#: folder of DATA_DIR holding the memory-mapped export of the ratings (app/data/array_cache.py)
EXPORT_CACHE = "export-cache"

SplitOption = Annotated[
    str, typer.Option("--val-split", help="random (seeded) or time (each user's newest ratings)")
]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    logging.getLogger("app").setLevel(logging.DEBUG if verbose else logging.INFO)


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
    engine = _migrated_engine()
    if if_empty:
        with Session(engine) as session:
            stored = count_ratings(session)
        if stored:
            console.print(f"the database holds {stored:,} ratings: not importing (--if-empty)")
            return
    data, note = resolve_source(source or settings.data_source, settings.cache_dir)
    console.print(note)
    try:
        report = import_ratings_set(engine, data, settings, on_error=on_error, progress=not quiet)
    except ImportRefused as refused:
        _print_problems(refused.report.problems)
        console.print(f"[red]import refused: {len(refused.report.problems)} bad lines; nothing was written")
        raise typer.Exit(1) from refused
    _print_problems(report.problems)
    console.print(report.summary())


def _migrated_engine() -> Engine:
    """The engine of DATABASE_URL, once its schema is known to be current (else a clear exit)."""
    from app.db.schema import SchemaOutOfDate, check_schema_current
    from app.db.session import make_engine

    settings = get_settings()
    engine = make_engine(settings.database_url, settings)
    try:
        check_schema_current(engine)
    except SchemaOutOfDate as error:
        console.print(f"[red]{error}")
        raise typer.Exit(1) from error
    return engine


def _print_problems(problems: list[RowProblem], shown: int = 20) -> None:
    for problem in problems[:shown]:
        console.print(f"  line {problem.line}: {problem.reason}")
    if len(problems) > shown:
        console.print(f"  ... and {len(problems) - shown} more")


@app.command()
def train(
    data: Annotated[
        str | None, typer.Option(help="train from this path or GroupLens name instead of the database")
    ] = None,
    from_db: Annotated[bool, typer.Option(help="train from the database (default without --data)")] = False,
    dim: Annotated[int | None, typer.Option(help="embedding width k", min=1)] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    lr: float | None = None,
    wd: Annotated[float | None, typer.Option(help="per-rating L2 on the embedding rows")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    seed: int | None = None,
    val_split: SplitOption = "random",
    mode: Annotated[
        str, typer.Option(help="rowwise (mini-batch dot products) or dense (full U @ M.T)")
    ] = "rowwise",
    plot: Annotated[bool, typer.Option(help="write training curves and a movie map as PNGs")] = False,
    quiet: Annotated[bool, typer.Option(help="log lines instead of a progress bar")] = False,
    sparse: Annotated[bool, typer.Option(help="sparse gradients + SparseAdam (large tables, DDP)")] = False,
    nproc: Annotated[int, typer.Option(help="train in N processes with torchrun + DDP")] = 1,
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one), cpu or cuda")] = "auto",
) -> None:
    """Fit user and movie embeddings, report validation metrics, save a new model version."""
    from app.ml.distributed import join_from_environment, launch, leave
    from app.ml.jobs import train_and_save

    if nproc > 1:
        raise typer.Exit(launch(nproc, _arguments_after("train", drop="--nproc")))
    placement = join_from_environment(device)
    settings = get_settings()
    config = _train_config(dim, epochs, lr, wd, batch_size, seed, mode, sparse)
    if from_db and data is not None:
        raise typer.BadParameter("--data and --from-db name two sources: give one")
    training_set, titles, source = _training_data(data)
    if placement.is_main:
        console.print(
            f"training on {len(training_set):,} ratings, {training_set.n_users:,} users x "
            f"{training_set.n_movies:,} movies ({source}); "
            f"{placement.world} process(es) on {placement.device}"
        )
    with _EpochReporter(config.epochs, quiet or not placement.is_main) as on_epoch:
        trained = train_and_save(
            training_set, settings, config, _split_kind(val_split), on_epoch, source, placement
        )
    leave()
    logging.getLogger("app.train").info("rank %d peak RSS %.0f MiB", placement.rank, _peak_rss_mib())
    if trained is None:
        return
    metrics = trained.metrics
    if metrics["rmse"] is None:
        console.print(f"[yellow]no ratings could be held out for validation; saved {trained.path}")
    else:
        console.print(
            f"validation RMSE {metrics['rmse']:.4f} (bias only {metrics['bias_only_rmse']:.4f}, "
            f"global mean {metrics['global_mean_rmse']:.4f}); saved {trained.path}"
        )
    if plot:
        _write_plots(trained, training_set, titles)


def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:")), float("nan"))


def _arguments_after(command: str, drop: str) -> list[str]:
    """This process's arguments after `command`, less the option `drop` and its value."""
    arguments = sys.argv[sys.argv.index(command) + 1 :]
    kept: list[str] = []
    skip_value = False
    for argument in arguments:
        if skip_value:
            skip_value = False
        elif argument == drop:
            skip_value = True
        elif not argument.startswith(f"{drop}="):
            kept.append(argument)
    return kept


def _train_config(
    dim: int | None,
    epochs: int | None,
    lr: float | None,
    wd: float | None,
    batch_size: int | None,
    seed: int | None,
    mode: str,
    sparse: bool = False,
) -> TrainConfig:
    from app.ml.train import TrainConfig

    if mode not in ("rowwise", "dense"):
        raise typer.BadParameter("--mode must be rowwise or dense")
    given = {
        "n_factors": dim,
        "epochs": epochs,
        "lr": lr,
        "weight_decay": wd,
        "batch_size": batch_size,
        "seed": seed,
        "mode": mode,
        "sparse": sparse,
    }
    return TrainConfig(**{name: value for name, value in given.items() if value is not None})


def _split_kind(value: str) -> Literal["random", "time"]:
    if value not in ("random", "time"):
        raise typer.BadParameter("--val-split must be random or time")
    return value  # type: ignore[return-value]


def _training_data(source: str | None) -> tuple[TrainingSet, dict[int, str], str]:
    """(TrainingSet, {movie id: title}, description) from a path/name, or from the database."""
    from app.data.training_set import TrainingSet

    settings = get_settings()
    if source is not None:
        from app.data.sources import resolve_source

        ratings_set, note = resolve_source(source, settings.cache_dir)
        console.print(note)
        titles = dict(zip(ratings_set.movies["movie_id"], ratings_set.movies["title"], strict=True))
        try:
            return TrainingSet.from_frame(ratings_set.ratings), titles, ratings_set.name
        except ValueError as error:
            console.print(f"[red]{source}: {error}")
            raise typer.Exit(1) from error
    from sqlalchemy.orm import Session

    from app.data.array_cache import cached_training_set
    from app.db.repository import movie_titles

    engine = _migrated_engine()
    training_set = cached_training_set(engine, settings.data_dir / EXPORT_CACHE)
    if len(training_set) == 0:
        console.print("[red]the database holds no ratings: run `dotrec import SOURCE` or pass --data")
        raise typer.Exit(1)
    with Session(engine) as session:
        titles = movie_titles(session, training_set.movie_ids.tolist())
    return training_set, titles, f"database {engine.url.render_as_string(hide_password=True)}"


class _EpochReporter:
    """A rich progress bar advanced per epoch, or plain log lines with --quiet."""

    def __init__(self, epochs: int, quiet: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
            disable=quiet,
        )
        self.task = self.progress.add_task("", total=epochs)

    def __enter__(self) -> Callable[[EpochStats], None]:
        self.progress.start()
        return self.report

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def report(self, stats: EpochStats) -> None:
        validation = f"{stats.val_rmse:.4f}" if stats.val_rmse is not None else "-"
        line = f"epoch {stats.epoch} loss {stats.train_loss:.4f} val RMSE {validation} ({stats.seconds:.2f}s)"
        if self.quiet:
            logging.getLogger("app.train").info(line)
        self.progress.update(self.task, advance=1, description=line)


def _write_plots(trained: TrainedVersion, training_set: TrainingSet, titles: dict[int, str]) -> None:
    import numpy as np
    from safetensors.numpy import load_file

    from app.ml.plots import plot_movie_map, plot_training_curves

    weights = load_file(trained.path / "weights.safetensors")
    counts = np.bincount(training_set.movie_rows, minlength=training_set.n_movies)
    curves = plot_training_curves(trained.fit.history, trained.path / "training_curves.png")
    movie_map = plot_movie_map(
        weights["movie_emb"], training_set.movie_ids, titles, counts, trained.path / "movie_map.png"
    )
    console.print(f"wrote {curves} and {movie_map}")


@app.command()
def evaluate(
    data: Annotated[str | None, typer.Option(help="a path or GroupLens name; default: the database")] = None,
    folds: Annotated[
        int | None, typer.Option(help="k-fold cross-validation instead of one split", min=2)
    ] = None,
    split: Annotated[str, typer.Option(help="random or time (each user's newest ratings)")] = "random",
    holdout: Annotated[
        float, typer.Option(help="share of ratings held out as the test set", min=0.01, max=0.9)
    ] = 0.1,
    dim: Annotated[int | None, typer.Option(min=1)] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    lr: float | None = None,
    wd: float | None = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    seed: int | None = None,
    ranking: Annotated[bool, typer.Option(help="also score top-10 lists (P@10, R@10, NDCG@10)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the reports as JSON")] = False,
) -> None:
    """Hold ratings out, train on the rest, and compare the model with its baselines."""
    from app.ml.jobs import evaluate_folds

    config = _train_config(dim, epochs, lr, wd, batch_size, seed, "rowwise")
    training_set, _, source = _training_data(data)
    reports = evaluate_folds(
        training_set, get_settings(), config, folds, _split_kind(split), holdout, ranking
    )
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in reports], indent=1))
        return
    Console().print(_report_table(reports, source))


def _report_table(reports: list[FoldReport], source: str) -> Table:
    import numpy as np

    columns = [
        "rmse",
        "mae",
        "bias_only_rmse",
        "global_mean_rmse",
        "precision_at_10",
        "ndcg_at_10",
        "popular_precision_at_10",
        "popular_ndcg_at_10",
        "train_seconds",
    ]
    table = Table(title=f"dotrec evaluate: {source}")
    table.add_column("fold")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    rows = [(str(r.fold), [getattr(r, c) for c in columns]) for r in reports]
    if len(reports) > 1:
        rows.append(("mean", [float(np.mean([getattr(r, c) for r in reports])) for c in columns]))
    for label, values in rows:
        table.add_row(label, *(f"{v:.4f}" for v in values))
    return table


@app.command("recommend-all")
def recommend_all(
    k: Annotated[int, typer.Option(help="recommendations per user (1..32767)")] = 100,
    out: Annotated[Path, typer.Option(help="the parquet file to write")] = Path("recommendations.parquet"),
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Top-k unrated movies of every user of the current model, into one parquet file."""
    from app.ml.recommend_all import run_recommend_all

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


if __name__ == "__main__":
    app()
