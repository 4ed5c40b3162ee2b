"""Top-k recommendations for a user."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.api.answers import Answer, answer_key
from app.api.deps import AppState, Genre, K, UserIdPath, serving_model
from app.api.routes.common import error
from app.api.schemas import RecommendationsOut
from app.serving.recommendations import PRECOMPUTED, precomputed_items, recommend
from app.serving.users import model_user, resolve_user

router = APIRouter(tags=["recommendations"])

NOTHING_EXCLUDED = "nothing excluded"
"""The ratings version of a list that leaves nothing out: it depends on no rating."""

ExcludeRated = Annotated[
    bool, Query(description="Leave out the movies the user has rated (read at request time).")
]


@router.get(
    "/recommendations/{user_id}",
    response_model=RecommendationsOut,
    summary="Recommend movies to a user",
    responses={
        422: error("Invalid id, k, exclude_rated or genre."),
        503: error("No model is loaded, or the database is unreachable."),
    },
)
async def recommendations(
    user_id: UserIdPath,
    request: Request,
    k: K = 10,
    exclude_rated: ExcludeRated = True,
    genre: Genre = None,
) -> Response:
    """The k catalog movies that rank highest for the user, ordered by `score` (descending).

    A personal list ranks by the model's ranking head (learnt from who rated what; `score` is
    its dot product) and shows each movie's `predicted_rating` from the rating head; a model
    without a ranking head ranks by predicted rating plus a popularity prior (POPULARITY_WEIGHT).
    `strategy` is **model** for users in the model, **fold_in** for users who rated after
    training (their embedding is solved from their ratings at once, no retraining), and
    **popular** for users with no ratings (a new visitor is normal): the best-rated movies,
    by damped mean (their `score`). The user's ratings are read from the database for every request, so one
    posted a second ago already counts. **precomputed**: the list was taken from the
    RECOMMENDATIONS_TABLE made from this model by `dotrec recommend-all` (the same ranking as
    **model**; rated movies and the genre are still applied now); when those filters leave
    fewer than k, the list is scored live as above.
    """
    state: AppState = request.app.state.dotrec  # no dependencies: a hot route (app.api.fast_routes)
    model = serving_model(state)
    user = model_user(model, user_id)
    key: Hashable | None = None
    if user is not None:
        version = state.rated.version() if exclude_rated else NOTHING_EXCLUDED
        if version is not None:
            key = answer_key(model, user_id, k, exclude_rated, genre, version)
            if (kept := state.answers.get(key)) is not None:
                state.metrics.count_predictions("recommendations", kept.strategy, kept.items)
                return kept.response()
        rated = await state.rated.of(user_id, version) if exclude_rated else None
    else:
        ratings = await state.reads.user_ratings(user_id)
        user = resolve_user(model, user_id, ratings)
        rated = ratings[0] if exclude_rated else None
        version = None
    items = None
    table = model.precomputed
    if table is not None and (exclude_rated or not table.rated_excluded):
        items = precomputed_items(model, table, user_id, k, rated, genre)
    if items is not None:
        strategy = PRECOMPUTED
    else:
        strategy, items = recommend(model, user, k, rated, genre, version)
    state.metrics.count_predictions("recommendations", strategy, len(items))
    answer = Answer.of(
        {"user_id": user_id, "model_version": model.version, "strategy": strategy, "items": items}
    )
    if key is not None:
        state.answers.put(key, answer)
    return answer.response()
