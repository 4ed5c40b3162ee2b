"""The FastAPI application: `create_app()` (uvicorn's factory, see `dotrec serve`).

Start-up (the lifespan): one engine; the schema check (an out-of-date schema refuses to start,
naming `dotrec db upgrade`; an unreachable database is logged and /ready reports it); the movie
catalog; the newest good model in MODELS_DIR (none, or only bad ones, is logged: /ready is 503
while the rating endpoints work).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.api.deps import AppState
from app.api.errors import UNAVAILABLE, RequestLimitsMiddleware, database_problem, install_error_handlers
from app.api.fastpath import FastPaths
from app.api.metrics import Metrics, MetricsMiddleware
from app.api.model_store import Catalog, ModelStore
from app.api.queries import Reads
from app.api.routes import admin, health, movies, predict, ratings, recommendations, ui
from app.config import Settings, get_settings
from app.db.schema import SchemaOutOfDate, check_schema_current
from app.db.session import make_engine, make_session_factory

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
    state = AppState(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        reads=Reads(engine, settings.db_timeout_s, settings.db_pool_size),
        catalog=catalog,
        store=store,
        metrics=metrics,
        schema_problem=schema_problem,
    )
    if schema_problem is None:
        state.load_catalog_quietly()
    if store.load_newest_good() is None:
        log.error("no model is serving (%s): /ready is 503 until POST /admin/reload loads one", store.problem)
    metrics.serving(store.current.version if store.current is not None else None)
    return state


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
        try:
            yield
        finally:
            gc.unfreeze()
            await state.reads.close()
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
    app.add_middleware(
        FastPaths,
        routers=[predict.router, recommendations.router],
        endpoints=[predict.predict, recommendations.recommendations],
    )
    app.add_middleware(RequestLimitsMiddleware, max_body_bytes=settings.max_body_bytes)
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
