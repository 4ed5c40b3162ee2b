"""What routes depend on: the app's state, a session per request, the serving model, the API key,
and the path and query parameters they share (FastAPI's own validation, strict integers).

Dependencies used by the hot `async def` routes are `async def` themselves: FastAPI runs a plain
`def` dependency in the thread pool, which would cost those routes a thread hop each.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Query, Request
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.api.answers import AnswerCache
from app.api.limits import HeavyWork
from app.api.metrics import Metrics
from app.api.schemas import ID_RULE, MAX_ID
from app.config import Settings
from app.db.errors import UNAVAILABLE, database_problem
from app.db.group_commit import GroupWriter
from app.db.reads import Reads
from app.db.repository import search_movies
from app.serving.catalog import Catalog
from app.serving.rated import RatedMovies
from app.serving.serving_model import ServingModel
from app.serving.store import ModelStore

log = logging.getLogger("dotrec.api")

CATALOG_LIMIT = 2**31 - 1
"""LIMIT of the query reading the whole catalog."""


@dataclass
class AppState:
    """Everything a request needs, made once by the app's lifespan."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    reads: Reads
    rated: RatedMovies
    catalog: Catalog
    store: ModelStore
    metrics: Metrics
    accepted_keys: list[bytes]
    """The API keys a write may carry (empty: auth is off)."""
    heavy: HeavyWork
    writer: GroupWriter
    """Single ratings, committed in groups (app.db.group_commit)."""
    answers: AnswerCache
    """Finished GET /recommendations answers of model users (app.api.answers)."""
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


def serving_model(state: AppState) -> ServingModel:
    """The serving model; 503 saying why when there is none."""
    model = state.store.current
    if model is None:
        raise no_model(state)
    return model


async def get_model(request: Request) -> ServingModel:
    return serving_model(request.app.state.dotrec)


ModelDep = Annotated[ServingModel, Depends(get_model)]


async def require_api_key(
    request: Request,
    x_api_key: Annotated[
        str | None, Header(description="Needed for writes and /admin when API_KEY is set.")
    ] = None,
) -> None:
    """401 without X-API-Key, 403 with a wrong one, when API_KEY (or API_KEYS) is set; each key
    is compared, in constant time, so how long it takes says nothing of which came close."""
    accepted = request.app.state.dotrec.accepted_keys
    if not accepted:
        return
    if not x_api_key:
        raise HTTPException(
            401, "this endpoint needs the X-API-Key header", {"WWW-Authenticate": "X-API-Key"}
        )
    # Starlette decodes header bytes as latin-1; encoding back gives the bytes the client sent,
    # compared with the key's UTF-8 bytes (so a non-ASCII key works and nothing can raise).
    sent = x_api_key.encode("latin-1")
    matches = [hmac.compare_digest(sent, key) for key in accepted]  # every key, no early exit
    if not any(matches):
        raise HTTPException(403, "the X-API-Key header does not match the configured API_KEY")


ApiKey = Depends(require_api_key)

# --- parameters -------------------------------------------------------------------------------------

_INTEGER = re.compile(r"-?[0-9]+")
INT_PARSING = "Input should be a valid integer, unable to parse string as an integer"


def _plain_integer(value: object) -> object:
    """A path or query integer written plainly: ASCII digits, perhaps a minus sign. Pydantic
    alone also takes "1.0", "+1", " 1 " and "1_0" (which is 10)."""
    if isinstance(value, str) and not _INTEGER.fullmatch(value):
        raise PydanticCustomError("int_parsing", INT_PARSING)
    return value


PLAIN_INTEGER = BeforeValidator(_plain_integer)
"""After the Path or Query (before it, OpenAPI would show the bounds as pydantic's gt/le)."""

UserIdPath = Annotated[
    int, Path(gt=0, le=MAX_ID, description=f"A user id: {ID_RULE}.", examples=[42]), PLAIN_INTEGER
]
MovieIdPath = Annotated[
    int, Path(gt=0, le=MAX_ID, description=f"A movie id: {ID_RULE}.", examples=[1]), PLAIN_INTEGER
]
K = Annotated[int, Query(ge=1, le=1000, description="How many items, 1 to 1,000."), PLAIN_INTEGER]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1 to 1,000."), PLAIN_INTEGER]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip."), PLAIN_INTEGER]
GENRE_MAX_LENGTH = 64
Genre = Annotated[
    str | None,
    Query(
        max_length=GENRE_MAX_LENGTH, description="Only movies of this genre (any case).", examples=["Comedy"]
    ),
]
