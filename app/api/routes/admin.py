"""Operations: load the newest model artifact without a restart."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from app.api.deps import ApiKey, State
from app.api.routes.common import AUTH
from app.api.schemas import ErrorOut, ReloadOut
from app.serving.serving_model import ModelRefused

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[ApiKey])


@router.post(
    "/reload",
    response_model=ReloadOut,
    summary="Load the newest model",
    responses={
        **AUTH,
        409: {
            "model": ErrorOut,
            "description": "The newest artifact was refused (missing, corrupt or failing its checks); "
            "the model serving before keeps serving.",
            "content": {
                "application/json": {
                    "example": {
                        "detail": "model refused: models/2025.../weights.safetensors is not a readable "
                        "safetensors file; still serving 20250101T000000000000Z-1a2b3c4d"
                    }
                }
            },
        },
    },
)
def reload(state: State) -> ReloadOut:
    """Load and check the artifact `MODELS_DIR/current` names, then swap it in.

    Requests keep being answered by the old model until the new one is fully loaded and
    checked; a bad artifact is refused and the old model stays. The movie catalog is re-read
    with it. With several workers, each worker reloads when it gets this request.
    """
    state.load_catalog_quietly()
    try:
        swap = state.store.load_newest()
    except ModelRefused as refused:
        state.metrics.reloads.labels("refused").inc()
        current = state.store.current
        serving = f"still serving {current.version}" if current is not None else "no model is serving"
        raise HTTPException(409, f"model refused: {refused}; {serving}") from refused
    state.metrics.reloads.labels("loaded" if swap.reloaded else "unchanged").inc()
    state.metrics.serving(swap.model.version)
    return ReloadOut(
        reloaded=swap.reloaded,
        version=swap.model.version,
        previous_version=swap.previous.version if swap.previous is not None else None,
        seconds=round(swap.seconds, 4),
    )
