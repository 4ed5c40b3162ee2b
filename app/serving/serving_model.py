"""One loaded model as serving holds it: its Predictor, what serving keeps at hand, its caches,
and the checks a model must pass before it serves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.ml import scoring
from app.ml.predictor import Predictor
from app.serving.caches import CandidateCache, FoldCache, ListCache
from app.serving.catalog import Catalog, CatalogView

if TYPE_CHECKING:
    from app.serving.precomputed import PrecomputedTable

CANDIDATES = 200
"""Length of a model user's cached candidate list (their best movies by ranking score)."""
FLOAT32_MAX = float(np.finfo(np.float32).max)


class ModelRefused(RuntimeError):
    """An artifact could not be loaded or failed its checks; the message says which and why."""


class ServingModel:
    """A checked Predictor plus the popular ranking, the movies' norms, the catalog's view of
    its movie rows, and its caches (which live as long as it does)."""

    def __init__(self, predictor: Predictor, catalog: Catalog, path: Path) -> None:
        _materialize(predictor)
        self.predictor = predictor
        self.version = predictor.version
        self.path = path
        self.loaded_at = datetime.now(UTC)
        self.movie_id_list: list[int] = predictor.movie_ids.tolist()
        self.popular_scores = predictor.popular_scores().astype(np.float32)
        self.popular_order = np.argsort(-self.popular_scores, kind="stable")
        self.popular_ratings = predictor.baseline(np.arange(predictor.n_movies))
        # similar movies by the head that measured better (BENCHMARKS.md, "Ranking")
        ranking = predictor.ranking
        self.neighbour_vectors = predictor.movie_emb if ranking is None else ranking.movie_factors
        self.neighbour_norms = scoring.row_norms(self.neighbour_vectors)
        self.fold_cache = FoldCache()
        self.candidates = CandidateCache()
        self.lists = ListCache()
        self.n_candidates = min(CANDIDATES, predictor.n_movies)
        self.catalog = catalog
        self._view: CatalogView | None = None
        self.view()
        self.precomputed: PrecomputedTable | None = None
        """The RECOMMENDATIONS_TABLE lists of this model, when one is loaded."""

    def view(self) -> CatalogView:
        """The catalog through this model's movie rows, rebuilt when the catalog changed."""
        view = self._view
        if view is None or view.revision != self.catalog.revision:
            view = self.catalog.view(self.movie_id_list)
            self._view = view
        return view

    def excluded_mask(self, movie_ids: np.ndarray) -> np.ndarray:
        """bool (n_movies + 1,): True at the rows of `movie_ids` (the last slot collects ids the
        model does not have), for filtering lists of rows."""
        mask = np.zeros(self.predictor.n_movies + 1, dtype=bool)
        mask[self.predictor.movies.rows(movie_ids)] = True  # -1 is the last slot, which no row uses
        return mask

    def blocked(self, genre: str | None, exclude_movie_ids: np.ndarray | None) -> np.ndarray | None:
        """bool (n_movies + 1,) rows a list may not hold: not in the catalog, not of `genre`, or
        one of `exclude_movie_ids`; None when every row may be listed."""
        blocked = self.view().blocked(genre)
        if exclude_movie_ids is not None and len(exclude_movie_ids):
            excluded = self.excluded_mask(exclude_movie_ids)
            blocked = excluded if blocked is None else excluded | blocked
        return blocked


def _materialize(predictor: Predictor) -> None:
    """View the np.memmap arrays of the predictor and its ranking head as plain ndarrays of the
    same memory.

    The artifact's tensors are read-only views of one shared mapping of the weights file (so
    workers share its pages); that stays, only the np.memmap subclass goes: each numpy
    operation on a subclass runs Python-level hooks that cost more than the arithmetic of the
    hot paths (they were about half of GET /recommendations on ML-1M).
    """
    for holder in (predictor, predictor.ranking):
        for name, value in list(vars(holder).items()) if holder is not None else ():
            if isinstance(value, np.memmap):
                setattr(holder, name, value.view(np.ndarray))


def check_servable(predictor: Predictor) -> None:
    """Refuse a model that loads but cannot serve: no movies, scores that can overflow float32,
    or outputs that are not finite. Raises ModelRefused."""
    if predictor.n_movies == 0:
        raise ModelRefused(f"{predictor.version}: the model has no movies")
    # An overflowing score is inf, which the sigmoid turns into a finite rating at an end of the
    # scale, so sampled outputs can look fine: bound every score instead, |u . m| <= F max|u| max|m|
    # (max|m| for both: similar movies multiply movie embeddings with each other).
    largest = max(_largest(predictor.user_emb), _largest(predictor.movie_emb))
    biases = _largest(predictor.user_bias) + _largest(predictor.movie_bias)
    if not predictor.movie_emb.shape[1] * largest**2 + biases < FLOAT32_MAX:
        raise ModelRefused(
            f"{predictor.version}: scores can overflow float32 (embeddings up to {largest:.3g}, "
            f"biases up to {biases:.3g} together)"
        )
    sample_movies = np.arange(min(predictor.n_movies, 64))
    checks = {"popular scores": predictor.popular_scores(), "baseline": predictor.baseline(sample_movies)}
    if predictor.n_users:
        checks["matrix"] = predictor.matrix(np.arange(min(predictor.n_users, 64)), sample_movies)
    for name, values in checks.items():
        if not np.isfinite(values).all():
            raise ModelRefused(f"{predictor.version}: {name} are not finite")


def _largest(values: np.ndarray) -> float:
    """The largest magnitude in `values` (0 when empty), without a temporary array."""
    return float(max(values.max(initial=0), -values.min(initial=0)))
