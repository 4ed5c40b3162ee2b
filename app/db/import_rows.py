"""What an import hands its database writers: validated rows, and the counts they give back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from app.data.movielens import RowProblem

Advance = Callable[[int], None]
"""Told the number of rating rows just written (drives the progress bar)."""


@dataclass(frozen=True)
class PreparedImport:
    """Validated rows ready to write: unique (user, movie) pairs sorted by them."""

    movies: pd.DataFrame
    ratings: pd.DataFrame
    problems: list[RowProblem]
    duplicates: int


@dataclass(frozen=True)
class ImportCounts:
    movies_added: int
    movies_updated: int
    users_added: int
    ratings_added: int
    ratings_updated: int


def movie_years(movies: pd.DataFrame) -> list[int | None]:
    """The catalog's years as Python ints, None where unknown."""
    return [None if pd.isna(year) else int(year) for year in movies["year"].tolist()]
