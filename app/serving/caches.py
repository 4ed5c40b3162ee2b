"""The serving caches of one loaded model, each keyed by everything its value depends on.

All are least-recently-used maps (cachetools' LRUCache) behind a lock: requests served in the
thread pool share them with the event loop's. A model's caches live and die with the model, so
the model version is part of every key by construction.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from cachetools import LRUCache

from app.ml.predictor import FoldedUser

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

FOLD_CACHE_SIZE = 50_000
"""Most folded-in users kept per model."""
CANDIDATE_CACHE_SIZE = 100_000
"""Most model users whose candidate lists are kept (about CANDIDATES x 12 bytes each)."""
LIST_CACHE_SIZE = 10_000
"""Most finished recommendation lists kept (about 3 kB each for k = 10)."""


class LockedLru(Generic[K, V]):
    """An LRUCache of at most `capacity` entries (or, with `getsizeof`, of values whose sizes add
    up to at most `capacity`), safe to share between threads."""

    def __init__(self, capacity: int, getsizeof: Callable[[V], int] | None = None) -> None:
        self._entries: LRUCache[K, V] = LRUCache(maxsize=capacity, getsizeof=getsizeof)
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        """Keep `value` under `key` (not kept when it alone is larger than the capacity)."""
        with self._lock, contextlib.suppress(ValueError):  # cachetools: "value too large"
            self._entries[key] = value

    def drop(self, keys: Iterable[K]) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class FoldEntry:
    """A folded-in user and the ratings it was solved from."""

    movie_ids: np.ndarray
    ratings: np.ndarray
    folded: FoldedUser


class FoldCache:
    """Folded-in users of one model, by user id. An entry counts only while the user's ratings
    just read from the database are the ones it was solved from, so a rating stored by any
    process (another worker included) is never missed."""

    def __init__(self, capacity: int = FOLD_CACHE_SIZE) -> None:
        self._users: LockedLru[int, FoldEntry] = LockedLru(capacity)
        self.hits = 0
        self.misses = 0

    def get(self, user_id: int, movie_ids: np.ndarray, ratings: np.ndarray) -> FoldedUser | None:
        entry = self._users.get(user_id)
        if entry is None or not (
            np.array_equal(entry.movie_ids, movie_ids) and np.array_equal(entry.ratings, ratings)
        ):
            self.misses += 1
            return None
        self.hits += 1
        return entry.folded

    def put(self, user_id: int, movie_ids: np.ndarray, ratings: np.ndarray, folded: FoldedUser) -> None:
        self._users.put(user_id, FoldEntry(movie_ids, ratings, folded))

    def drop(self, user_ids: Iterable[int]) -> None:
        """Forget these users at once: this process stored or deleted ratings of theirs."""
        self._users.drop(user_ids)

    def __len__(self) -> int:
        return len(self._users)


@dataclass(frozen=True)
class Candidates:
    """A user's best movie rows by list score, best first, with what the items show."""

    rows: np.ndarray
    """int32 movie rows."""
    scores: np.ndarray
    """float32 what the list is ranked by."""
    ratings: np.ndarray
    """float32 predicted ratings of those movies."""

    def unblocked(self, blocked: np.ndarray | None) -> Candidates:
        """The candidates a list may hold (`blocked`: bool per movie row, as CatalogView.blocked)."""
        if blocked is None:
            return self
        keep = ~blocked[self.rows]
        return Candidates(self.rows[keep], self.scores[keep], self.ratings[keep])

    def first(self, k: int) -> Candidates:
        return Candidates(self.rows[:k], self.scores[:k], self.ratings[:k])


class CandidateCache(LockedLru[int, Candidates]):
    """Candidates by user row. A model user's ranking depends on the model alone (their ratings
    in the database only decide what is left out), so an entry holds for the model's life."""

    def __init__(self, capacity: int = CANDIDATE_CACHE_SIZE) -> None:
        super().__init__(capacity)


ListKey = tuple[int, str, Hashable, int]
"""(user row, genre key, the database's data version of the user's ratings, catalog revision)."""


class ListCache(LockedLru[ListKey, tuple[int, list]]):
    """Finished GET /recommendations items of model users, as (the k asked for, items). The key
    holds everything a list depends on besides the model and k: the user, the genre, the version
    of the ratings it left out (None, never cached, where the database gives no version) and the
    catalog revision. One entry a user serves every k up to the one it was made for: a ranking's
    top k is the first k of its top K (so lists of k from 5 to 15 share one entry instead of
    evicting each other)."""

    def __init__(self, capacity: int = LIST_CACHE_SIZE) -> None:
        super().__init__(capacity)

    def first(self, key: ListKey, k: int) -> list | None:
        """The first k items kept under `key`, if a list of at least k was asked for."""
        entry = self.get(key)
        if entry is None or entry[0] < k:
            return None
        return entry[1][:k]
