"""Integer-coded ratings: the one shape every source (files, database, generator) hands to training."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TrainingSet:
    """Ratings as contiguous arrays plus the maps between external ids and embedding rows.

    Attributes:
        user_rows: int32 (n,), row of each rating's user in `user_ids`.
        movie_rows: int32 (n,), row of each rating's movie in `movie_ids`.
        ratings: float32 (n,), the rating values.
        timestamps: int64 (n,), unix seconds of each rating (0 where unknown).
        user_ids: int64 (n_users,), external user id of each embedding row, ascending.
        movie_ids: int64 (n_movies,), external movie id of each embedding row, ascending.
        fingerprint: what identifies the data this came from (row count, newest rating, digest).
    """

    user_rows: np.ndarray
    movie_rows: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    user_ids: np.ndarray
    movie_ids: np.ndarray
    fingerprint: dict = field(default_factory=dict)

    @classmethod
    def from_arrays(
        cls,
        users: np.ndarray,
        movies: np.ndarray,
        ratings: np.ndarray,
        timestamps: np.ndarray | None = None,
        fingerprint: dict | None = None,
    ) -> TrainingSet:
        """Code external ids (any integer dtype, shape (n,)) into dense rows, ids sorted ascending.

        Ids must be positive (the catalog's and clients' convention): ValueError otherwise.
        """
        user_ids, user_rows = np.unique(np.asarray(users, dtype=np.int64), return_inverse=True)
        movie_ids, movie_rows = np.unique(np.asarray(movies, dtype=np.int64), return_inverse=True)
        for kind, ids in (("user", user_ids), ("movie", movie_ids)):
            if len(ids) and ids[0] <= 0:
                raise ValueError(f"{kind} ids must be positive integers; found {ids[0]}")
        ratings = np.ascontiguousarray(ratings, dtype=np.float32)
        if timestamps is None:
            timestamps = np.zeros(len(ratings), dtype=np.int64)
        timestamps = np.ascontiguousarray(timestamps, dtype=np.int64)
        return cls(
            user_rows=user_rows.astype(np.int32),
            movie_rows=movie_rows.astype(np.int32),
            ratings=ratings,
            timestamps=timestamps,
            user_ids=user_ids,
            movie_ids=movie_ids,
            fingerprint=fingerprint or data_fingerprint(ratings, timestamps, users, movies),
        )

    @classmethod
    def from_frame(cls, ratings: pd.DataFrame) -> TrainingSet:
        """From a frame with columns user_id, movie_id, rating and optionally timestamp."""
        timestamps = ratings["timestamp"].to_numpy() if "timestamp" in ratings else None
        return cls.from_arrays(
            ratings["user_id"].to_numpy(),
            ratings["movie_id"].to_numpy(),
            ratings["rating"].to_numpy(),
            timestamps,
        )

    def __len__(self) -> int:
        return len(self.ratings)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_movies(self) -> int:
        return len(self.movie_ids)

    def subset(self, index: np.ndarray) -> TrainingSet:
        """The ratings at `index` (int array or bool mask), keeping the same id maps and fingerprint."""
        return TrainingSet(
            user_rows=self.user_rows[index],
            movie_rows=self.movie_rows[index],
            ratings=self.ratings[index],
            timestamps=self.timestamps[index],
            user_ids=self.user_ids,
            movie_ids=self.movie_ids,
            fingerprint=self.fingerprint,
        )


def data_fingerprint(
    ratings: np.ndarray, timestamps: np.ndarray, users: np.ndarray, movies: np.ndarray
) -> dict:
    """Row count, newest rating time and a digest of the content, to tell data sets apart."""
    digest = hashlib.sha256()
    for array, dtype in ((users, np.int64), (movies, np.int64), (ratings, np.float32)):
        digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return {
        "rows": len(ratings),
        "max_rated_at": int(timestamps.max()) if len(timestamps) else 0,
        "sha256": digest.hexdigest()[:16],
    }
