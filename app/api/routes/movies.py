"""The movie catalog: one movie, a search, adding one, and a movie's nearest neighbours."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from app.api.deps import ApiKey, K, Limit, ModelDep, MovieIdPath, Offset, SessionDep, State
from app.api.routes.common import AUTH, JSON_BODY, NOT_FOUND, UNAVAILABLE, ensure_in_catalog, error
from app.api.schemas import MovieIn, MovieOut, MoviePage, SimilarItem, SimilarOut
from app.db.repository import MovieExists, MovieRow, create_movie, get_movie, search_movies
from app.db.session import write_transaction
from app.serving.similar import similar_movies

router = APIRouter(prefix="/movies", tags=["movies"])


def _out(movie: MovieRow, request: Request) -> MovieOut:
    model = request.app.state.dotrec.store.current
    return MovieOut(
        movie_id=movie.id,
        title=movie.title,
        year=movie.year,
        genres=movie.genres,
        in_model=None if model is None else movie.id in model.predictor.movies,
    )


@router.get(
    "/{movie_id}",
    response_model=MovieOut,
    summary="One movie",
    responses={**NOT_FOUND, 422: error("The id is not a positive 64-bit integer."), **UNAVAILABLE},
)
def get_one(movie_id: MovieIdPath, request: Request, session: SessionDep) -> MovieOut:
    """The catalog entry, and whether the serving model has an embedding for it."""
    movie = get_movie(session, movie_id)
    if movie is None:
        raise HTTPException(404, f"movie {movie_id} is not in the catalog")
    return _out(movie, request)


@router.get(
    "",
    response_model=MoviePage,
    summary="Search the catalog",
    responses={422: error("A limit, offset or text out of range."), **UNAVAILABLE},
)
def search_catalog(
    request: Request,
    session: SessionDep,
    search: Annotated[
        str | None, Query(max_length=200, description="Text the title contains (any case).", examples=["toy"])
    ] = None,
    genre: Annotated[
        str | None, Query(max_length=64, description="A genre the movie has (any case).", examples=["Comedy"])
    ] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> MoviePage:
    """Movies whose title contains `search` and whose genres include `genre`, by id; any text
    is searched for literally (wildcards and quotes included)."""
    for name, text in (("search", search), ("genre", genre)):
        if text and "\x00" in text:
            raise HTTPException(
                422,
                [{"loc": ["query", name], "msg": "must not contain NUL characters", "type": "value_error"}],
            )
    page = search_movies(session, search or None, genre or None, limit, offset)
    return MoviePage(
        total=page.total, limit=limit, offset=offset, items=[_out(m, request) for m in page.items]
    )


@router.post(
    "",
    status_code=201,
    response_model=MovieOut,
    dependencies=[ApiKey],
    summary="Add a movie",
    responses={
        **AUTH,
        409: error("The catalog already has that id."),
        422: error("Invalid fields."),
        **JSON_BODY,
        **UNAVAILABLE,
    },
)
def add(body: MovieIn, request: Request, state: State, session: SessionDep) -> MovieOut:
    """Add a catalog entry. It can be rated at once; until a model is trained with it, its
    predictions are the user's baseline (strategy `user_baseline`)."""
    try:
        with write_transaction(session):
            movie = create_movie(session, body.movie_id, body.title, body.year, body.genres)
    except MovieExists as exists:
        raise HTTPException(409, f"movie {body.movie_id} already exists") from exists
    state.catalog.add(movie)
    return _out(movie, request)


@router.get(
    "/{movie_id}/similar",
    response_model=SimilarOut,
    summary="Movies like this one",
    responses={
        404: error("The movie is not in the catalog, or has no embedding in the model yet."),
        422: error("Invalid id or k."),
        **UNAVAILABLE,
    },
)
async def similar(movie_id: MovieIdPath, state: State, model: ModelDep, k: K = 10) -> SimilarOut:
    """The k nearest catalog movies by cosine similarity of the model's movie embeddings."""
    await ensure_in_catalog(state, movie_id)
    row = model.predictor.movies.row(movie_id)
    if row is None:
        raise HTTPException(
            404, f"movie {movie_id} has no embedding in model {model.version} (added after training)"
        )
    items = [
        SimilarItem(movie_id=i, title=t, similarity=round(s, 6)) for i, t, s in similar_movies(model, row, k)
    ]
    return SimilarOut(movie_id=movie_id, model_version=model.version, items=items)
