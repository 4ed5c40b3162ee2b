"""The dashboard at /ui: HTML pages (Jinja2 shells whose scripts read the JSON API) and the few JSON
reads the public API lacks: whether writes need a key, a movie's rating count and mean, the movie
map's coordinates, and the training curves.

Everything the pages show comes through HTTP, the same API clients use; these routes read through the
serving model and the repository layer like every other route (no second path to the database).
Static files (scripts, styles, the vendored chart library) are served from `app/ui/static` under
/ui/static (`static_files`, mounted by `app.api.main`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from pydantic_core import to_json

from app.api.deps import ModelDep, MovieIdPath, SessionDep, State, UserIdPath
from app.api.routes.common import error
from app.db.repository import RatingStats, get_movie, movie_rating_stats
from app.ui.movie_map import MapCache

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
STATIC_DIR = UI_DIR / "static"
TEMPLATES_DIR = UI_DIR / "templates"
STATIC_PATH = "/ui/static"

STATS_TTL_S = 5.0
"""How long the per-movie rating counts and means are reused before they are read again: one
GROUP BY over every rating (about 0.1 s for ML-100K on SQLite), shared by every movie page."""

router = APIRouter(tags=["ui"])
templates = Jinja2Templates(directory=TEMPLATES_DIR)


class UiStaticFiles(StaticFiles):
    """StaticFiles whose answers say `Cache-Control: no-cache`: browsers keep the files but ask
    each time whether they changed (a 304 when not, by the ETag), so an upgraded service never runs
    yesterday's scripts, and an unchanged one costs a few hundred bytes a file."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def static_files() -> StaticFiles:
    """The app mounts this at STATIC_PATH (name "ui-static")."""
    return UiStaticFiles(directory=STATIC_DIR)


# --- per-app caches -----------------------------------------------------------------------------------


@dataclass
class _Caches:
    maps: MapCache = field(default_factory=MapCache)
    map_body: tuple[tuple[str, int], bytes] | None = None
    """(model version, catalog revision) -> the JSON of GET /ui/map.json."""
    genres: tuple[int, list[str]] | None = None
    """catalog revision -> its sorted distinct genres."""
    stats: tuple[float, datetime, RatingStats] | None = None
    """(monotonic time read, wall time read, the stats)."""
    stats_lock: threading.Lock = field(default_factory=threading.Lock)


_CACHES_LOCK = threading.Lock()


# --- JSON ---------------------------------------------------------------------------------------------


class RatingScaleOut(BaseModel):
    min: float
    max: float
    step: float


class UiConfigOut(BaseModel):
    auth: Literal["on", "off"] = Field(
        description="on: POST/DELETE need the X-API-Key header (API_KEY is set); off: they do not."
    )
    rating_scale: RatingScaleOut = Field(description="The scale POST /ratings accepts (RATING_MIN/MAX/STEP).")
    allowed_ratings: list[float] = Field(description="Every value on that scale, ascending.")
    genres: list[str] = Field(description="The catalog's distinct genres, sorted.")
    model_version: str | None = Field(description="The serving model (null: none is loaded).")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "auth": "on",
                    "rating_scale": {"min": 0.5, "max": 5.0, "step": 0.5},
                    "allowed_ratings": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0],
                    "genres": ["Action", "Comedy", "Drama"],
                    "model_version": "20250101T000000000000Z-1a2b3c4d",
                }
            ]
        }
    }


class MovieStatsOut(BaseModel):
    movie_id: int
    ratings: int = Field(description="How many ratings the movie has.")
    mean_rating: float | None = Field(description="Their mean (null: no ratings).")
    as_of: datetime = Field(description=f"When the counts were read (reused up to {STATS_TTL_S:g} s).")


class MapOut(BaseModel):
    """Columns: the i-th movie is movie_ids[i] at (x[i], y[i]), titled titles[i]."""

    model_version: str
    explained_variance: list[float] = Field(
        description="Share of the embeddings' variance along PC 1 and PC 2 (0 to 1)."
    )
    movie_ids: list[int] = Field(description="Every movie of the model, in its embedding-row order.")
    x: list[float] = Field(description="First principal component.")
    y: list[float] = Field(description="Second principal component.")
    titles: list[str | None] = Field(description="Catalog titles (null: not in the catalog).")


