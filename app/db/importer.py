"""Bulk import of a `RatingsSet` (movies, then users, then ratings) into the ratings store.

Every row is validated before anything is written, and everything is written in one
transaction, so an import either lands whole or not at all. Importing the same data twice
changes nothing; a (user, movie) pair already stored takes the file's rating and time (the
last import wins); inside one file the last line of a pair wins.

Validation lives here; each database's writer in its own module (`import_postgresql`: bulk
load or merge by binary ``COPY``; `import_sqlite`: batched ``executemany`` upserts).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
from rich.progress import Progress
from sqlalchemy import Engine, select

from app.config import Settings
from app.data.movielens import RatingsSet, RowProblem
from app.db.import_postgresql import write_postgresql
from app.db.import_rows import Advance, ImportCounts, PreparedImport
from app.db.import_sqlite import write_sqlite
from app.db.models import Movie, scale_fits_schema

RATING_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]


@dataclass(frozen=True)
class ImportReport:
    """What an import did (or, when refused, would have skipped and why).

    `skipped` counts the source lines not imported: those the reader dropped as malformed plus
    those rejected here; `problems` names each, sorted by line (line 0: the movie catalog).
    `duplicates` counts lines superseded by a later line for the same (user, movie).
    """

    name: str
    movies_added: int = 0
    movies_updated: int = 0
    users_added: int = 0
    ratings_added: int = 0
    ratings_updated: int = 0
    ratings_unchanged: int = 0
    duplicates: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skipped(self) -> int:
        return len(self.problems)

    def summary(self) -> str:
        """One line for people: what was added, changed and left out."""
        return (
            f"{self.name}: {self.movies_added:,} movies added ({self.movies_updated:,} updated),"
            f" {self.users_added:,} users added, {self.ratings_added:,} ratings added,"
            f" {self.ratings_updated:,} updated, {self.ratings_unchanged:,} unchanged,"
            f" {self.duplicates:,} duplicate lines superseded, {self.skipped:,} lines skipped"
            f" in {self.seconds:.1f} s"
        )


class ImportRefused(RuntimeError):
    """`on_error="fail"` met problems; nothing was written. `report` lists them."""

    def __init__(self, report: ImportReport) -> None:
        first = report.problems[0]
        super().__init__(
            f"import of {report.name!r} refused: {report.skipped} bad line(s),"
            f" first at line {first.line}: {first.reason}"
        )
        self.report = report


def import_ratings_set(
    engine: Engine,
    data: RatingsSet,
    settings: Settings,
    on_error: Literal["skip", "fail"] = "skip",
    batch_size: int = 100_000,
    progress: bool = False,
) -> ImportReport:
    """Import `data` into the database of `engine` and say what changed.

    on_error="skip" leaves out bad lines and lists them in the report; "fail" raises
    `ImportRefused` before writing anything if there is any bad line (the reader's included).
    """
    if not scale_fits_schema(settings.allowed_ratings()):
        raise ValueError(
            "the configured rating scale has values the database's CHECK constraint rejects;"
            " the schema needs a migration for it (see app.db.models.Rating)"
        )
    started = time.perf_counter()
    prepared = _prepare(engine, data, settings)
    report = ImportReport(name=data.name, duplicates=prepared.duplicates, problems=prepared.problems)
    if on_error == "fail" and prepared.problems:
        raise ImportRefused(report)
    with _progress_bar(progress, data.name, len(prepared.ratings)) as advance:
        counts = _write(engine, prepared, batch_size, advance)
    return replace(
        report,
        movies_added=counts.movies_added,
        movies_updated=counts.movies_updated,
        users_added=counts.users_added,
        ratings_added=counts.ratings_added,
        ratings_updated=counts.ratings_updated,
        ratings_unchanged=len(prepared.ratings) - counts.ratings_added - counts.ratings_updated,
        seconds=time.perf_counter() - started,
    )


def _prepare(engine: Engine, data: RatingsSet, settings: Settings) -> PreparedImport:
    """Drop bad movies and ratings (listing why), collapse duplicate pairs, sort by key."""
    movies, movie_problems = _valid_movies(data.movies)
    with engine.connect() as connection:
        stored = np.fromiter(connection.scalars(select(Movie.id)), dtype=np.int64)
    known = np.union1d(stored, movies["movie_id"].to_numpy(np.int64))
    ratings = data.ratings.sort_values("line", kind="stable")
    bad, rating_problems = _invalid_ratings(ratings, known, settings)
    ratings = ratings.loc[~bad, RATING_COLUMNS]
    unique = ratings.drop_duplicates(["user_id", "movie_id"], keep="last")
    unique = unique.sort_values(["user_id", "movie_id"], kind="stable", ignore_index=True)
    problems = sorted([*data.problems, *movie_problems, *rating_problems], key=lambda p: p.line)
    return PreparedImport(movies, unique, problems, len(ratings) - len(unique))


def _valid_movies(movies: pd.DataFrame) -> tuple[pd.DataFrame, list[RowProblem]]:
    """The catalog without non-positive ids (reported on line 0), the last entry of each id kept."""
    bad = movies["movie_id"].to_numpy(np.int64) <= 0
    problems = [
        RowProblem(0, f"movie catalog: movie id {movie_id} is not positive")
        for movie_id in movies.loc[bad, "movie_id"].tolist()
    ]
    valid = movies.loc[~bad].drop_duplicates("movie_id", keep="last")
    return valid.sort_values("movie_id", ignore_index=True), problems


def _invalid_ratings(
    ratings: pd.DataFrame, known_movies: np.ndarray, settings: Settings
) -> tuple[np.ndarray, list[RowProblem]]:
    """A mask of the rating rows to drop and one problem for each, all its reasons joined."""
    users = ratings["user_id"].to_numpy(np.int64)
    movies = ratings["movie_id"].to_numpy(np.int64)
    values = ratings["rating"].to_numpy(np.float32)
    allowed = np.asarray(settings.allowed_ratings(), dtype=np.float32)
    checks = (
        (users <= 0, lambda i: f"user id {users[i]} is not positive"),
        (movies <= 0, lambda i: f"movie id {movies[i]} is not positive"),
        (
            (movies > 0) & ~np.isin(movies, known_movies),
            lambda i: f"movie {movies[i]} is not in the catalog",
        ),
        (
            ~np.isin(values, allowed),
            lambda i: (
                f"rating {values[i]:g} is not on the scale"
                f" {settings.rating_min:g}..{settings.rating_max:g} step {settings.rating_step:g}"
            ),
        ),
    )
    bad = np.logical_or.reduce([mask for mask, _ in checks])
    lines = ratings["line"].to_numpy(np.int64)
    problems = [
        RowProblem(int(lines[i]), "; ".join(reason(i) for mask, reason in checks if mask[i]))
        for i in np.flatnonzero(bad)
    ]
    return bad, problems


def _write(engine: Engine, prepared: PreparedImport, batch_size: int, advance: Advance) -> ImportCounts:
    """Write movies, users and ratings in one transaction on the engine's dialect."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            with connection.begin():
                return write_postgresql(connection, prepared, batch_size, advance)
        with connection.execution_options(sqlite_begin="IMMEDIATE").begin():
            return write_sqlite(connection, prepared, batch_size, advance)


@contextmanager
def _progress_bar(enabled: bool, name: str, total: int) -> Iterator[Advance]:
    """A rich progress bar over the rating rows written, or a no-op when not `enabled`."""
    if not enabled:
        yield lambda _rows: None
        return
    with Progress(transient=False) as bar:
        task = bar.add_task(f"importing {name}", total=total)
        yield lambda rows: bar.advance(task, rows)
