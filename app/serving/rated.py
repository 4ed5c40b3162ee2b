"""What users have rated, as serving needs it: read through the database's request-time reads
and kept while the database's ratings version stands still."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from app.db.reads import Reads
from app.serving.caches import LockedLru

RATED_CACHE_USERS = 20_000
"""Most (user, version) entries kept (ML-1M: ~1.4 kB a user)."""


class RatedMovies:
    """The movies a user rated, by (user, ratings version): any commit of any process makes a
    new version, so an entry is never reused past a change."""

    def __init__(self, reads: Reads, capacity: int = RATED_CACHE_USERS) -> None:
        self.reads = reads
        self._cache: LockedLru[tuple[int, Hashable], np.ndarray] = LockedLru(capacity)

    def version(self) -> Hashable | None:
        """The ratings version now (None: the database gives none)."""
        return self.reads.ratings_version()

    async def of(self, user_id: int, version: Hashable | None) -> np.ndarray:
        """The user's rated movie ids; `version` is `version()` read before this call (a commit
        landing after it only makes the entry stale sooner, never stale-but-trusted; None:
        read, not kept)."""
        if version is not None and (cached := self._cache.get((user_id, version))) is not None:
            return cached
        movie_ids = await self.reads.rated_movie_ids(user_id)
        if version is not None:
            movie_ids.flags.writeable = False  # shared by every request until the next commit
            self._cache.put((user_id, version), movie_ids)
        return movie_ids

    def __len__(self) -> int:
        return len(self._cache)