class EpochOut(BaseModel):
    epoch: int
    train_loss: float = Field(description="Mean training loss (squared error plus weight decay).")
    train_rmse: float = Field(description="sqrt(train_loss), on the same scale as val_rmse.")
    val_rmse: float | None = Field(description="Validation RMSE (null: nothing was held out).")
    seconds: float


class HistoryOut(BaseModel):
    model_version: str
    best_epoch: int | None = Field(description="The epoch whose weights were kept (early stopping).")
    epochs: list[EpochOut]


@router.get(
    "/ui/config.json",
    response_model=UiConfigOut,
    summary="What the dashboard needs to know",
)
async def ui_config(request: Request, state: State) -> UiConfigOut:
    """Whether writes need `X-API-Key` (never the key itself), the rating scale, the catalog's
    genres and the serving model's version."""
    settings = state.settings
    model = state.store.current
    return UiConfigOut(
        auth="on" if state.accepted_keys else "off",
        rating_scale=RatingScaleOut(
            min=settings.rating_min, max=settings.rating_max, step=settings.rating_step
        ),
        allowed_ratings=settings.allowed_ratings(),
        genres=_genres(state, _caches(request)),
        model_version=model.version if model is not None else None,
    )


def _caches(request: Request) -> _Caches:
    """The caches of this app, kept in its `app.state` (made on first use)."""
    app_state = request.app.state
    caches = getattr(app_state, "dotrec_ui", None)
    if caches is None:
        with _CACHES_LOCK:
            caches = getattr(app_state, "dotrec_ui", None)
            if caches is None:
                caches = _Caches()
                app_state.dotrec_ui = caches
    return caches


def _genres(state: Any, caches: _Caches) -> list[str]:
    catalog = state.catalog
    revision = catalog.revision
    cached = caches.genres
    if cached is not None and cached[0] == revision:
        return cached[1]
    found: set[str] = set()
    for entry in list(catalog.entries.values()):
        found.update(entry.genres)
    genres = sorted(found, key=str.casefold)
    caches.genres = (revision, genres)
    return genres


@router.get(
    "/ui/movies/{movie_id}/stats.json",
    response_model=MovieStatsOut,
    summary="A movie's rating count and mean",
    responses={
        404: error("The movie is not in the catalog."),
        422: error("The id is not a positive 64-bit integer."),
        503: error("The database is unreachable."),
    },
)
def movie_stats(movie_id: MovieIdPath, request: Request, session: SessionDep) -> MovieStatsOut:
    """How many ratings the movie has and their mean, from the counts of every rated movie
    (`movie_rating_stats`), which are read at most every few seconds and shared."""
    if get_movie(session, movie_id) is None:
        raise HTTPException(404, f"movie {movie_id} is not in the catalog")
    caches = _caches(request)
    with caches.stats_lock:
        cached = caches.stats
        if cached is None or time.monotonic() - cached[0] > STATS_TTL_S:
            cached = (time.monotonic(), datetime.now(UTC), movie_rating_stats(session))
            caches.stats = cached
    _, read_at, stats = cached
    at = int(np.searchsorted(stats.movie_ids, movie_id))
    if at < len(stats.movie_ids) and stats.movie_ids[at] == movie_id:
        count, mean = int(stats.counts[at]), round(float(stats.means[at]), 4)
    else:
        count, mean = 0, None
    return MovieStatsOut(movie_id=movie_id, ratings=count, mean_rating=mean, as_of=read_at)


