"""Read MovieLens-shaped ratings (every GroupLens layout, or a plain CSV) into one frame shape.

Layouts, told apart by the name of the ratings file:

- ml-100k: `u.data` (tab-separated) with `u.item` (`|`-separated, latin-1) and `u.genre`;
- ml-1m / ml-10m: `ratings.dat` with `movies.dat`, both `::`-separated;
- ml-latest / ml-20m / ml-25m / ml-32m: `ratings.csv` (header `userId,movieId,rating,timestamp`)
  with `movies.csv`;
- a plain CSV `user_id,movie_id,rating[,timestamp]`, header optional, `movies.csv` beside it optional.

A source is a folder, a `.tar.gz`/`.tgz`/`.tar`/`.zip` archive (data at the top or one folder
down, as GroupLens ships it) or the ratings file itself.

The files are found by app.data.archives and the ratings parsed by app.data.ratings_file (block
by block, each bad line a `RowProblem` with its exact line number); this module knows the
layouts and reads the movies.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np
import pandas as pd

from app.data.archives import Files, open_source, source_name
from app.data.ratings_file import RowProblem, read_ratings

log = logging.getLogger(__name__)

__all__ = ["RatingsSet", "RowProblem", "read_ratings_set"]

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
# Genre labels that mean "no genre": dropped so that such movies get genres ''.
NO_GENRE_LABELS = frozenset({"unknown", "(no genres listed)"})
_YEAR_AT_END = re.compile(r"\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$")


@dataclass(frozen=True)
class RatingsSet:
    """Ratings and movies of one source, in one shape whatever the layout.

    Attributes:
        name: what the data is called: the archive's or folder's name ("ml-100k",
            "ml-1m-part1") or the ratings file's name when read from a lone file ("ratings.csv").
        ratings: one row per good line, in file order; columns user_id int64, movie_id int64,
            rating float32, timestamp int64 (unix seconds, 0 when the file has none),
            line int64 (1-based line in the ratings file). Off-scale ratings and unknown movies
            are kept: judging them is the importer's job.
        movies: columns movie_id int64, title str (as in the file, year included),
            year Int64 (from a trailing "(1995)", <NA> if none), genres str ('|'-joined,
            '' if none). Built from the rated ids, with empty titles, when there is no movies file.
        problems: the ratings lines that could not be read, by line number.
    """

    name: str
    ratings: pd.DataFrame
    movies: pd.DataFrame
    problems: list[RowProblem]


def read_ratings_set(source: str | Path) -> RatingsSet:
    """Read the ratings (and movies) found at `source`: a folder, an archive or a ratings file."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    with open_source(source, [layout.ratings_file for layout in _LAYOUTS]) as (files, ratings_path):
        layout = _layout_for(ratings_path)
        with files.open(ratings_path) as stream:
            ratings, problems = read_ratings(stream, files.size(ratings_path), layout.separator)
        movies = layout.read_movies(files, PurePosixPath(ratings_path).parent)
    if movies is None:
        movies = _movies_from_ids(ratings["movie_id"])
    log.info(
        "read %s: %d ratings, %d movies, %d problem lines",
        source,
        len(ratings),
        len(movies),
        len(problems),
    )
    return RatingsSet(source_name(source), ratings, movies, problems)


# --- layouts ------------------------------------------------------------------------------------


class _MoviesReader(Protocol):
    def __call__(self, files: Files, folder: PurePosixPath) -> pd.DataFrame | None: ...


@dataclass(frozen=True)
class _Layout:
    ratings_file: str
    separator: bytes
    read_movies: _MoviesReader


def _layout_for(ratings_path: str) -> _Layout:
    """The layout of a ratings file, from its name; anything unknown is read as a plain CSV."""
    name = PurePosixPath(ratings_path).name
    if name == _ML100K.ratings_file:
        return _ML100K
    if name.endswith(".dat"):
        return _DAT
    return _CSV


# --- movies -------------------------------------------------------------------------------------


def _read_u_item(files: Files, folder: PurePosixPath) -> pd.DataFrame | None:
    """ml-100k's `u.item`: id|title|release|video release|IMDb url|19 genre flags."""
    text = _read_text(files, folder / "u.item")
    if text is None:
        return None
    table = pd.read_csv(
        io.StringIO(text),
        sep="|",
        header=None,
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        on_bad_lines="skip",
    )
    genre_names = _u_genre_names(files, folder)
    flags = table.iloc[:, 5 : 5 + len(genre_names)].to_numpy() == "1"
    genres = ["|".join(_genre_list(genre_names, row)) for row in flags]
    return _movies_frame(table[0], table[1], pd.Series(genres, index=table.index))


