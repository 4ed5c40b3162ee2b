"""Batch top-N: every user of a model against every movie, written to one parquet file.

`recommend_all` scores users in chunks of `chunk_users` rows through the same Predictor and
kernel as the API (`Predictor.matrix`, `user_list_scores`, `scoring.top_k_rows`): one chunk holds
`chunk_users x n_movies` float32 scores at a time (242 MB for 1,024 users of ML-25M's 59,047
movies), whatever the number of users. The movies each user already rated score -inf. The
predicted rating written for each pick is the served rating of that (user, movie), without
the ranking's prior, as the API's top-N lists report it. Rows are written as they come with
`pyarrow.parquet.ParquetWriter` (one row group a chunk) into a temporary file renamed into
place at the end.

The file: columns `user_id int64, rank int16 (1..k), movie_id int64, predicted_rating float32`,
sorted by (user_id, rank); key-value metadata `model_version`, `created_at` (UTC ISO 8601),
`k` and `rated_excluded` ("true" when the users' rated movies were left out). A user
with fewer than k unrated movies gets fewer rows. `load_recommendations` reads it back for
per-user lookup (app/ml/recommendations_table.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from app.data.training_set import TrainingSet
from app.ml import scoring
from app.ml.predictor import Predictor
from app.ml.recommendations_table import SCHEMA

#: the most a rank column of int16 can number
MAX_K = np.iinfo(np.int16).max


def recommend_all(
    predictor: Predictor,
    rated: TrainingSet | None,
    k: int,
    out: Path,
    chunk_users: int = 1024,
    progress: bool = False,
) -> Path:
    """Write the top `k` unrated movies of every user of `predictor` to the parquet file `out`.

    `rated` (e.g. the database's export) names the movies to leave out of each user's list;
    its ids are mapped onto the model's rows by id, and ratings of users or movies the model
    does not know are ignored. None leaves nothing out. Returns `out`.
    """
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, not {k}")
    if chunk_users < 1:
        raise ValueError(f"chunk_users must be positive, not {chunk_users}")
    metadata = {
        "model_version": predictor.version,
        "created_at": datetime.now(UTC).isoformat(),
        "k": str(k),
        "rated_excluded": "false" if rated is None else "true",
    }
    offsets, rated_rows = _rated_by_user(predictor, rated)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.incomplete")
    try:
        with pq.ParquetWriter(temporary, SCHEMA.with_metadata(metadata)) as writer:
            for start, stop in _progress(
                _chunks(predictor.n_users, chunk_users), predictor.n_users, progress
            ):
                lo, hi = offsets[start], offsets[stop]
                exclude = (rated_rows[0][lo:hi] - start, rated_rows[1][lo:hi])
                writer.write_table(_top_table(predictor, start, stop, k, exclude))
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return out


def _top_table(predictor: Predictor, start: int, stop: int, k: int, exclude: tuple) -> pa.Table:
    """The top-k rows of users `start:stop` as a table of SCHEMA; `exclude` holds (row within
    the chunk, movie row) pairs to leave out."""
    users = np.arange(start, stop)
    ratings = predictor.matrix(users)
    ranking = predictor.user_list_scores(users, ratings)
    ranking[exclude] = -np.inf
    movie_rows, values = scoring.top_k_rows(ranking, k)
    kept = np.isfinite(values)  # False past the end of a user with fewer than k unrated movies
    shape = movie_rows.shape
    chunk_rows = np.broadcast_to(np.arange(stop - start)[:, None], shape)[kept]
    movies = movie_rows[kept]
    ranks = np.broadcast_to(np.arange(1, shape[1] + 1, dtype=np.int16), shape)[kept]
    return pa.table(
        {
            "user_id": predictor.user_ids[start + chunk_rows],
            "rank": ranks,
            "movie_id": predictor.movie_ids[movies],
            "predicted_rating": ratings[chunk_rows, movies],
            "score": values[kept],
        },
        schema=SCHEMA,
    )


def _rated_by_user(predictor: Predictor, rated: TrainingSet | None) -> tuple[np.ndarray, tuple]:
    """The rated (user row, movie row) pairs in the predictor's rows, grouped by user row.

    Returns (offsets int64 (n_users + 1,), (user rows, movie rows)): user row u's pairs are
    `offsets[u]:offsets[u + 1]`. Pairs whose user or movie the model lacks are dropped.
    """
    empty = np.empty(0, dtype=np.int32)
    if rated is None or len(rated) == 0:
        return np.zeros(predictor.n_users + 1, dtype=np.int64), (empty, empty)
    user_map = predictor.users.rows(rated.user_ids).astype(np.int32)
    movie_map = predictor.movies.rows(rated.movie_ids).astype(np.int32)
    users, movies = user_map[rated.user_rows], movie_map[rated.movie_rows]
    known = (users >= 0) & (movies >= 0)
    if not known.all():
        users, movies = users[known], movies[known]
    if len(users) > 1 and (users[1:] < users[:-1]).any():
        order = np.argsort(users, kind="stable")
        users, movies = users[order], movies[order]
    offsets = np.zeros(predictor.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=predictor.n_users), out=offsets[1:])
    return offsets, (users, movies)


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _progress(chunks: Iterator[tuple[int, int]], total: int, show: bool) -> Iterator[tuple[int, int]]:
    if not show:
        yield from chunks
        return
    from rich.progress import Progress

    with Progress(transient=False) as bar:
        task = bar.add_task("recommend-all", total=total)
        for start, stop in chunks:
            yield start, stop
            bar.update(task, advance=stop - start)
