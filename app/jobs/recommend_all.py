"""`dotrec recommend-all`: every user's top-k of the current model, rated movies read from the
database and left out, into one parquet file."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.data.training_set import TrainingSet
from app.db.array_cache import cached_training_set
from app.db.export import export_training_set
from app.db.schema import SchemaOutOfDate, check_schema_current
from app.db.session import make_engine
from app.jobs.training import served_predictor
from app.ml.artifact import ArtifactError, current_version_dir, load_artifact
from app.ml.recommend_all import recommend_all

log = logging.getLogger(__name__)


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


def run_recommend_all(
    settings: Settings, k: int, out: Path, progress: bool = False, cache_dir: Path | None = None
) -> RecommendAllReport:
    """Top-k for every user of the current model in `settings.models_dir`, written to `out`.

    Movies the users rated are read from DATABASE_URL and left out when the database is
    reachable and at the current schema; otherwise nothing is left out and a warning is
    logged. With `cache_dir` the export goes through `app.db.array_cache` (memory-mapped,
    re-read only when the database changed). Raises ArtifactError when there is no usable model.
    """
    started = time.perf_counter()
    version_dir = current_version_dir(settings.models_dir)
    if version_dir is None:
        raise ArtifactError(f"no model in {settings.models_dir}: run `dotrec train` first")
    predictor = served_predictor(load_artifact(version_dir), settings)
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
    try:
        engine = make_engine(settings.database_url, settings)
    except (SQLAlchemyError, ValueError, OSError) as error:
        log.warning("database unusable (%s): rated movies are not excluded", error)
        return None
    try:
        check_schema_current(engine)
        if cache_dir is not None:
            return cached_training_set(engine, cache_dir)
        return export_training_set(engine)
    except (SQLAlchemyError, SchemaOutOfDate, OSError) as error:
        log.warning("database unusable (%s): rated movies are not excluded", error)
        return None
    finally:
        engine.dispose()
