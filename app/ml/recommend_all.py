"""Batch top-N: every user of a model against every movie, written to one parquet file.

`recommend_all` scores users in chunks of `chunk_users` rows: one matrix product
`U[chunk] @ M.T` (numpy, BLAS), the model's bias terms and sigmoid and the popularity prior of
`Predictor.ranking_scores` applied in place (torch, on the same buffer through
`torch.from_numpy`, using every core), the movies each user already rated set to -inf, then
`torch.topk`. One chunk holds `chunk_users x n_movies` float32 scores at a time (242 MB for
1,024 users of ML-25M's 59,047 movies), whatever the number of users. The predicted rating
written for each pick is `Predictor.pairs` of that (user, movie), the model's rating without
the popularity prior, as the API's top-N lists report it. Rows are written as they come with
`pyarrow.parquet.ParquetWriter` (one row group a chunk) into a temporary file renamed into
place at the end.

The file: columns `user_id int64, rank int16 (1..k), movie_id int64, predicted_rating float32`,
sorted by (user_id, rank); key-value metadata `model_version`, `created_at` (UTC ISO 8601),
`k` and `rated_excluded` ("true" when the users' rated movies were left out). A user
with fewer than k unrated movies gets fewer rows. `load_recommendations` reads it back for
per-user lookup (app/ml/recommendations_table.py: no torch, so the server can read it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from app.config import Settings
from app.data.training_set import TrainingSet
from app.ml.artifact import ArtifactError, current_version_dir, load_artifact
from app.ml.predictor import Predictor
from app.ml.recommendations_table import SCHEMA

log = logging.getLogger(__name__)

#: the most a rank column of int16 can number
MAX_K = np.iinfo(np.int16).max


@dataclass(frozen=True)
class RecommendAllReport:
    """What `run_recommend_all` wrote."""

    path: Path
    model_version: str
    users: int
    rows: int
    k: int
    rated_excluded: bool
    seconds: float

    def summary(self) -> str:
        excluded = "movies rated in the database excluded" if self.rated_excluded else "nothing excluded"
        return (
            f"wrote {self.rows:,} recommendations (top {self.k}) for {self.users:,} users of model "
            f"{self.model_version} to {self.path} in {self.seconds:.1f}s ({excluded})"
        )


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
    scorer = _Scorer(predictor)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.incomplete")
    try:
        with pq.ParquetWriter(temporary, SCHEMA.with_metadata(metadata)) as writer:
            for start, stop in _progress(
                _chunks(predictor.n_users, chunk_users), predictor.n_users, progress
            ):
                lo, hi = offsets[start], offsets[stop]
                exclude = (rated_rows[0][lo:hi] - start, rated_rows[1][lo:hi])
                writer.write_table(scorer.top(start, stop, k, exclude))
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return out


class _Scorer:
    """Ranking scores and top-k of chunks of users; the per-movie terms are made tensors once."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.movie_emb_t = np.asarray(predictor.movie_emb).T
        self.movie_bias = _tensor(predictor.movie_bias)
        self.popularity_boost = _tensor(predictor.popularity_boost)

    def ranking_scores(self, start: int, stop: int) -> np.ndarray:
        """`predictor.ranking_scores(predictor.matrix(rows, every movie))` for rows start:stop,
        float32 (stop - start, n_movies), in one buffer: the product by BLAS, then the biases,
        sigmoid, scale, clip and popularity prior in place by torch (all cores, no temporaries)."""
        predictor = self.predictor
        scores = np.asarray(predictor.user_emb[start:stop]) @ self.movie_emb_t
        tensor = torch.from_numpy(scores)
        tensor.add_(_tensor(predictor.user_bias[start:stop])[:, None]).add_(self.movie_bias)
        tensor.sigmoid_().mul_(predictor.y_hi - predictor.y_lo).add_(predictor.y_lo)
        tensor.clamp_(predictor.rating_min, predictor.rating_max)
        tensor.add_(self.popularity_boost)
        return scores

    def top(self, start: int, stop: int, k: int, exclude: tuple[np.ndarray, np.ndarray]) -> pa.Table:
        """The top-k rows of users `start:stop` as a table of SCHEMA; `exclude` holds
        (row within the chunk, movie row) pairs to leave out."""
        predictor = self.predictor
        scores = self.ranking_scores(start, stop)
        scores[exclude] = -np.inf
        values, movie_rows = torch.topk(torch.from_numpy(scores), min(k, predictor.n_movies), dim=1)
        values, movie_rows = values.numpy(), movie_rows.numpy()
        kept = np.isfinite(values)  # False past the end of a user with fewer than k unrated movies
        shape = movie_rows.shape
        users = np.broadcast_to(np.arange(start, stop)[:, None], shape)[kept]
        movies = movie_rows[kept]
        ranks = np.broadcast_to(np.arange(1, shape[1] + 1, dtype=np.int16), shape)[kept]
        return pa.table(
            {
                "user_id": predictor.user_ids[users],
                "rank": ranks,
                "movie_id": predictor.movie_ids[movies],
                "predicted_rating": predictor.pairs(users, movies),
            },
            schema=SCHEMA,
        )


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A float32 tensor of a copy of `array` (torch warns on, and must not write to, the
    read-only memory-mapped weights)."""
    return torch.from_numpy(np.array(array, dtype=np.float32))


def _rated_by_user(predictor: Predictor, rated: TrainingSet | None) -> tuple[np.ndarray, tuple]:
    """The rated (user row, movie row) pairs in the predictor's rows, grouped by user row.

    Returns (offsets int64 (n_users + 1,), (user rows, movie rows)): user row u's pairs are
    `offsets[u]:offsets[u + 1]`. Pairs whose user or movie the model lacks are dropped.
    """
    empty = np.empty(0, dtype=np.int32)
    if rated is None or len(rated) == 0:
        return np.zeros(predictor.n_users + 1, dtype=np.int64), (empty, empty)
    user_map = predictor.user_rows(rated.user_ids).astype(np.int32)
    movie_map = predictor.movie_rows(rated.movie_ids).astype(np.int32)
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


# --- the job ------------------------------------------------------------------------------------


def run_recommend_all(
    settings: Settings, k: int, out: Path, progress: bool = False, cache_dir: Path | None = None
) -> RecommendAllReport:
    """Top-k for every user of the current model in `settings.models_dir`, written to `out`.

    Movies the users rated are read from DATABASE_URL and left out when the database is
    reachable and at the current schema; otherwise nothing is left out and a warning is
    logged. With `cache_dir` the export goes through `app.data.array_cache` (memory-mapped,
    re-read only when the database changed). Raises ArtifactError when there is no usable model.
    """
    started = time.perf_counter()
    version_dir = current_version_dir(settings.models_dir)
    if version_dir is None:
        raise ArtifactError(f"no model in {settings.models_dir}: run `dotrec train` first")
    predictor = Predictor(load_artifact(version_dir), settings.popularity_weight)
    rated = _rated_from_database(settings, cache_dir)
    recommend_all(predictor, rated, k, out, progress=progress)
    rows = pq.read_metadata(out).num_rows
    return RecommendAllReport(
        path=out,
        model_version=predictor.version,
        users=predictor.n_users,
        rows=rows,
        k=k,
        rated_excluded=rated is not None,
        seconds=time.perf_counter() - started,
    )


def _rated_from_database(settings: Settings, cache_dir: Path | None) -> TrainingSet | None:
    """The stored ratings, or None (logged) when the database is unreachable or not migrated."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.db.export import export_training_set
    from app.db.schema import SchemaOutOfDate, check_schema_current
    from app.db.session import make_engine

    try:
        engine = make_engine(settings.database_url, settings)
    except (SQLAlchemyError, ValueError, OSError) as error:
        log.warning("database unusable (%s): rated movies are not excluded", error)
        return None
    try:
        check_schema_current(engine)
        if cache_dir is not None:
            from app.data.array_cache import cached_training_set

            return cached_training_set(engine, cache_dir)
        return export_training_set(engine)
    except (SQLAlchemyError, SchemaOutOfDate, OSError) as error:
        log.warning("database unusable (%s): rated movies are not excluded", error)
        return None
    finally:
        engine.dispose()
