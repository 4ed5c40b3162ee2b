"""A `dotrec recommend-all` parquet file: its schema, and reading it back for per-user lookup.

Kept apart from `recommend_all` (which needs torch) so that the server reads tables without
importing torch. Columns `user_id int64, rank int16, movie_id int64, predicted_rating float32, score float32`,
sorted by (user_id, rank); metadata `model_version`, `created_at`, `k`, `rated_excluded`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("rank", pa.int16(), nullable=False),
        pa.field("movie_id", pa.int64(), nullable=False),
        pa.field("predicted_rating", pa.float32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]
)


class UserRecommendations(NamedTuple):
    """One user's list, best first: movie ids int64, predicted ratings and scores float32 (views)."""

    movie_ids: np.ndarray
    predicted_ratings: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True, eq=False)
class Recommendations(Mapping[int, UserRecommendations]):
    """A recommend-all file in memory: a read-only mapping user id -> UserRecommendations.

    Attributes:
        model_version, created_at: from the file's metadata.
        metadata: every key-value pair of the file's metadata (k, rated_excluded, ...).
        user_ids: int64 (n_users,) ascending; the user of row range offsets[i]:offsets[i + 1].
        offsets: int64 (n_users + 1,).
        movie_ids, predicted_ratings, scores: int64 / float32 / float32 (n_rows,), each user's
            rows best first.
    """

    model_version: str
    created_at: str
    metadata: dict[str, str]
    user_ids: np.ndarray
    offsets: np.ndarray
    movie_ids: np.ndarray
    predicted_ratings: np.ndarray
    scores: np.ndarray

    def _index(self, user_id: object) -> int:
        if not isinstance(user_id, int | np.integer):
            return -1
        i = int(np.searchsorted(self.user_ids, user_id))
        return i if i < len(self.user_ids) and self.user_ids[i] == user_id else -1

    def __getitem__(self, user_id: int) -> UserRecommendations:
        i = self._index(user_id)
        if i < 0:
            raise KeyError(user_id)
        rows = slice(self.offsets[i], self.offsets[i + 1])
        return UserRecommendations(self.movie_ids[rows], self.predicted_ratings[rows], self.scores[rows])

    def __contains__(self, user_id: object) -> bool:
        return self._index(user_id) >= 0

    def __iter__(self) -> Iterator[int]:
        return iter(self.user_ids.tolist())

    def __len__(self) -> int:
        return len(self.user_ids)


def load_recommendations(path: Path) -> Recommendations:
    """Read a file written by `recommend_all`; ValueError when it is not one."""
    try:
        table = pq.read_table(path, columns=SCHEMA.names, memory_map=True)
    except (pa.ArrowInvalid, KeyError) as error:
        raise ValueError(f"{path}: not a recommend-all parquet file ({error})") from error
    metadata = {key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()}
    if "model_version" not in metadata or "created_at" not in metadata:
        raise ValueError(f"{path}: no model_version / created_at in the parquet metadata")
    columns = {name: table.column(name).to_numpy() for name in SCHEMA.names}
    users, ranks = columns["user_id"].astype(np.int64), columns["rank"]
    in_order = len(users) < 2 or bool(
        np.all((users[1:] > users[:-1]) | ((users[1:] == users[:-1]) & (ranks[1:] > ranks[:-1])))
    )
    if not in_order:
        order = np.lexsort((ranks, users))
        columns = {name: values[order] for name, values in columns.items()}
        users = columns["user_id"]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.empty(0, np.int64)
    return Recommendations(
        model_version=metadata["model_version"],
        created_at=metadata["created_at"],
        metadata=metadata,
        user_ids=users[starts],
        offsets=np.r_[starts, len(users)].astype(np.int64),
        movie_ids=columns["movie_id"].astype(np.int64),
        predicted_ratings=columns["predicted_rating"].astype(np.float32),
        scores=columns["score"].astype(np.float32),
    )
