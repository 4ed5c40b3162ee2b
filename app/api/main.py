"""The FastAPI application: `create_app()` (uvicorn's factory, see `dotrec serve`).

Start-up (the lifespan): one engine; the schema check (an out-of-date schema refuses to start,
naming `dotrec db upgrade`; an unreachable database is logged and /ready reports it); the movie
catalog; the newest good model in MODELS_DIR (none, or only bad ones, is logged: /ready is 503
while the rating endpoints work).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.api.answers import AnswerCache
from app.api.deps import AppState
from app.api.errors import RequestLimitsMiddleware, install_error_handlers
from app.api.fast_routes import FastRoutes
from app.api.limits import HeavyWork
from app.api.metrics import Metrics, MetricsMiddleware
from app.api.routes import admin, health, movies, predict, ratings, recommendations, ui
from app.config import Settings, get_settings
from app.db.checkpoints import WalCheckpoints
from app.db.errors import UNAVAILABLE, database_problem
from app.db.group_commit import GroupWriter
from app.db.reads import Reads
from app.db.repository import RatingRow
from app.db.schema import SchemaOutOfDate, check_schema_current
from app.db.session import make_engine, make_session_factory
from app.serving.catalog import Catalog
from app.serving.rated import RatedMovies
from app.serving.store import ModelStore

log = logging.getLogger("dotrec.api")

DESCRIPTION = """
Explicit-rating recommendations from dot-product embeddings.

* **Ratings** are stored in the database (users are created on their first rating).
* **Predictions** and **recommendations** come from the newest good model artifact in
  MODELS_DIR; users who rated after training are folded in at once, new visitors get the
  popular movies.
* Writes and /admin need `X-API-Key` when API_KEY is set; reads are open.
* Every error is `{"detail": ...}` naming the problem.
* A dashboard for people (a user's recommendations, the movie map, the model) is at [/ui](/ui/).
"""

TAGS = [
    {"name": "predictions", "description": "Predicted ratings: one, pairs, matrices."},
    {"name": "recommendations", "description": "Top-k movies for a user."},
    {"name": "ratings", "description": "Store, list and delete ratings."},
    {"name": "movies", "description": "The movie catalog and similar movies."},
    {"name": "service", "description": "Health, readiness, the model, metrics."},
    {"name": "admin", "description": "Operations (X-API-Key)."},
    {"name": "ui", "description": "What the dashboard at /ui reads besides the endpoints above."},
]


def start(settings: Settings, metrics: Metrics) -> AppState:
    """Everything the lifespan sets up; raises SchemaOutOfDate to refuse to start."""
    engine = make_engine(settings.database_url, settings, serving=True)
    schema_problem: str | None = None
    try:
        check_schema_current(engine)
    except SchemaOutOfDate as error:
        engine.dispose()
        log.error("refusing to start: %s", error)
        raise
    except UNAVAILABLE as error:
        schema_problem = f"not checked yet: the database was unreachable at start ({database_problem(error)})"
        log.error("database unreachable at start: %s", database_problem(error))
    catalog = Catalog()
    store = ModelStore(
        settings.models_dir,
        catalog,
        (settings.rating_min, settings.rating_max),
        popularity_weight=settings.popularity_weight,
        recommendations_table=settings.recommendations_table,
    )
    reads = Reads(engine, settings.db_timeout_s, settings.db_pool_size)
    sessions = make_session_factory(engine)

    def committed(rows: list[RatingRow]) -> None:
        """Ratings just committed by this process: their users' fold-ins are stale at once."""
        reads.note_own_write()
        store.invalidate_users({row.user_id for row in rows})

    state = AppState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        reads=reads,
        rated=RatedMovies(reads),
        catalog=catalog,
        store=store,
        metrics=metrics,
        accepted_keys=settings.accepted_keys(),
        heavy=HeavyWork(settings.max_heavy_requests, settings.db_timeout_s),
        writer=GroupWriter(sessions, settings.db_timeout_s, committed),
        answers=AnswerCache(),
        schema_problem=schema_problem,
    )
    if not state.accepted_keys:
        log.warning(
            "API_KEY is not set: writes (ratings, movies) and /admin are open to anyone who "
            "reaches this server; set API_KEY to require X-API-Key"
        )
    if schema_problem is None:
        state.load_catalog_quietly()
    if store.load_newest_good() is None:
        log.error("no model is serving (%s): /ready is 503 until POST /admin/reload loads one", store.problem)
    metrics.serving(store.current.version if store.current is not None else None)
    return state


def element_budgets(settings: Settings) -> dict[str, tuple[int, str]]:
    """The most commas each list body may hold (RequestLimitsMiddleware): a pair is 2 (one
    inside, one after), an id 1 (user and movie ids: two lists), a rating at most 4; a few more
    for the object around them."""
    return {
        "/predict/pairs": (2 * settings.max_pairs + 8, f"{settings.max_pairs:,} pairs (MAX_PAIRS)"),
        "/predict/matrix": (
            2 * settings.max_matrix_ids + 8,
            f"{settings.max_matrix_ids:,} user ids and as many movie ids (MAX_MATRIX_IDS)",
        ),
        "/ratings/batch": (
            4 * settings.max_batch_ratings + 8,
            f"{settings.max_batch_ratings:,} ratings (MAX_BATCH_RATINGS)",
        ),
    }


async def follow_models(state: AppState) -> None:
    """Every MODEL_POLL_S: load the version MODELS_DIR/current names when it changed (off the
    event loop), so that every worker process and replica serves a new model by itself."""
    while True:
        await asyncio.sleep(state.settings.model_poll_s)
        try:
            swap = await asyncio.to_thread(state.store.follow_current)
        except Exception:  # the poll must outlive any one failure; the next tick tries again
            log.exception("checking MODELS_DIR/current failed")
            continue
        if swap is not None and swap.reloaded:
            state.metrics.reloads.labels("loaded").inc()
            state.metrics.serving(swap.model.version)
            log.info("MODELS_DIR/current moved: now serving %s", swap.model.version)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application, configured by `settings` (default: the environment)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = start(settings, metrics)
        app.state.dotrec = state
        # What start-up built lives as long as the process: keep it out of the collector's
        # full passes, which otherwise pause every request now and then to walk it.
        gc.collect()
        gc.freeze()
        await state.reads.start()
        checkpoints = WalCheckpoints(state.engine) if state.engine.dialect.name == "sqlite" else None
        if checkpoints is not None:
            checkpoints.start()
        follower = asyncio.create_task(follow_models(state)) if settings.model_poll_s > 0 else None
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
            gc.unfreeze()
            await state.writer.close()
            await state.reads.close()
            if checkpoints is not None:
                checkpoints.close()
            state.engine.dispose()

    app = FastAPI(
        title="dotrec",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_error_handlers(app)
    if settings.fast_routes:  # innermost: after the metrics, limits and CORS, like every route
        app.add_middleware(
            FastRoutes,
            routers=[predict.router, recommendations.router, ratings.router],
            endpoints=[predict.predict, recommendations.recommendations, ratings.post_rating],
        )
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        element_budgets=element_budgets(settings),
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for module in (predict, recommendations, ratings, movies, health, admin, ui):
        app.include_router(module.router)
    app.mount(ui.STATIC_PATH, ui.static_files(), name="ui-static")
    return app
