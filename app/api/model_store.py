"""The model being served, the movie catalog kept in memory, and the fold-in cache.

`ModelStore.current` is one attribute read (atomic in CPython): requests take the model once
and use that object to the end, so a reload never changes a model under a request. A reload
loads and checks the new artifact completely, off the event loop, before the swap; any
problem leaves the old model serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from app.api.lru import Lru
from app.db.repository import MovieRow
from app.ml.artifact import ArtifactError, current_version_dir, load_artifact
from app.ml.predictor import FoldedUser, Predictor
from app.ml.recommendations_table import load_recommendations

log = logging.getLogger("dotrec.api")

FOLD_CACHE_SIZE = 50_000
"""Most folded-in users kept per model (least recently used dropped first)."""
CANDIDATES = 200
"""Length of a model user's cached candidate list (their best movies by ranking score)."""
CANDIDATE_CACHE_SIZE = 100_000
"""Most model users whose candidate lists are kept (about CANDIDATES x 8 bytes each)."""
LIST_CACHE_SIZE = 10_000
"""Most finished recommendation lists kept (about 3 kB each for k = 10)."""


class ModelRefused(RuntimeError):
    """An artifact could not be loaded or failed its checks; the message says which and why."""


# --- the catalog --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    title: str
    year: int | None
    genres: tuple[str, ...]


class Catalog:
    """Every movie of the catalog (id, title, year, genres), read at start and kept current.

    Movies are added by POST /movies in this process and, when another process added one, on
    the first request naming it (a lookup miss is checked against the database). `revision`
    changes with every addition so models rebuild their per-row views lazily.
    """

    def __init__(self) -> None:
        self.entries: dict[int, CatalogEntry] = {}
        self.loaded = False
        self.revision = 0
        self._lock = threading.Lock()

    def replace(self, movies: list[MovieRow]) -> None:
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


