"""Top-k recommendations for a user."""

from __future__ import annotations

import numpy as np
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
from app.api.model_store import PrecomputedTable, ServingModel
from app.api.routes.common import error
from app.api.schemas import RecommendationsOut
from app.api.strategies import MODEL, UserState, recommend, resolve_user

router = APIRouter(tags=["recommendations"])

MAX_K = 1000
MAX_GENRE = 64
PRECOMPUTED = "precomputed"


@router.get(
    "/recommendations/{user_id}",
    response_model=RecommendationsOut,
    summary="Recommend movies to a user",
    responses={
        422: error("Invalid id, k, exclude_rated or genre."),
        503: error("No model is loaded, or the database is unreachable."),
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
    posted a second ago already counts. **precomputed**: the list was taken from the
    RECOMMENDATIONS_TABLE made from this model by `dotrec recommend-all` (the same ranking as
    **model**; rated movies and the genre are still applied now); when those filters leave
    fewer than k, the list is scored live as above.
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
    items = None
    table = model.precomputed
    if table is not None and (exclude_rated or not table.rated_excluded):
        items = precomputed_items(model, table, user_id, k, rated, genre)
    if items is not None:
        strategy = PRECOMPUTED
    else:
        strategy, items = recommend(model, user, k, rated, genre)
    state.metrics.count_predictions("recommendations", strategy, len(items))
    body = {
        "user_id": user_id,
        "model_version": model.version,
        "strategy": strategy,
        "items": items,
    }
    return Response(to_json(body), media_type="application/json")


def precomputed_items(
    model: ServingModel,
    table: PrecomputedTable,
    user_id: int,
    k: int,
    rated: np.ndarray | None,
    genre: str | None,
) -> list[dict] | None:
    """The user's first k movies of the precomputed table that are in the catalog, of `genre`
    when given, and not `rated`, as GET /recommendations items; None when the table has no
    list for the user or fewer than k movies are left (the caller then scores live)."""
    span = table.span(user_id)
    if span is None:
        return None
    view = model.view()
    blocked = view.blocked(genre)
    if rated is not None and len(rated):
        excluded = model.excluded_mask(rated)
        blocked = excluded if blocked is None else excluded | blocked
    found = table.top(span, k, blocked)
    if found is None:
        return None
    rows, values = found
    titles = view.titles
    return [
        {"movie_id": movie_id, "title": titles[row], "predicted_rating": rating}
        for movie_id, row, rating in zip(
            model.predictor.movie_ids[rows].tolist(),
            rows.tolist(),
            np.round(values.astype(np.float64), 6).tolist(),
            strict=True,
        )
    ]
