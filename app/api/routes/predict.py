"""Predicted ratings: one pair (with its explanation), many pairs row-wise, or a matrix."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Annotated

import numpy as np
import pydantic_core
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from app.api.deps import AppState, ModelDep, MovieIdPath, State, UserIdPath, serving_model
from app.api.limits import apply_caps
from app.api.routes.common import (
    JSON_BODY,
    NOT_FOUND,
    UNAVAILABLE,
    ensure_all_in_catalog,
    ensure_in_catalog,
    error,
    round_ratings,
)
from app.api.schemas import MatrixIn, MatrixOut, PairsIn, PairsOut, PredictionOut
from app.serving.batch import (
    PAIR_STRATEGIES,
    MatrixPlan,
    UserBlock,
    model_users_block,
    pair_ratings,
    user_block,
)
from app.serving.predictions import predict_one
from app.serving.serving_model import ServingModel
from app.serving.users import read_user, read_users

router = APIRouter(prefix="/predict", tags=["predictions"])

NPY_MEDIA_TYPE = "application/x-npy"
MAX_NPY_CELLS = 500_000_000
"""Largest matrix streamed as .npy (2 GB of float32); larger asks are a 413."""
BAND_CELLS = 1 << 20
"""Cells computed and sent at a time when streaming a matrix (4 MiB of float32)."""
JSON_BAND_CELLS = 1 << 16
"""Cells turned into JSON text at a time (a few MB of Python numbers)."""


Explain = Annotated[bool, Query(description="Add the biases, the dot product and the per-factor products.")]


@router.get(
    "/{user_id}/{movie_id}",
    response_model=PredictionOut,
    response_model_exclude_none=True,
    summary="Predict one rating",
    responses={
        404: error("The movie is not in the catalog."),
        422: error("An id is not a positive 64-bit integer, or explain is not a boolean."),
        **UNAVAILABLE,
    },
)
async def predict(
    user_id: UserIdPath, movie_id: MovieIdPath, request: Request, explain: Explain = False
) -> dict:
    """The user's predicted rating of the movie and how it was made (`strategy`):

    - **model**: both are in the model;
    - **fold_in**: the user rated after training; their embedding is solved from their ratings;
    - **baseline**: the user has no ratings (a new visitor): global mean + the movie's bias;
    - **user_baseline**: the movie is not in the model yet: global mean + the user's bias.
    """
    state: AppState = request.app.state.dotrec  # no dependencies: a hot route (app.api.fast_routes)
    model = serving_model(state)
    await ensure_in_catalog(state, movie_id)
    user = await read_user(model, state.reads, user_id)
    prediction = predict_one(model, user, movie_id, explain)
    state.metrics.count_predictions("predict", prediction.strategy)
    return {
        "user_id": user_id,
        "movie_id": movie_id,
        "rating": round(prediction.rating, 6),
        "model_version": model.version,
        "strategy": prediction.strategy,
        "movie_in_model": prediction.movie_in_model,
        "explain": prediction.explain,
    }


@router.post(
    "/pairs",
    response_model=PairsOut,
    summary="Predict many (user, movie) pairs",
    dependencies=[Depends(apply_caps)],
    responses={**NOT_FOUND, **JSON_BODY, 422: error("Invalid ids."), **UNAVAILABLE},
)
def pairs(body: PairsIn, state: State, model: ModelDep) -> dict:
    """Row-wise dot products for up to MAX_PAIRS (default 100,000) pairs; `ratings[i]` is what
    GET /predict gives for `pairs[i]`, with the same strategies. Any movie not in the catalog
    makes it a 404 naming it."""
    with state.heavy.turn():
        return _pairs(body, state, model)


def _pairs(body: PairsIn, state: AppState, model: ServingModel) -> dict:
    ids = np.array(body.pairs, dtype=np.int64).reshape(-1, 2)
    ensure_all_in_catalog(state, ids[:, 1])
    distinct, index = np.unique(ids[:, 0], return_inverse=True)
    states = read_users(model, state.reads, distinct.tolist())
    block = user_block(model, [states[u] for u in distinct.tolist()])
    ratings, codes = pair_ratings(model, block, index.reshape(-1), model.predictor.movies.rows(ids[:, 1]))
    for code, count in enumerate(np.bincount(codes, minlength=len(PAIR_STRATEGIES)).tolist()):
        if count:
            state.metrics.count_predictions("pairs", PAIR_STRATEGIES[code], count)
    return {
        "model_version": model.version,
        "ratings": round_ratings(ratings),
        "strategies": [PAIR_STRATEGIES[c] for c in codes.tolist()],
    }


@router.post(
    "/matrix",
    response_model=MatrixOut,
    summary="Predict a users x movies matrix",
    dependencies=[Depends(apply_caps)],
    responses={
        200: {
            "content": {NPY_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "JSON, or with `Accept: application/x-npy` a float32 .npy file of the "
            "ratings alone (rows and columns as asked; omitted lists: GET /model/ids' order).",
        },
        **NOT_FOUND,
        **JSON_BODY,
        413: error(
            "Over the JSON cap (MAX_MATRIX_CELLS, default 1,000,000 cells): ask for .npy; over the "
            ".npy cap of 500,000,000 cells; or the body over MAX_BODY_BYTES (detail says which)."
        ),
        422: error("Invalid ids."),
        **UNAVAILABLE,
    },
)
def matrix(body: MatrixIn, request: Request, state: State, model: ModelDep) -> StreamingResponse:
    """ratings[i][j] is user_ids[i]'s rating of movie_ids[j], computed as one matrix product
    and equal (to float32 rounding) to GET /predict/{user_ids[i]}/{movie_ids[j]}. Omitted
    lists mean every user / movie of the model, ascending.

    JSON is capped at MAX_MATRIX_CELLS cells; with `Accept: application/x-npy` the matrix
    streams as a float32 .npy (an ML-1M-sized 6,040 x 3,706 one in a single request). Each
    list holds at most MAX_MATRIX_IDS ids; the .npy is computed a band of rows at a time, and
    the JSON (computed whole, as float32) is written a band of rows at a time.
    """
    with state.heavy.turn():
        return _matrix(body, request, state, model)


def _matrix(body: MatrixIn, request: Request, state: AppState, model: ServingModel) -> StreamingResponse:
    predictor = model.predictor
    as_npy = NPY_MEDIA_TYPE in request.headers.get("accept", "")
    n_rows = predictor.n_users if body.user_ids is None else len(body.user_ids)
    n_cols = predictor.n_movies if body.movie_ids is None else len(body.movie_ids)
    cells = n_rows * n_cols
    cap = MAX_NPY_CELLS if as_npy else state.settings.max_matrix_cells
    if cells > cap:
        size = f"the matrix would hold {n_rows:,} x {n_cols:,} = {cells:,} cells"
        if as_npy:
            raise HTTPException(413, f"{size}, over the .npy cap of {cap:,}; ask for fewer ids")
        raise HTTPException(
            413,
            f"{size}, over the JSON cap of {cap:,} (MAX_MATRIX_CELLS); send Accept: {NPY_MEDIA_TYPE}"
            " for a float32 .npy, or ask for fewer ids",
        )
    if body.movie_ids is None:
        movie_ids = predictor.movie_ids
        movie_rows = np.arange(predictor.n_movies)
    else:
        movie_ids = np.array(body.movie_ids, dtype=np.int64)
        ensure_all_in_catalog(state, movie_ids)
        movie_rows = predictor.movies.rows(movie_ids)
    if body.user_ids is None:
        user_ids = predictor.user_ids
        block = model_users_block(model)
    else:
        user_ids = np.array(body.user_ids, dtype=np.int64)
        states = read_users(model, state.reads, np.unique(user_ids).tolist())
        block = user_block(model, [states[u] for u in user_ids.tolist()])
    plan = MatrixPlan(model, block, movie_rows)
    for strategy, count in _cell_counts(plan, block).items():
        state.metrics.count_predictions("matrix", strategy, count)
    headers = {"X-Model-Version": model.version}
    if as_npy:
        header = _npy_header((n_rows, n_cols))
        headers["Content-Length"] = str(len(header) + cells * 4)
        return StreamingResponse(_npy_stream(header, plan), media_type=NPY_MEDIA_TYPE, headers=headers)
    head = MatrixOut(
        model_version=model.version,
        user_ids=user_ids.tolist(),
        movie_ids=movie_ids.tolist(),
        ratings=[],
        user_strategies=block.strategies,
        movies_not_in_model=movie_ids[movie_rows < 0].tolist(),
    )
    return StreamingResponse(_json_stream(head, plan.full()), media_type="application/json", headers=headers)


def _json_stream(head: MatrixOut, ratings: np.ndarray) -> Iterator[bytes]:
    """`head`'s JSON with `ratings` in its (empty) ratings list, written a band of rows at a
    time: the matrix is never held whole as Python numbers, which cost ~50 bytes a cell (a
    1,000,000-cell answer took ~60 MB while it was built, its float32 matrix 4 MB)."""
    before, _, after = head.model_dump_json().partition('"ratings":[]')
    yield f'{before}"ratings":['.encode()
    step = max(1, JSON_BAND_CELLS // max(1, ratings.shape[1]))
    for start in range(0, len(ratings), step):
        # pydantic-core writes the same JSON as json.dumps, five times as fast
        rows = pydantic_core.to_json(round_ratings(ratings[start : start + step]))
        yield (b"," if start else b"") + rows[1:-1]
    yield f"]{after}".encode()


def _cell_counts(plan: MatrixPlan, block: UserBlock) -> dict[str, int]:
    kinds = np.bincount(plan.block.kinds, minlength=3)
    known, unknown = len(plan.known_cols), len(plan.unknown_cols)
    counts = {
        "model": int(kinds[0]) * known,
        "fold_in": int(kinds[1]) * known,
        "baseline": int(kinds[2]) * known,
        "user_baseline": plan.n_rows * unknown,
    }
    return {name: count for name, count in counts.items() if count}


def _npy_header(shape: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _npy_stream(header: bytes, plan: MatrixPlan) -> Iterator[bytes]:
    """The .npy bytes: the header, then bands of rows as little-endian float32 (each band is
    computed in a worker thread as the client reads the previous one)."""
    yield header
    for band in plan.bands(BAND_CELLS):
        yield band.astype("<f4", copy=False).tobytes()
