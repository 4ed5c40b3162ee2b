"""What routes depend on: the app's state, a session per request, the serving model, the API key.

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
from urllib.parse import parse_qsl

from fastapi import Depends, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
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

CATALOG_LIMIT = 2**31 - 1
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
    # Starlette decodes header bytes as latin-1; encoding back gives the bytes the client sent,
    # compared with the key's UTF-8 bytes (so a non-ASCII key works and nothing can raise).
    sent = x_api_key.encode("latin-1")
    if not hmac.compare_digest(sent, expected.get_secret_value().encode("utf-8")):
        raise HTTPException(403, "the X-API-Key header does not match the configured API_KEY")


ApiKey = Depends(require_api_key)

_INTEGER = re.compile(r"-?[0-9]+")
INT_PARSING = "Input should be a valid integer, unable to parse string as an integer"


def _plain_integer(value: object) -> object:
    """A path or query integer written as the hot routes take it (`_parse_int`): ASCII digits,
    perhaps a minus sign. Pydantic alone also takes "1.0", "+1", " 1 " and "1_0" (which is 10)."""
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


# --- hand-parsed parameters of the hot routes ---------------------------------------------------------
#
# FastAPI's per-parameter machinery costs more than all the work of GET /predict (about 50 us for
# two ids and a flag on this FastAPI version), so the two hot routes read their parameters from
# the request themselves, with the same rules and the same 422 bodies, and document them in
# OpenAPI through `openapi_extra` (see `path_id_doc` and `query_doc`).

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _invalid(
    kind: str, loc: tuple[str, str], msg: str, value: object, **ctx: object
) -> RequestValidationError:
    error: dict = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if ctx:
        error["ctx"] = ctx
    return RequestValidationError([error])


def _parse_int(raw: str, loc: tuple[str, str], low: int, high: int, low_strict: bool) -> int:
    text = raw[1:] if raw.startswith("-") else raw
    if not (text.isascii() and text.isdigit()):
        raise _invalid("int_parsing", loc, INT_PARSING, raw)
    value = int(raw)
    if low_strict and value <= low:
        raise _invalid("greater_than", loc, f"Input should be greater than {low}", raw, gt=low)
    if not low_strict and value < low:
        raise _invalid(
            "greater_than_equal", loc, f"Input should be greater than or equal to {low}", raw, ge=low
        )
    if value > high:
        raise _invalid("less_than_equal", loc, f"Input should be less than or equal to {high}", raw, le=high)
    return value


def path_id(request: Request, name: str) -> int:
    """The path parameter `name` as an id (1 .. 2**63 - 1), else a 422 like FastAPI's."""
    return _parse_int(request.path_params[name], ("path", name), 0, MAX_ID, low_strict=True)


def _query(request: Request) -> dict[str, str]:
    """The query string's values (the last of repeated names), as Starlette decodes them,
    parsed once a request without building a QueryParams."""
    scope = request.scope
    values = scope.get("dotrec.query")
    if values is None:
        text = scope.get("query_string", b"").decode("latin-1")
        if "%" in text or "+" in text:
            values = dict(parse_qsl(text, keep_blank_values=True))
        else:
            values = dict(part.partition("=")[::2] for part in text.split("&") if part)
        scope["dotrec.query"] = values
    return values


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = _query(request).get(name)
    return default if raw is None else _parse_int(raw, ("query", name), low, high, low_strict=False)


def query_bool(request: Request, name: str, default: bool) -> bool:
    raw = _query(request).get(name)
    if raw is None:
        return default
    folded = raw.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise _invalid(
        "bool_parsing", ("query", name), "Input should be a valid boolean, unable to interpret input", raw
    )


def query_text(request: Request, name: str, max_length: int) -> str | None:
    raw = _query(request).get(name)
    if raw is not None and len(raw) > max_length:
        raise _invalid(
            "string_too_long",
            ("query", name),
            f"String should have at most {max_length} characters",
            raw[:100],
            max_length=max_length,
        )
    return raw or None


def path_id_doc(name: str, what: str, example: int) -> dict:
    """The OpenAPI description of an id path parameter."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"A {what} id: {ID_RULE}.",
        "schema": {"type": "integer", "exclusiveMinimum": 0, "maximum": MAX_ID, "title": name},
        "example": example,
    }


def query_doc(name: str, schema: dict, description: str, example: object) -> dict:
    """The OpenAPI description of an optional query parameter."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
        "example": example,
    }
