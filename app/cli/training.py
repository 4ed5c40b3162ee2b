"""Commands that fit models: train (one process or several with torchrun + DDP) and evaluate."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from app.cli import app, console
from app.config import get_settings

if TYPE_CHECKING:
    from app.data.splits import SplitKind
    from app.data.training_set import TrainingSet
    from app.jobs.evaluation import FoldReport
    from app.jobs.training import Objective, TrainedVersion, TrainingData
    from app.ml.ranking import RankingConfig
    from app.ml.train import EpochStats, TrainConfig

SplitOption = Annotated[
    str, typer.Option("--val-split", help="random (seeded) or time (each user's newest ratings)")
]
ObjectiveOption = Annotated[
    str,
    typer.Option(
        help="the heads to fit: rating (GET /predict's ratings), ranking (the order of "
        "GET /recommendations), or both"
    ),
]
RankDimOption = Annotated[int | None, typer.Option(help="the ranking head's embedding width", min=1)]
RankEpochsOption = Annotated[int | None, typer.Option(help="the ranking head's ALS passes", min=1)]


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
    objective: ObjectiveOption = "both",
    rank_dim: RankDimOption = None,
    rank_epochs: RankEpochsOption = None,
) -> None:
    """Fit user and movie embeddings, report validation metrics, save a new model version."""
    from app.jobs.training import train_and_save
    from app.ml.distributed import join_from_environment, leave

    if nproc > 1:
        raise typer.Exit(_launch_ranks(nproc, _arguments_after("train", drop="--nproc")))
    placement = join_from_environment(device)
    settings = get_settings()
    given = _given_options(dim, epochs, lr, wd, batch_size, seed, mode, sparse)
    ranking_config = _ranking_config(rank_dim, rank_epochs, seed)
    if from_db and data is not None:
        raise typer.BadParameter("--data and --from-db name two sources: give one")
    training = _training_data(data)
    training_set, titles, source = training.ratings, training.titles, training.description
    config = _train_config(len(training_set), given)
    if placement.is_main:
        console.print(
            f"training on {len(training_set):,} ratings, {training_set.n_users:,} users x "
            f"{training_set.n_movies:,} movies ({source}); "
            f"{placement.world} process(es) on {placement.device}; {config.epochs} epochs of "
            f"{config.batch_size:,} at lr {config.lr:g}, L2 {config.weight_decay:g}"
        )
    chosen = _objective(objective)
    epochs_shown = config.epochs if chosen != "ranking" else 0
    with _EpochReporter(epochs_shown, quiet or not placement.is_main) as on_epoch:
        trained = train_and_save(
            training_set,
            settings,
            config,
            _split_kind(val_split),
            on_epoch,
            source,
            placement,
            chosen,
            ranking_config,
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
    if trained.ranking is not None:
        console.print(
            f"ranking head: {trained.ranking.user_factors.shape[1]} factors in {trained.ranking.seconds:.2f}s"
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


def _given_options(
    dim: int | None,
    epochs: int | None,
    lr: float | None,
    wd: float | None,
    batch_size: int | None,
    seed: int | None,
    mode: str,
    sparse: bool = False,
) -> dict[str, object]:
    """The TrainConfig fields the user's options set (None: not passed, the default applies)."""
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
    return {name: value for name, value in given.items() if value is not None}


def _train_config(n_ratings: int, given: dict[str, object]) -> TrainConfig:
    """The options given, and for the rest the defaults for training on `n_ratings` ratings."""
    from app.ml.train import TrainConfig

    return TrainConfig.for_ratings(n_ratings, **given)


def _split_kind(value: str, allowed: tuple[str, ...] = ("random", "time")) -> SplitKind:
    if value not in allowed:
        raise typer.BadParameter(f"the split must be {' or '.join(allowed)}")
    return value  # type: ignore[return-value]


def _objective(value: str) -> Objective:
    if value not in ("rating", "ranking", "both"):
        raise typer.BadParameter("--objective must be rating, ranking or both")
    return value  # type: ignore[return-value]


