"""The movie catalog kept in memory, and how one model's movie rows see it."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from app.db.repository import MovieRow

UNKNOWN_GENRE = "\x00unknown"
"""Cache key shared by every genre no movie has (masks are cached per known genre only)."""


@dataclass(frozen=True)
class CatalogEntry:
    title: str
    year: int | None
    genres: tuple[str, ...]


class Catalog:
    """Every movie of the catalog (id, title, year, genres), read at start and kept current.

    Movies are added by POST /movies in this process and, when another process added one, on
    the first request naming it (a lookup miss is checked against the database). `revision`
    changes with every change, so models rebuild their views of it (and drop lists built
    under an older one).
    """

    def __init__(self) -> None:
        self.entries: dict[int, CatalogEntry] = {}
        self.loaded = False
        self.revision = 0
        self._lock = threading.Lock()

    def replace(self, movies: Iterable[MovieRow]) -> None:
        entries = {m.id: CatalogEntry(m.title, m.year, tuple(m.genres)) for m in movies}
        with self._lock:
            self.entries = entries
            self.loaded = True
            self.revision += 1

    def add(self, movie: MovieRow) -> None:
        with self._lock:
            self.entries[movie.id] = CatalogEntry(movie.title, movie.year, tuple(movie.genres))
            self.revision += 1

    def __contains__(self, movie_id: int) -> bool:
        return movie_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def view(self, movie_ids: list[int]) -> CatalogView:
        """The catalog seen through a model's movie rows (`movie_ids[row]` is each row's id)."""
        revision = self.revision
        found = [self.entries.get(movie_id) for movie_id in movie_ids]
        recommendable = np.fromiter((e is not None for e in found), dtype=bool, count=len(found))
        return CatalogView(
            revision=revision,
            titles=[None if e is None else e.title for e in found],
            recommendable=recommendable,
            all_recommendable=bool(recommendable.all()),
            genres=[frozenset() if e is None else frozenset(g.casefold() for g in e.genres) for e in found],
        )


@dataclass
class CatalogView:
    """The catalog seen through one model's movie rows, at one catalog revision."""

    revision: int
    titles: list[str | None]
    recommendable: np.ndarray
    """bool (n_movies,): the row's movie is in the catalog."""
    all_recommendable: bool
    genres: list[frozenset[str]]
    genre_masks: dict[str, np.ndarray] = field(default_factory=dict)
    blocked_masks: dict[str, np.ndarray | None] = field(default_factory=dict)
    _known_genres: frozenset[str] | None = None

    def blocked(self, genre: str | None = None) -> np.ndarray | None:
        """bool (n_movies + 1,): rows that may not be recommended (not in the catalog, not of
        `genre`), the last slot True (it collects ids the model lacks); None when every row may be."""
        key = genre_key(genre)
        if key and key not in self.known_genres:
            key = UNKNOWN_GENRE  # one mask for every genre no movie has: nothing allowed
        if key in self.blocked_masks:
            return self.blocked_masks[key]
        allowed = self.recommendable if not key else self.recommendable & self.genre_mask(key)
        mask = None if allowed.all() else np.append(~allowed, True)
        self.blocked_masks[key] = mask
        return mask

    def genre_mask(self, genre: str) -> np.ndarray:
        """bool (n_movies,): rows whose genres include `genre` (any case)."""
        key = genre_key(genre)
        if key not in self.known_genres:
            return np.zeros(len(self.genres), dtype=bool)
        mask = self.genre_masks.get(key)
        if mask is None:
            mask = np.fromiter((key in g for g in self.genres), dtype=bool, count=len(self.genres))
            self.genre_masks[key] = mask
        return mask

    @property
    def known_genres(self) -> frozenset[str]:
        if self._known_genres is None:
            self._known_genres = frozenset().union(*self.genres)
        return self._known_genres


def genre_key(genre: str | None) -> str:
    """How genres compare: case-folded (so "COMEDY", "comedy" and "Comedy" are one), "" for none."""
    return genre.casefold() if genre else ""