@router.get("/ui/map.json", response_model=MapOut, summary="The movie map's coordinates")
def movie_map_json(request: Request, model: ModelDep) -> Response:
    """Every movie of the serving model on the first two principal components of the movie
    embeddings (as `movie_map.png`), with its title. Computed once per model version; the
    answer carries an ETag, so a browser that has it gets a 304."""
    caches = _caches(request)
    view = model.view()
    key = (model.version, view.revision)
    etag = f'"{model.version}.{view.revision}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
    cached = caches.map_body
    if cached is None or cached[0] != key:
        # the rating head's embeddings, as movie_map.png; a rating head of biases alone
        # (--objective ranking) has none, and the ranking head's factors stand in
        embeddings = model.predictor.movie_emb
        points = caches.maps.get(
            model.version, embeddings if embeddings.shape[1] >= 2 else model.neighbour_vectors
        )
        body = to_json(
            {
                "model_version": model.version,
                "explained_variance": [round(v, 6) for v in points.explained_variance],
                "movie_ids": model.movie_id_list,
                "x": np.round(points.x, 5).tolist(),
                "y": np.round(points.y, 5).tolist(),
                "titles": view.titles,
            }
        )
        cached = (key, body)
        caches.map_body = cached
    return Response(
        cached[1], media_type="application/json", headers={"ETag": etag, "Cache-Control": "no-cache"}
    )


@router.get(
    "/ui/model/history.json",
    response_model=HistoryOut,
    summary="The serving model's training curves",
    responses={503: error("No model is loaded.")},
)
async def model_history(model: ModelDep) -> HistoryOut:
    """Training loss and validation RMSE per epoch, from the artifact's meta.json."""
    meta = model.predictor.meta
    epochs = []
    for entry in meta.get("history", []):
        loss = float(entry.get("train_loss", math.nan))
        val = entry.get("val_rmse")
        epochs.append(
            EpochOut(
                epoch=int(entry["epoch"]),
                train_loss=loss,
                train_rmse=math.sqrt(loss) if loss >= 0 else math.nan,
                val_rmse=None if val is None else float(val),
                seconds=float(entry.get("seconds", 0.0)),
            )
        )
    best = meta.get("best_epoch")
    return HistoryOut(
        model_version=model.version, best_epoch=None if best is None else int(best), epochs=epochs
    )


# --- pages --------------------------------------------------------------------------------------------


def _page(request: Request, template: str, title: str, **context: Any) -> HTMLResponse:
    """`template` (its name less .html is the page's name, for the navigation) with the URL prefixes."""
    root = request.scope.get("root_path", "").rstrip("/")
    context = {"root": root, "static": root + STATIC_PATH, "title": title, "page": template[:-5], **context}
    return templates.TemplateResponse(request, template, context)


def _user_param(raw: str | None) -> int | None:
    """`?user=` as a user id, None when absent or not one."""
    if raw is None or not raw.strip().isascii() or not raw.strip().isdigit():
        return None
    value = int(raw.strip())
    return value if 0 < value < 2**63 else None


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
@router.get("/ui/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request) -> HTMLResponse:
    """The start page (find a user or a movie); `?user=ID` is that user's page."""
    raw = request.query_params.get("user")
    user_id = _user_param(raw)
    if user_id is not None:
        return _page(request, "user.html", f"User {user_id}", user_id=user_id)
    problem = None if raw in (None, "") else f"{raw[:40]!r} is not a user id (a positive whole number)"
    return _page(request, "index.html", "dotrec", problem=problem)


@router.get("/ui/users/{user_id}", response_class=HTMLResponse, include_in_schema=False)
def user_page(request: Request, user_id: UserIdPath) -> HTMLResponse:
    return _page(request, "user.html", f"User {user_id}", user_id=user_id)


@router.get("/ui/movies/{movie_id}", response_class=HTMLResponse, include_in_schema=False)
def movie_page(request: Request, movie_id: MovieIdPath) -> HTMLResponse:
    return _page(request, "movie.html", f"Movie {movie_id}", movie_id=movie_id)


@router.get("/ui/map", response_class=HTMLResponse, include_in_schema=False)
def map_page(request: Request) -> HTMLResponse:
    """The movie map; `?user=ID` highlights that user's rated and recommended movies,
    `?movie=ID` one movie, `?q=TEXT` the titles containing TEXT."""
    user_id = _user_param(request.query_params.get("user"))
    return _page(request, "map.html", "Movie map", user_id=user_id, query=request.query_params.get("q", ""))


@router.get("/ui/model", response_class=HTMLResponse, include_in_schema=False)
def model_page(request: Request) -> HTMLResponse:
    return _page(request, "model.html", "The model")