def _ranking_config(dim: int | None, epochs: int | None, seed: int | None) -> RankingConfig:
    from app.ml.ranking import RankingConfig

    given = {"n_factors": dim, "epochs": epochs, "seed": seed}
    return RankingConfig(**{name: value for name, value in given.items() if value is not None})


def _training_data(source: str | None) -> TrainingData:
    """The ratings to train on (from `source`, else the database), or a clear exit."""
    from app.db.schema import SchemaOutOfDate
    from app.jobs.training import NoTrainingData, load_training_data

    try:
        training = load_training_data(source, get_settings())
    except (NoTrainingData, SchemaOutOfDate) as error:
        console.print(f"[red]{error}")
        raise typer.Exit(1) from error
    if training.note:
        console.print(training.note)
    return training


def _launch_ranks(nproc: int, train_args: list[str]) -> int:
    """`torchrun --nproc-per-node nproc --no-python python -m app.cli train ARGS`: every rank
    runs this very command (no module of app imports the command line back); its exit code."""
    from torch.distributed.run import main as torchrun

    command = [sys.executable, "-m", "app.cli", "train", *train_args]
    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "--no-python", *command])
    except Exception as error:  # torchrun raises ChildFailedError naming the rank that died
        print(f"distributed training failed: {error}", file=sys.stderr)
        return 1
    return 0


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
    history = trained.fit.history if trained.fit is not None else []
    curves = plot_training_curves(history, trained.path / "training_curves.png")
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
    split: Annotated[
        str,
        typer.Option(
            help="user (per user, a seeded random share: the ranking protocol), random (seeded, "
            "over all ratings) or time (each user's newest ratings)"
        ),
    ] = "user",
    holdout: Annotated[
        float, typer.Option(help="share of ratings held out as the test set", min=0.01, max=0.9)
    ] = 0.25,
    dim: Annotated[int | None, typer.Option(min=1)] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    lr: float | None = None,
    wd: float | None = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    seed: int | None = None,
    ranking: Annotated[bool, typer.Option(help="also score top-10 lists (P@10, R@10, NDCG@10)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the reports as JSON")] = False,
    objective: ObjectiveOption = "both",
    rank_dim: RankDimOption = None,
    rank_epochs: RankEpochsOption = None,
) -> None:
    """Hold ratings out, train on the rest, and compare the model with its baselines."""
    from app.jobs.evaluation import evaluate_folds

    given = _given_options(dim, epochs, lr, wd, batch_size, seed, "rowwise")
    training = _training_data(data)
    training_set, source = training.ratings, training.description
    # the defaults for the size of each training part, not of the whole set
    training_share = 1 - 1 / folds if folds else 1 - holdout
    config = _train_config(round(len(training_set) * training_share), given)
    reports = evaluate_folds(
        training_set,
        get_settings(),
        config,
        folds,
        _split_kind(split, ("user", "random", "time")),
        holdout,
        ranking,
        _objective(objective),
        _ranking_config(rank_dim, rank_epochs, seed),
    )
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in reports], indent=1))
        return
    Console().print(_report_table(reports, source))


def _report_table(reports: list[FoldReport], source: str) -> Table:
    """One row a measure, one column a fold (and their mean)."""
    import numpy as np

    figures = ["rmse", "mae", "bias_only_rmse", "global_mean_rmse", "train_seconds", "ranking_seconds"]
    rows = [(name.replace("_", " "), [getattr(r, name) for r in reports]) for name in figures]
    for name in reports[0].ranking if reports else []:
        rows.append((name.replace("_", " "), [r.ranking[name] for r in reports]))
        rows.append((f"  popularity: {name.replace('_', ' ')}", [r.popular_ranking[name] for r in reports]))
    table = Table(title=f"dotrec evaluate: {source}")
    table.add_column("measure")
    for report in reports:
        table.add_column(f"fold {report.fold}", justify="right")
    if len(reports) > 1:
        table.add_column("mean", justify="right")
    for label, numbers in rows:
        shown = [*numbers, float(np.mean(numbers))] if len(reports) > 1 else numbers
        table.add_row(label, *(f"{v:.4f}" for v in shown))
    return table
