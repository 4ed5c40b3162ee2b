"""The store that holds the serving model and swaps in new ones.

`ModelStore.current` is one attribute read (atomic in CPython): requests take the model once
and use that object to the end, so a reload never changes a model under a request. A reload
loads and checks the new artifact completely, off the event loop, before the swap; any
problem leaves the old model serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.ml.artifact import ArtifactError, current_version_dir, load_artifact
from app.ml.predictor import Predictor
from app.serving.catalog import Catalog
from app.serving.precomputed import file_signature, load_precomputed
from app.serving.serving_model import ModelRefused, ServingModel, check_servable

log = logging.getLogger("dotrec.serving")


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
        self._refused_path: Path | None = None
        """The version last refused: not tried again by `follow_current` until `current` moves."""

    def follow_current(self) -> Swap | None:
        """Load the version `current` names when it is neither the one serving nor the one last
        refused (each serving process calls this every MODEL_POLL_S, so every worker and every
        replica picks up a new version by itself); None when nothing changed or it was refused."""
        path = current_version_dir(self.models_dir)
        serving = self.current.path if self.current is not None else None
        if path is None or path in (serving, self._refused_path):
            return None
        try:
            return self.load_newest()
        except ModelRefused:
            return None  # logged by load_newest; the model serving before keeps serving

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
                self._refused_path = path
                raise self._refused(str(refused)) from refused
            self._refused_path = None
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
            signature = file_signature(path)
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

    def invalidate_users(self, user_ids: Iterable[int]) -> None:
        """Drop these users' folded-in embeddings: they rated (or unrated) something."""
        model = self.current
        if model is not None:
            model.fold_cache.drop(user_ids)

    def _load(self, path: Path) -> ServingModel:
        try:
            artifact = load_artifact(path)
            predictor = Predictor(artifact, popularity_weight=self.popularity_weight)
        except ArtifactError as error:
            raise ModelRefused(str(error)) from error
        except (KeyError, TypeError, ValueError, OSError) as error:
            raise ModelRefused(f"{path}: cannot be served ({type(error).__name__}: {error})") from error
        check_servable(predictor)
        if self.rating_scale is not None and predictor.scale != self.rating_scale:
            log.warning(
                "model %s was trained on the scale %s..%s, the service is configured for %s..%s",
                predictor.version,
                *predictor.scale,
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
