"""Liveness, readiness, the model's description, Prometheus metrics."""

from __future__ import annotations

from pathlib import PurePath

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import ModelDep, State
from app.api.routes.common import error
from app.api.schemas import HealthOut, ModelIdsOut, ModelOut, NotReadyOut, PrecomputedOut, ReadyOut
from app.db.errors import UNAVAILABLE, database_problem
from app.db.schema import SchemaOutOfDate, check_schema_current

router = APIRouter(tags=["service"])


@router.get("/health", response_model=HealthOut, summary="The process is alive")
async def health(state: State) -> HealthOut:
    """Always 200 while the process answers; says nothing about the database or the model, and
    whether writes need an API key (`auth`)."""
    return HealthOut(auth="on" if state.accepted_keys else "off")


@router.get(
    "/ready",
    response_model=ReadyOut,
    summary="Ready to serve predictions",
    responses={
        503: {
            "model": NotReadyOut,
            "description": "Not ready: the database is unreachable, its schema is out of date, "
            "or no model is loaded; `detail` and `checks` say which.",
            "content": {
                "application/json": {
                    "example": {
                        "detail": "not ready: model: no model artifact in models",
                        "checks": {"database": "ok", "schema": "ok", "model": "no model artifact in models"},
                    }
                }
            },
        }
    },
)
def ready(state: State) -> ReadyOut | JSONResponse:
    """200 when the database answers, its schema is current and a model is loaded."""
    checks: dict[str, str] = {}
    problems: list[str] = []
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
        if state.schema_problem is not None:
            try:
                check_schema_current(state.engine)
                state.schema_problem = None
            except SchemaOutOfDate as error:
                state.schema_problem = str(error)
        if state.schema_problem is None and not state.catalog.loaded:
            state.load_catalog()
    except UNAVAILABLE as error:
        checks["database"] = f"unreachable: {database_problem(error)}"
        problems.append(f"database: {checks['database']}")
    if "database" in checks and checks["database"] == "ok":
        checks["schema"] = state.schema_problem or "ok"
        if state.schema_problem:
            problems.append(f"schema: {state.schema_problem}")
    model = state.store.current
    checks["model"] = model.version if model is not None else str(state.store.problem)
    if model is None:
        problems.append(f"model: {state.store.problem}")
    if problems:
        return JSONResponse(
            {"detail": "not ready: " + "; ".join(problems), "checks": checks},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    assert model is not None
    return ReadyOut(model_version=model.version, checks=checks)


@router.get(
    "/model",
    response_model=ModelOut,
    summary="The serving model",
    responses={503: error("No model is loaded.")},
)
async def model_info(model: ModelDep) -> ModelOut:
    """Version, creation time, validation metrics, sizes and hyper-parameters of the model, and
    the precomputed recommendations table when one is loaded."""
    predictor = model.predictor
    meta = predictor.meta
    return ModelOut(
        version=model.version,
        created_at=meta.get("created_at"),
        loaded_at=model.loaded_at,
        path=model.path.name,
        n_users=predictor.n_users,
        n_movies=predictor.n_movies,
        n_factors=int(meta["n_factors"]),
        n_ratings=meta.get("n_ratings"),
        global_mean=predictor.global_mean,
        y_range=list(predictor.y_range),
        rating_scale={k: float(v) for k, v in meta.get("rating_scale", {}).items()},
        metrics=meta.get("metrics", {}),
        hyper_parameters=meta.get("hyper_parameters", {}),
        data_source=public_source(meta.get("data_source")),
        data_fingerprint=meta.get("data_fingerprint", {}),
        fold_in_cache_size=len(model.fold_cache),
        objective=meta.get("objective"),
        ranking_head=meta.get("ranking_head"),
        recommendations_table=None
        if (table := model.precomputed) is None
        else PrecomputedOut(
            path=table.path.name,
            created_at=table.created_at,
            users=table.users,
            k=table.k,
            rated_excluded=table.rated_excluded,
        ),
    )


def public_source(source: object) -> str | None:
    """What a model learnt from, as anyone may see it: no database URL (older versions stored
    one, credentials and all) and no folder of the server."""
    if not isinstance(source, str):
        return None
    if source.startswith("database"):
        kind = source.split("://", 1)[0].removeprefix("database").strip(" (")
        return f"database ({kind.split('+', 1)[0].rstrip(')')})" if kind else "database"
    return PurePath(source).name or source


@router.get(
    "/model/ids",
    response_model=ModelIdsOut,
    summary="The users and movies of the model",
    responses={503: error("No model is loaded.")},
)
def model_ids(model: ModelDep) -> ModelIdsOut:
    """The rows and columns of POST /predict/matrix when its lists are omitted, in that order."""
    return ModelIdsOut(
        version=model.version,
        user_ids=model.predictor.user_ids.tolist(),
        movie_ids=model.predictor.movie_ids.tolist(),
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {
                "text/plain": {"schema": {"type": "string"}, "example": "dotrec_http_requests_total{...} 1.0"}
            },
            "description": "The Prometheus text exposition format.",
        }
    },
)
async def metrics(state: State) -> Response:
    """Requests and latencies per route template, the model version, predictions served."""
    body, content_type = state.metrics.exposition()
    return Response(body, media_type=content_type)
