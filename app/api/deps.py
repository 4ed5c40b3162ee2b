"""What routes depend on: the app's state, a session per request, the serving model, the API key.

Dependencies used by the hot `async def` routes are `async def` themselves: FastAPI runs a plain
`def` dependency in the thread pool, which would cost those routes a thread hop each.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Query, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.api.errors import UNAVAILABLE, database_problem
from app.api.metrics import Metrics
from app.api.model_store import Catalog, ModelStore, ServingModel
from app.api.queries import Reads
from app.api.schemas import ID_RULE, MAX_ID
from app.config import Settings
from app.db.repository import search_movies

log = logging.getLogger("dotrec.api")

CATALOG_LIMIT = 2**62
"""LIMIT of the query reading the whole catalog."""


@dataclass
class AppState:
    """Everything a request needs, made once by the app's lifespan."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    reads: Reads
    catalog: Catalog
    store: ModelStore
    metrics: Metrics
    schema_problem: str | None = None
    """Why the schema check has not passed (None once it has)."""

    def load_catalog(self) -> None:
        """Read the whole movie catalog into memory (titles and genres for recommendations)."""
        with self.sessions() as session:
            page = search_movies(session, limit=CATALOG_LIMIT)
        self.catalog.replace(page.items)

    def load_catalog_quietly(self) -> None:
        """load_catalog, logging (not raising) when the database is unreachable."""
        try:
            self.load_catalog()
        except UNAVAILABLE as error:
            log.warning("movie catalog not (re)loaded: %s", database_problem(error))


async def get_state(request: Request) -> AppState:
    return request.app.state.dotrec


State = Annotated[AppState, Depends(get_state)]


def get_session(request: Request) -> Iterator[Session]:
    """A session for one request (sync routes only); the route commits what it writes."""
    state: AppState = request.app.state.dotrec
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def no_model(state: AppState) -> HTTPException:
    return HTTPException(503, f"no model is loaded: {state.store.problem}", {"Retry-After": "5"})


async def get_model(request: Request) -> ServingModel:
    """The serving model; 503 saying why when there is none."""
    state: AppState = request.app.state.dotrec
    model = state.store.current
    if model is None:
        raise no_model(state)
    return model


ModelDep = Annotated[ServingModel, Depends(get_model)]


async def require_api_key(
    request: Request,
    x_api_key: Annotated[
        str | None, Header(description="Needed for writes and /admin when API_KEY is set.")
    ] = None,
) -> None:
    """401 without X-API-Key, 403 with a wrong one, when API_KEY is set; compared in constant time."""
    expected = request.app.state.dotrec.settings.api_key
    if expected is None:
        return
    if not x_api_key:
        raise HTTPException(
            401, "this endpoint needs the X-API-Key header", {"WWW-Authenticate": "X-API-Key"}
        )
    if not hmac.compare_digest(x_api_key.encode("utf-8"), expected.get_secret_value().encode("utf-8")):
        raise HTTPException(403, "the X-API-Key header does not match the configured API_KEY")


ApiKey = Depends(require_api_key)

UserIdPath = Annotated[int, Path(gt=0, le=MAX_ID, description=f"A user id: {ID_RULE}.", examples=[42])]
MovieIdPath = Annotated[int, Path(gt=0, le=MAX_ID, description=f"A movie id: {ID_RULE}.", examples=[1])]
K = Annotated[int, Query(ge=1, le=1000, description="How many items, 1 to 1,000.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1 to 1,000.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip.")]
