"""Top-k recommendations for a user."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic_core import to_json

from app.api.deps import (
    AppState,
    no_model,
    path_id,
    path_id_doc,
    query_bool,
    query_doc,
    query_int,
    query_text,
)
from app.api.schemas import RecommendationsOut
from app.api.strategies import MODEL, UserState, recommend, resolve_user

router = APIRouter(tags=["recommendations"])

MAX_K = 1000
MAX_GENRE = 64


@router.get(
    "/recommendations/{user_id}",
    response_model=RecommendationsOut,
    summary="Recommend movies to a user",
    responses={
        422: {"description": "Invalid id, k, exclude_rated or genre."},
        503: {"description": "No model is loaded, or the database is unreachable."},
    },
    openapi_extra={
        "parameters": [
            path_id_doc("user_id", "user", 42),
            query_doc(
                "k", {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}, "How many.", 10
            ),
            query_doc(
                "exclude_rated",
                {"type": "boolean", "default": True},
                "Leave out the movies the user has rated (read at request time).",
                True,
            ),
            query_doc(
                "genre",
                {"type": "string", "maxLength": MAX_GENRE},
                "Only movies of this genre (any case).",
                "Comedy",
            ),
        ]
    },
)
async def recommendations(request: Request) -> Response:
    """The k catalog movies with the highest predicted ratings, best first.

    `strategy` is **model** for users in the model, **fold_in** for users who rated after
    training (their embedding is solved from their ratings at once, no retraining), and
    **popular** for users with no ratings (a new visitor is normal): the best-rated movies,
    by damped mean. The user's ratings are read from the database for every request, so one
    posted a second ago already counts.
    """
    user_id = path_id(request, "user_id")
    k = query_int(request, "k", 10, 1, MAX_K)
    exclude_rated = query_bool(request, "exclude_rated", True)
    genre = query_text(request, "genre", MAX_GENRE)
    state: AppState = request.app.state.dotrec
    model = state.store.current
    if model is None:
        raise no_model(state)
    row = model.user_index.get(user_id)
    if row is not None:
        user = UserState(user_id, MODEL, row)
        rated = await state.reads.rated_movie_ids(user_id) if exclude_rated else None
    else:
        ratings = await state.reads.user_ratings(user_id)
        user = resolve_user(model, user_id, ratings)
        rated = ratings[0] if exclude_rated else None
    strategy, items = recommend(model, user, k, rated, genre)
    state.metrics.count_predictions("recommendations", strategy, len(items))
    body = {
        "user_id": user_id,
        "model_version": model.version,
        "strategy": strategy,
        "items": items,
    }
    return Response(to_json(body), media_type="application/json")
