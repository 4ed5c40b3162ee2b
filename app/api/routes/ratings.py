"""Ratings: store one or a batch (all or nothing), list a user's, delete one."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from app.api.deps import ApiKey, AppState, Limit, MovieIdPath, Offset, SessionDep, State, UserIdPath
from app.api.limits import apply_caps
from app.api.routes.common import (
    AUTH,
    JSON_BODY,
    NOT_FOUND,
    UNAVAILABLE,
    error,
    movie_not_found,
    scale_errors,
)
from app.api.schemas import (
    BatchErrorOut,
    RatingBatchIn,
    RatingBatchOut,
    RatingIn,
    RatingItem,
    RatingOut,
    UserRatingsOut,
)
from app.db.rating_writes import delete_rating, stored_row, upsert_ratings
from app.db.repository import RatingRow, UnknownMovie, user_ratings
from app.db.session import write_transaction

router = APIRouter(tags=["ratings"])

RATING_ERRORS = {
    **AUTH,
    **NOT_FOUND,
    422: error("Invalid input: ids not positive 64-bit integers, a rating off the scale, etc."),
    **JSON_BODY,
    **UNAVAILABLE,
}


@router.post(
    "/ratings",
    status_code=201,
    response_model=RatingOut,
    dependencies=[ApiKey],
    summary="Store a rating",
    responses={
        200: {"model": RatingOut, "description": "It replaced the user's earlier rating of the movie."},
        201: {"description": "A new rating."},
        **RATING_ERRORS,
    },
)
async def post_rating(body: RatingIn, response: Response, request: Request) -> RatingOut:
    """Store `user_id`'s rating of `movie_id` (the user is created on their first rating).

    The movie must be in the catalog (else 404 naming it) and the rating on the configured
    scale (else 422 listing the allowed values). The answer comes once the rating is committed
    (with other clients' ratings of the same moment, in one transaction). A rating posted here
    counts at once for the user's recommendations and fold-in.
    """
    state: AppState = request.app.state.dotrec  # no dependency to solve: the hot write
    errors = scale_errors(state.settings, [(["body", "rating"], body.rating)])
    if errors:
        raise HTTPException(422, errors)
    row = stored_row(body.user_id, body.movie_id, body.rating, body.rated_at or datetime.now(UTC))
    try:
        written = await state.writer.write(row)
    except UnknownMovie as unknown:
        raise movie_not_found(unknown.movie_ids) from unknown
    except TimeoutError:
        raise HTTPException(
            503,
            f"database unavailable: the rating was not committed within {state.settings.db_timeout_s:g} s",
            {"Retry-After": "5"},
        ) from None
    if not written.created:
        response.status_code = 200
    return RatingOut(
        user_id=row.user_id,
        movie_id=row.movie_id,
        rating=row.rating,
        rated_at=row.rated_at,
        created=written.created,
    )


@router.post(
    "/ratings/batch",
    response_model=RatingBatchOut,
    dependencies=[ApiKey, Depends(apply_caps)],
    summary="Store many ratings, all or nothing",
    responses={
        **RATING_ERRORS,
        404: {
            "model": BatchErrorOut,
            "description": "Ratings of movies not in the catalog; nothing was stored.",
            "content": {
                "application/json": {
                    "example": {
                        "detail": "movie 99999 is not in the catalog; nothing was stored",
                        "errors": [
                            {"index": 1, "field": "movie_id", "message": "movie 99999 is not in the catalog"}
                        ],
                    }
                }
            },
        },
    },
)
def post_batch(body: RatingBatchIn, state: State, session: SessionDep) -> RatingBatchOut | JSONResponse:
    """Store up to MAX_BATCH_RATINGS (default 10,000) ratings in one transaction.

    Every row is checked first; with any error nothing is stored and the answer lists each bad
    row (`errors`: index, field, message). Of several ratings of one (user, movie) the last wins.
    """
    with state.heavy.turn():
        return _store_batch(body, state, session)


def _store_batch(body: RatingBatchIn, state: AppState, session: Session) -> RatingBatchOut | JSONResponse:
    errors = scale_errors(
        state.settings, [(["body", "ratings", i, "rating"], r.rating) for i, r in enumerate(body.ratings)]
    )
    if errors:
        return JSONResponse(
            {
                "detail": errors,
                "errors": [{"index": e["loc"][2], "field": "rating", "message": e["msg"]} for e in errors],
            },
            status_code=422,
        )
    now = datetime.now(UTC)
    rows = [RatingRow(r.user_id, r.movie_id, r.rating, r.rated_at or now) for r in body.ratings]
    try:
        with write_transaction(session):
            result = upsert_ratings(session, rows)
    except UnknownMovie as unknown:
        missing = set(unknown.movie_ids)
        message = movie_not_found(missing).detail
        return JSONResponse(
            {
                "detail": f"{message}; nothing was stored",
                "errors": [
                    {"index": i, "field": "movie_id", "message": f"movie {r.movie_id} is not in the catalog"}
                    for i, r in enumerate(body.ratings)
                    if r.movie_id in missing
                ],
            },
            status_code=404,
        )
    state.reads.note_own_write()
    state.store.invalidate_users({r.user_id for r in body.ratings})
    return RatingBatchOut(inserted=result.inserted, updated=result.updated)


@router.get(
    "/users/{user_id}/ratings",
    response_model=UserRatingsOut,
    summary="A user's ratings",
    responses={422: error("Invalid id, limit or offset."), **UNAVAILABLE},
)
def get_user_ratings(
    user_id: UserIdPath, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> UserRatingsOut:
    """A page of the user's ratings, newest first, and how many they have in all (a user
    never seen has none: an empty page, not an error)."""
    page = user_ratings(session, user_id, limit, offset)
    return UserRatingsOut(
        user_id=user_id,
        total=page.total,
        limit=limit,
        offset=offset,
        items=[RatingItem(movie_id=r.movie_id, rating=r.rating, rated_at=r.rated_at) for r in page.items],
    )


@router.delete(
    "/ratings/{user_id}/{movie_id}",
    status_code=204,
    dependencies=[ApiKey],
    summary="Delete a rating",
    responses={
        **AUTH,
        404: error("The user has no rating of that movie."),
        422: error("An id is not a positive 64-bit integer."),
        **UNAVAILABLE,
    },
)
def delete(user_id: UserIdPath, movie_id: MovieIdPath, state: State, session: SessionDep) -> Response:
    """Remove the user's rating of the movie; 404 when there is none."""
    with write_transaction(session):
        deleted = delete_rating(session, user_id, movie_id)
    if not deleted:
        raise HTTPException(404, f"user {user_id} has no rating of movie {movie_id}")
    state.reads.note_own_write()
    state.store.invalidate_users((user_id,))
    return Response(status_code=204)
