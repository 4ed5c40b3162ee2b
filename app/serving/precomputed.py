"""A `dotrec recommend-all` table of the serving model, held in memory for GET /recommendations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.serving.caches import Candidates

if TYPE_CHECKING:
    from app.serving.serving_model import ServingModel


@dataclass(frozen=True)
class PrecomputedTable:
    """A `dotrec recommend-all` file of one serving model, held in memory for GET /recommendations.

    Each user's list (best first) is a slice `offsets[i]:offsets[i + 1]` of `lists` (the movies'
    rows in the model, their scores and predicted ratings); the user of slice i is `user_ids[i]`
    (ascending). Loaded only when made from the serving model after it was trained.
    """

    path: Path
    signature: tuple[int, int, int]
    """(inode, size, mtime_ns) of the file when read: a reload re-reads a changed file."""
    model_version: str
    created_at: str
    k: int | None
    rated_excluded: bool
    """True when the users' rated movies were left out when the file was made."""
    user_ids: np.ndarray
    offsets: np.ndarray
    lists: Candidates

    @property
    def users(self) -> int:
        return len(self.user_ids)

    def span(self, user_id: int) -> tuple[int, int] | None:
        """(start, stop) of `user_id`'s list, None when the table has no such user."""
        i = int(np.searchsorted(self.user_ids, user_id))
        if i >= len(self.user_ids) or self.user_ids[i] != user_id:
            return None
        return int(self.offsets[i]), int(self.offsets[i + 1])

    def top(self, span: tuple[int, int], k: int, blocked: np.ndarray | None) -> Candidates | None:
        """The first k unblocked movies of a user's list; None when fewer than k are left
        (`blocked`: bool per movie row, as CatalogView.blocked)."""
        lists, part = self.lists, slice(*span)
        found = Candidates(lists.rows[part], lists.scores[part], lists.ratings[part]).unblocked(blocked)
        return None if len(found.rows) < k else found.first(k)


def file_signature(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _parse_time(value: object) -> datetime | None:
    """An ISO 8601 time as an aware datetime (naive read as UTC); None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def load_precomputed(path: Path, model: ServingModel) -> PrecomputedTable:
    """Read the recommend-all file `path` for `model`; ValueError (saying why) when it cannot
    serve it: unreadable, made from another model version, or made before the model."""
    # pyarrow only for a server that serves such a file: importing it is 80 ms of every start
    from app.ml.recommendations_table import load_recommendations

    try:
        signature = file_signature(path)
        table = load_recommendations(path)
    except ValueError:
        raise
    except Exception as error:  # OSError, or a damaged file failing some other way inside pyarrow
        raise ValueError(f"{path}: cannot be read ({type(error).__name__}: {error})") from error
    if table.model_version != model.version:
        raise ValueError(f"{path}: made from model {table.model_version}, not the serving {model.version}")
    made = _parse_time(table.created_at)
    if made is None:
        raise ValueError(f"{path}: created_at {table.created_at!r} is not an ISO 8601 time")
    trained = _parse_time(model.predictor.meta.get("created_at"))
    if trained is not None and made < trained:
        raise ValueError(f"{path}: made at {table.created_at}, before the model ({trained.isoformat()})")
    rows = model.predictor.movies.rows(table.movie_ids).astype(np.int64)
    if (rows < 0).any():
        raise ValueError(f"{path}: names movies model {model.version} does not have")
    try:
        k = int(table.metadata["k"])
    except (KeyError, ValueError):
        k = None
    return PrecomputedTable(
        path=path,
        signature=signature,
        model_version=table.model_version,
        created_at=table.created_at,
        k=k,
        rated_excluded=table.metadata.get("rated_excluded", "true") != "false",
        user_ids=np.ascontiguousarray(table.user_ids, dtype=np.int64),
        offsets=np.ascontiguousarray(table.offsets, dtype=np.int64),
        lists=Candidates(
            rows,
            np.ascontiguousarray(table.scores, dtype=np.float32),
            np.ascontiguousarray(table.predicted_ratings, dtype=np.float32),
        ),
    )