@dataclass
class CatalogView:
    """The catalog seen through one model's movie rows."""

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
        `genre`), the last slot True; None when every row may be."""
        key = genre.casefold() if genre else ""
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
        key = genre.casefold()
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


UNKNOWN_GENRE = "\x00unknown"
"""Cache key shared by every genre no movie has (masks are cached per known genre only)."""


# --- fold-in cache ------------------------------------------------------------------------------------


class FoldCache:
    """Folded-in users of one model, each with the ratings it was solved from.

    An entry is used only when the ratings just read from the database are the same ones, so
    a rating stored by any process (another worker included) is never missed; a rating stored
    through this process also drops the entry at once.
    """

    def __init__(self, capacity: int = FOLD_CACHE_SIZE) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, tuple[np.ndarray, np.ndarray, FoldedUser]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, user_id: int, movie_ids: np.ndarray, ratings: np.ndarray) -> FoldedUser | None:
        with self._lock:
            entry = self._entries.get(user_id)
            if (
                entry is not None
                and np.array_equal(entry[0], movie_ids)
                and np.array_equal(entry[1], ratings)
            ):
                self._entries.move_to_end(user_id)
                self.hits += 1
                return entry[2]
            self.misses += 1
            return None

    def put(self, user_id: int, movie_ids: np.ndarray, ratings: np.ndarray, folded: FoldedUser) -> None:
        with self._lock:
            self._entries[user_id] = (movie_ids, ratings, folded)
            self._entries.move_to_end(user_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def drop(self, user_id: int) -> None:
        with self._lock:
            self._entries.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._entries)


class CandidateCache(Lru[int, tuple[np.ndarray, np.ndarray]]):
    """Per model user (row), their best movie rows by ranking score, best first (CANDIDATES of
    them, more for users whose filters need more), and the predicted ratings of those movies.

    A model user's ranking depends on the model alone (their ratings in the database only
    decide what is left out), so the list holds until the model changes; each request filters
    it (rated, genre, catalog) and takes the first k. When that leaves fewer than k, a longer
    list is ranked and replaces the entry (strategies._from_candidates).
    """

    def __init__(self, capacity: int = CANDIDATE_CACHE_SIZE) -> None:
        super().__init__(capacity)


class ListCache:
    """Finished GET /recommendations items of model users, by (user row, k, genre), each kept
    with the rated-movie array it left out and the catalog revision it was built under.

    An entry counts only for that very array object: the SQLite reader hands out the same
    object for a user until any commit makes it read again (queries.RatedCache), so a list is
    reused exactly while nothing it depends on (the model, the catalog, the user's ratings)
    can have changed. Where ratings are read anew at each request (PostgreSQL) nothing is ever
    reused, which is correct too.
    """

    def __init__(self, capacity: int = LIST_CACHE_SIZE) -> None:
        self._lists: Lru[tuple, tuple[object, int, list[dict]]] = Lru(capacity)

    def get(self, key: tuple, rated: np.ndarray | None, revision: int) -> list[dict] | None:
        entry = self._lists.get(key)
        if entry is None or entry[0] is not rated or entry[1] != revision:
            return None
        return entry[2]

    def put(self, key: tuple, rated: np.ndarray | None, revision: int, items: list[dict]) -> None:
        self._lists.put(key, (rated, revision, items))  # holding `rated` keeps its identity unique

    def __len__(self) -> int:
        return len(self._lists)


# --- one loaded model ---------------------------------------------------------------------------------


class ServingModel:
    """A checked Predictor plus what serving needs at hand: id -> row maps, the popular ranking,
    the catalog's titles and genres per movie row, and the fold-in cache."""

    def __init__(self, predictor: Predictor, catalog: Catalog, path: Path) -> None:
        _materialize(predictor)
        self.predictor = predictor
        self.version = predictor.version
        self.path = path
        self.loaded_at = datetime.now(UTC)
        self.user_index: dict[int, int] = dict(
            zip(predictor.user_ids.tolist(), range(predictor.n_users), strict=True)
        )
        self.movie_index: dict[int, int] = dict(
            zip(predictor.movie_ids.tolist(), range(predictor.n_movies), strict=True)
        )
        self.movie_id_list: list[int] = predictor.movie_ids.tolist()
        self._movie_row_table = _dense_table(predictor.movie_ids)
        self.popular_order = np.argsort(-predictor.popular_scores(), kind="stable")
        self.popular_ratings = predictor.baseline(np.arange(predictor.n_movies))
        self.movie_norms = np.linalg.norm(predictor.movie_emb, axis=1)
        self.fold_cache = FoldCache()
        self.candidates = CandidateCache()
        self.lists = ListCache()
        self.n_candidates = min(CANDIDATES, predictor.n_movies)
        self.candidate_dtype = np.int32
        self.catalog = catalog
        self._view: CatalogView | None = None
        self.view()
        self.precomputed: PrecomputedTable | None = None
        """The RECOMMENDATIONS_TABLE lists of this model, when one is loaded (see PrecomputedTable)."""

    def movie_rows(self, movie_ids: np.ndarray) -> np.ndarray:
        """int64 rows of (positive) movie ids, -1 where the model has no such movie: one
        table lookup when the ids are dense enough, else a binary search."""
        table = self._movie_row_table
        if table is None:
            return self.predictor.movie_rows(movie_ids)
        # ids past the table clip onto its last entry, which is -1
        return np.take(table, np.asarray(movie_ids, dtype=np.int64), mode="clip")

    def excluded_mask(self, movie_ids: np.ndarray) -> np.ndarray:
        """bool (n_movies + 1,): True at the rows of `movie_ids` (the last slot collects ids the
        model does not have), for filtering lists of rows."""
        mask = np.zeros(self.predictor.n_movies + 1, dtype=bool)
        mask[self.movie_rows(movie_ids)] = True  # -1 is the last slot, which no row uses
        return mask

    def view(self) -> CatalogView:
        """The catalog through this model's rows, rebuilt when the catalog changed."""
        view = self._view
        if view is None or view.revision != self.catalog.revision:
            view = self._build_view()
            self._view = view
        return view

    def _build_view(self) -> CatalogView:
        revision = self.catalog.revision
        entries = self.catalog.entries
        found = [entries.get(movie_id) for movie_id in self.movie_id_list]
        recommendable = np.fromiter((e is not None for e in found), dtype=bool, count=len(found))
        return CatalogView(
            revision=revision,
            titles=[None if e is None else e.title for e in found],
            recommendable=recommendable,
            all_recommendable=bool(recommendable.all()),
            genres=[frozenset() if e is None else frozenset(g.casefold() for g in e.genres) for e in found],
        )


def _materialize(predictor: Predictor) -> None:
    """View the predictor's np.memmap arrays as plain ndarrays of the same memory.

    The artifact's tensors are read-only views of one shared mapping of the weights file (so
    workers share its pages); that stays, only the np.memmap subclass goes: each numpy
    operation on a subclass runs Python-level hooks that cost more than the arithmetic of the
    hot paths (they were about half of GET /recommendations on ML-1M).
    """
    for name, value in list(vars(predictor).items()):
        if isinstance(value, np.memmap):
            setattr(predictor, name, value.view(np.ndarray))


def _dense_table(ids: np.ndarray, slack: int = 8, floor: int = 1 << 20) -> np.ndarray | None:
    """An id -> row array (-1: no such movie, also its last entry) when the largest id is small
    (at most `slack` x the count, or `floor`), so a lookup is one indexing; None otherwise."""
    if len(ids) == 0 or int(ids[-1]) >= max(slack * len(ids), floor):
        return None
    table = np.full(int(ids[-1]) + 2, -1, dtype=np.int64)
    table[ids] = np.arange(len(ids))
    return table


def check_predictor(predictor: Predictor) -> None:
    """Refuse a model that loads but cannot serve: no movies, scores that can overflow float32,
    or non-finite / off-range outputs."""
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
        sample_users = np.arange(min(predictor.n_users, 64))
        checks["matrix"] = predictor.matrix(sample_users, sample_movies)
    for name, values in checks.items():
        if not np.isfinite(values).all():
            raise ModelRefused(f"{predictor.version}: {name} are not finite")
    if "matrix" in checks:
        values = checks["matrix"]
        if values.min() < predictor.y_lo - 1e-3 or values.max() > predictor.y_hi + 1e-3:
            raise ModelRefused(f"{predictor.version}: predictions fall outside y_range")


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _largest(values: np.ndarray) -> float:
    """The largest magnitude in `values` (0 when empty), without a temporary array."""
    return float(max(values.max(initial=0), -values.min(initial=0)))


# --- precomputed recommendations ----------------------------------------------------------------------


@dataclass(frozen=True)
class PrecomputedTable:
    """A `dotrec recommend-all` file of one serving model, held in memory for GET /recommendations.

    Each user's list (best first) is a slice `offsets[i]:offsets[i + 1]` of `rows` (the movies'
    rows in the model) and `ratings`; the user of slice i is
    `user_ids[i]` (ascending). Loaded only when made from the serving model after it was trained.
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
    rows: np.ndarray
    ratings: np.ndarray

    @property
    def users(self) -> int:
        return len(self.user_ids)

    def span(self, user_id: int) -> tuple[int, int] | None:
        """(start, stop) of `user_id`'s list, None when the table has no such user."""
        i = int(np.searchsorted(self.user_ids, user_id))
        if i >= len(self.user_ids) or self.user_ids[i] != user_id:
            return None
        return int(self.offsets[i]), int(self.offsets[i + 1])

    def top(
        self, span: tuple[int, int], k: int, blocked: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, ratings) of the first k unblocked movies of a user's list; None when fewer
        than k are left (`blocked`: bool per movie row, as CatalogView.blocked)."""
        rows = self.rows[span[0] : span[1]]
        ratings = self.ratings[span[0] : span[1]]
        if blocked is not None:
            keep = ~blocked[rows]
            rows, ratings = rows[keep], ratings[keep]
        if len(rows) < k:
            return None
        return rows[:k], ratings[:k]


def _file_signature(path: Path) -> tuple[int, int, int]:
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
    try:
        signature = _file_signature(path)
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
    rows = model.movie_rows(table.movie_ids).astype(np.int64)
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
        rows=rows,
        ratings=np.ascontiguousarray(table.predicted_ratings, dtype=np.float32),
    )


# --- the store ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Swap:
    """What a load did."""

    model: ServingModel
    previous: ServingModel | None
    reloaded: bool
    seconds: float


class ModelStore:
    """Holds the serving model; loads replace it only after a complete load and check."""

    def __init__(
        self,
        models_dir: Path,
        catalog: Catalog,
        rating_scale: tuple[float, float] | None = None,
        popularity_weight: float = 0.5,
        recommendations_table: Path | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.recommendations_table = recommendations_table
        """A recommend-all parquet file to serve GET /recommendations from (see attach_table)."""
        self.catalog = catalog
        self.rating_scale = rating_scale
        self.popularity_weight = popularity_weight
        self.current: ServingModel | None = None
        self.problem: str | None = "no model loaded yet"
        """Why no model is serving (None while one is)."""
        self._lock = threading.Lock()

    def load_newest(self) -> Swap:
        """Load the artifact `current` names (else the newest version); refuse it on any problem.

        Raises ModelRefused; the model serving before (if any) keeps serving.
        """
        with self._lock:
            started = time.perf_counter()
            path = current_version_dir(self.models_dir)
            if path is None:
                raise self._refused(f"no model artifact in {self.models_dir}")
            previous = self.current
            if previous is not None and previous.path == path:
                self.attach_table(previous)
                return Swap(previous, previous, False, time.perf_counter() - started)
            try:
                model = self._load(path)
            except ModelRefused as refused:
                raise self._refused(str(refused)) from refused
            self.attach_table(model)
            self.current = model
            self.problem = None
            seconds = time.perf_counter() - started
            log.info("serving model %s (%s), loaded in %.2fs", model.version, path, seconds)
            return Swap(model, previous, True, seconds)

    def load_newest_good(self) -> Swap | None:
        """At start: the newest version that loads and passes its checks, None when there is none."""
        try:
            return self.load_newest()
        except ModelRefused as refused:
            first_problem = str(refused)
        for path in self._older_versions():
            with self._lock:
                try:
                    model = self._load(path)
                except ModelRefused as refused:
                    log.warning("model refused: %s", refused)
                    continue
                self.attach_table(model)
                self.current = model
                self.problem = None
            log.warning(
                "serving the older model %s: the newest was refused (%s)", model.version, first_problem
            )
            return Swap(model, None, True, 0.0)
        return None

    def attach_table(self, model: ServingModel) -> None:
        """Give `model` the RECOMMENDATIONS_TABLE file when it exists and was made from this
        model after its training; (re)read only when the file changed. Any problem is logged
        and leaves the model without a table (live scoring), never raises."""
        path = self.recommendations_table
        current = model.precomputed
        if path is None:
            model.precomputed = None
            return
        try:
            signature = _file_signature(path)
        except OSError:
            log.warning("recommendations table %s not found: recommendations are scored live", path)
            model.precomputed = None
            return
        if current is not None and current.path == path and current.signature == signature:
            return
        try:
            table = load_precomputed(path, model)
        except ValueError as problem:
            log.warning("recommendations table ignored: %s", problem)
            model.precomputed = None
            return
        model.precomputed = table
        log.info(
            "serving precomputed recommendations of %s users from %s (made %s)",
            f"{table.users:,}",
            path,
            table.created_at,
        )

    def invalidate_user(self, user_id: int) -> None:
        """Drop `user_id`'s folded-in embedding: they rated (or unrated) something."""
        model = self.current
        if model is not None:
            model.fold_cache.drop(user_id)

    def _load(self, path: Path) -> ServingModel:
        try:
            artifact = load_artifact(path)
            predictor = Predictor(artifact, popularity_weight=self.popularity_weight)
        except ArtifactError as error:
            raise ModelRefused(str(error)) from error
        except (KeyError, TypeError, ValueError, OSError) as error:
            raise ModelRefused(f"{path}: cannot be served ({type(error).__name__}: {error})") from error
        check_predictor(predictor)
        if (
            self.rating_scale is not None
            and (predictor.rating_min, predictor.rating_max) != self.rating_scale
        ):
            log.warning(
                "model %s was trained on the scale %s..%s, the service is configured for %s..%s",
                predictor.version,
                predictor.rating_min,
                predictor.rating_max,
                *self.rating_scale,
            )
        return ServingModel(predictor, self.catalog, path)

    def _refused(self, reason: str) -> ModelRefused:
        log.error("model refused: %s", reason)
        if self.current is None:
            self.problem = reason
        return ModelRefused(reason)

    def _older_versions(self) -> list[Path]:
        newest = current_version_dir(self.models_dir)
        if not self.models_dir.is_dir():
            return []
        versions = sorted((p for p in self.models_dir.glob("[0-9]*") if p.is_dir()), reverse=True)
        return [p.resolve() for p in versions if newest is None or p.resolve() != newest]
