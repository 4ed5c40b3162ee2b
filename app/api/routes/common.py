"""Helpers shared by the routes: catalog checks, scale checks, error bodies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from fastapi import HTTPException

from app.api.deps import AppState
from app.api.schemas import ErrorOut
from app.config import Settings
from app.db.repository import movies_exist

SHOWN_IDS = 20


def error(description: str, **extra: Any) -> dict[str, Any]:
    """An error response as OpenAPI documents it: `description` and the body every error has."""
    return {"model": ErrorOut, "description": description, **extra}


#: the error responses documented on every route that can give them
NOT_FOUND = {404: error("A user's rating or a movie that does not exist (named in detail).")}
UNAVAILABLE = {503: error("The database is unreachable or no model is loaded (detail says which).")}
AUTH = {
    401: error("API_KEY is set and the X-API-Key header is missing."),
    403: error("API_KEY is set and X-API-Key does not match it."),
}
JSON_BODY = {
    413: error("Over a size cap (named in detail): the body over MAX_BODY_BYTES, or a list over its cap."),
    415: error("The body is not JSON: Content-Type must be application/json."),
}
"""What any route reading a JSON body can answer before the body is parsed (RequestLimitsMiddleware)."""


def round_ratings(values: np.ndarray) -> list:
    """Ratings as JSON numbers with 6 decimals (about float32's precision), nested as given."""
    return np.round(values.astype(np.float64), 6).tolist()


def id_list(ids: Iterable[int]) -> str:
    ids = sorted(ids)
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def movie_not_found(movie_ids: Iterable[int]) -> HTTPException:
    ids = list(movie_ids)
    noun = "movie" if len(ids) == 1 else "movies"
    verb = "is" if len(ids) == 1 else "are"
    return HTTPException(404, f"{noun} {id_list(ids)} {verb} not in the catalog")


async def ensure_in_catalog(state: AppState, movie_id: int) -> None:
    """404 naming `movie_id` unless the catalog has it (memory first, then the database)."""
    if movie_id in state.catalog.entries:
        return
    movie = await state.reads.movie(movie_id)
    if movie is None:
        raise movie_not_found([movie_id])
    state.catalog.add(movie)


def ensure_all_in_catalog(state: AppState, movie_ids: np.ndarray) -> None:
    """Sync: 404 naming every one of `movie_ids` the catalog lacks."""
    entries = state.catalog.entries
    unseen = [m for m in np.unique(movie_ids).tolist() if m not in entries]
    if not unseen:
        return
    with state.sessions() as session:
        found = movies_exist(session, unseen)
    missing = set(unseen) - found
    if missing:
        raise movie_not_found(missing)


def scale_errors(settings: Settings, ratings: Iterable[tuple[list[Any], float]]) -> list[dict]:
    """A 422 error entry for every rating off the configured scale."""
    allowed = None
    errors = []
    for loc, value in ratings:
        if settings.is_on_scale(value):
            continue
        allowed = allowed or ", ".join(f"{v:g}" for v in settings.allowed_ratings())
        errors.append(
            {
                "loc": loc,
                "msg": f"rating {value:.15g} is not on the scale; the allowed values are {allowed}",
                "type": "rating_off_scale",
                "input": value,
            }
        )
    return errors