def _u_genre_names(files: Files, folder: PurePosixPath) -> list[str]:
    """Genre names by flag position, from `u.genre` ("name|index" lines), else the known list."""
    text = _read_text(files, folder / "u.genre")
    if text is None:
        return list(ML100K_GENRES)
    names: dict[int, str] = {}
    for line in text.splitlines():
        name, _, index = line.rpartition("|")
        if name and index.strip().isdigit():
            names[int(index)] = name
    return [names.get(i, f"genre {i}") for i in range(max(names) + 1)] if names else list(ML100K_GENRES)


def _genre_list(names: list[str], flags: np.ndarray) -> list[str]:
    return [name for name, flag in zip(names, flags, strict=False) if flag]


def _read_movies_dat(files: Files, folder: PurePosixPath) -> pd.DataFrame | None:
    """ml-1m / ml-10m `movies.dat`: id::title::genres ('::' is never inside a title)."""
    text = _read_text(files, folder / "movies.dat")
    if text is None:
        return None
    parts = pd.Series(text.splitlines(), dtype=object).str.split("::", n=2, expand=True)
    parts = parts.reindex(columns=range(3))
    return _movies_frame(parts[0], parts[1], parts[2])


def _read_movies_csv(files: Files, folder: PurePosixPath) -> pd.DataFrame | None:
    """`movies.csv`: movieId,title,genres with titles quoted where they hold commas."""
    text = _read_text(files, folder / "movies.csv")
    if text is None:
        return None
    first_field = text.split("\n", 1)[0].split(",", 1)[0].strip()
    table = pd.read_csv(
        io.StringIO(text),
        header=None if first_field.isdigit() else 0,
        dtype=str,
        keep_default_na=False,
        on_bad_lines="skip",
    )
    genres = table.iloc[:, 2] if table.shape[1] > 2 else pd.Series("", index=table.index)
    return _movies_frame(table.iloc[:, 0], table.iloc[:, 1], genres)


def _read_text(files: Files, path: PurePosixPath) -> str | None:
    """A small text file's content (UTF-8, else latin-1 as older GroupLens files are), or None."""
    name = path.as_posix()
    if name not in files.names():
        return None
    with files.open(name) as stream:
        raw = stream.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text if text.strip() else None


def _movies_frame(ids: pd.Series, titles: pd.Series, genres: pd.Series) -> pd.DataFrame:
    """The `RatingsSet.movies` frame from raw text columns; rows without an integer id dropped."""
    movie_ids = pd.to_numeric(ids.str.strip(), errors="coerce")
    valid = movie_ids.notna() & (movie_ids == movie_ids.round())
    if not valid.all():
        log.warning("skipped %d movie rows without an integer movie id", int((~valid).sum()))
    titles = titles[valid].fillna("").astype(str).str.strip()
    genres = genres[valid].fillna("").astype(str).str.strip()
    return pd.DataFrame(
        {
            "movie_id": movie_ids[valid].astype(np.int64).to_numpy(),
            "title": titles.to_numpy(dtype=object),
            "year": _years(titles).array,
            "genres": genres.map(_normalise_genres).to_numpy(dtype=object),
        }
    )


def _years(titles: pd.Series) -> pd.Series:
    """Int64 year from a title ending in "(1995)" (or a range "(2006-2007)": its start), else NA."""
    return pd.to_numeric(titles.str.extract(_YEAR_AT_END, expand=False)).astype("Int64")


def _normalise_genres(genres: str) -> str:
    return "|".join(g for g in genres.split("|") if g.strip() and g not in NO_GENRE_LABELS)


def _movies_from_ids(movie_ids: pd.Series) -> pd.DataFrame:
    """Placeholder movies for data without a movies file: the rated ids, no titles or genres."""
    ids = np.unique(movie_ids.to_numpy(dtype=np.int64))
    return pd.DataFrame(
        {
            "movie_id": ids,
            "title": np.full(len(ids), "", dtype=object),
            "year": pd.array([pd.NA] * len(ids), dtype="Int64"),
            "genres": np.full(len(ids), "", dtype=object),
        }
    )


_ML100K = _Layout("u.data", b"\t", _read_u_item)
_DAT = _Layout("ratings.dat", b"::", _read_movies_dat)
_CSV = _Layout("ratings.csv", b",", _read_movies_csv)
_LAYOUTS = (_ML100K, _DAT, _CSV)
