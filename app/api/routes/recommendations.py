"""Top-k recommendations for a user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.api.deps import AppState, K, UserIdPath, no_model
from app.api.schemas import RecommendationItem, RecommendationsOut
from app.api.strategies import MODEL, UserState, recommend, resolve_user

router = APIRouter(tags=["recommendations"])


@router.get(
    "/recommendations/{user_id}",
    response_model=RecommendationsOut,
    summary="Recommend movies to a user",
    responses={
        422: {"description": "Invalid id, k or genre."},
        503: {"description": "No model is loaded, or the database is unreachable."},
    },
)
async def recommendations(
    request: Request,
    user_id: UserIdPath,
    k: K = 10,
    exclude_rated: Annotated[
        bool, Query(description="Leave out the movies the user has rated (read at request time).")
    ] = True,
    genre: Annotated[
        str | None,
        Query(max_length=64, description="Only movies of this genre (any case).", examples=["Comedy"]),
    ] = None,
) -> RecommendationsOut:
    """The k catalog movies with the highest predicted ratings, best first.

    `strategy` is **model** for users in the model, **fold_in** for users who rated after
    training (their embedding is solved from their ratings at once, no retraining), and
    **popular** for users with no ratings (a new visitor is normal): the best-rated movies,
    by damped mean. The user's ratings are read from the database for every request, so one
    posted a second ago already counts.
    """
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
    strategy, items = recommend(model, user, k, rated, genre or None)
    state.metrics.count_predictions("recommendations", strategy, len(items))
    return RecommendationsOut(
        user_id=user_id,
        model_version=model.version,
        strategy=strategy,
        items=[
            RecommendationItem(
                movie_id=i.movie_id, title=i.title, predicted_rating=round(i.predicted_rating, 6)
            )
            for i in items
        ],
    )
