"""The hot GET endpoints answered ahead of FastAPI's middleware and router, when all goes well.

On this FastAPI version, its per-request machinery (exception and exit-stack middleware, the
router, solving the dependencies of every parameter) costs more than all the work of
GET /predict and of a cached GET /recommendations (BENCHMARKS.md, "REST service": the rows with
and without this layer, measured in the same run). `FastRoutes`, a pure ASGI middleware, matches
those routes' paths (Starlette's `Route.matches`) and runs the very endpoint function of each
FastAPI route, with the very parameter declarations (each `Path`/`Query` of its signature is a
field of one pydantic model, validated in one call) and the very response model (validated and
serialised by pydantic). What they raise (RequestValidationError located as FastAPI locates
it, HTTPException, database errors) is answered by the app's own exception handlers, so errors
look exactly as they do without this layer. Everything else goes down the ordinary FastAPI
stack; the FastAPI routes stay registered for OpenAPI, and serve everything when `FAST_ROUTES`
is off. Only public API: `starlette.routing.Route`, the app's `exception_handlers`, pydantic's
`create_model` and `TypeAdapter`, and APIRoute's attributes.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, get_args, get_origin, get_type_hints
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.params import Path, Query
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Any]]


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FastRoutes:
    """Pure ASGI: answer GET requests of `endpoints` (GET routes of `routers`) directly."""

    def __init__(self, app: ASGIApp, routers: Iterable[APIRouter], endpoints: Iterable[Endpoint]) -> None:
        self.app = app
        wanted = set(endpoints)
        self.routes = [
            (
                route.path.partition("{")[0],
                Route(route.path, route.endpoint, methods=["GET"]),
                FastRoute(route),
            )
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute) and route.endpoint in wanted and "GET" in route.methods
        ]
        if len(self.routes) != len(wanted):
            raise ValueError("every fast endpoint must be the endpoint of a GET route of the routers")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            for prefix, matcher, route in self.routes:
                if not path.startswith(prefix):  # a string test, before the regular expression
                    continue
                match, child = matcher.matches(scope)
                if match is Match.FULL:
                    scope["route"] = route.route  # the template the metrics count it under
                    request = Request({**scope, **child}, receive)
                    try:
                        response = await route.respond(request)
                    except Exception as error:
                        response = await _handled(request, error)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class FastRoute:
    """One APIRoute's endpoint with its parameters and response model, outside FastAPI."""

    def __init__(self, route: APIRoute) -> None:
        self.route = route
        self.endpoint = route.endpoint
        hints = get_type_hints(route.endpoint, include_extras=True)
        fields: dict[str, Any] = {}
        self.request_argument: str | None = None
        self.sources: dict[str, str] = {}
        for name, parameter in inspect.signature(route.endpoint).parameters.items():
            hint = hints[name]
            if hint is Request:
                self.request_argument = name
                continue
            info = _path_or_query(hint)
            if info is None:
                raise ValueError(
                    f"{route.path}: parameter {name!r} is neither a Path, a Query nor the Request"
                )
            self.sources[name] = "path" if isinstance(info, Path) else "query"
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[name] = (hint, default)
        self.parameters = create_model(f"{route.name}_parameters", __base__=_Parameters, **fields)
        self.response = TypeAdapter(route.response_model)
        self.exclude_none = route.response_model_exclude_none

    async def respond(self, request: Request) -> Response:
        try:
            parameters = self.parameters.model_validate({**_query(request), **request.path_params})
        except ValidationError as error:  # located as FastAPI locates them: ("path" | "query", name)
            raise RequestValidationError(
                [{**e, "loc": (self.sources[str(e["loc"][0])], *e["loc"])} for e in error.errors()]
            ) from None
        arguments = dict(vars(parameters))
        if self.request_argument is not None:
            arguments[self.request_argument] = request
        content = self.response.validate_python(await self.endpoint(**arguments))
        body = self.response.dump_json(content, exclude_none=self.exclude_none)
        return Response(body, media_type="application/json")


def _query(request: Request) -> dict[str, str]:
    """The query string's values, the last of repeated names as Starlette takes them (parsed
    straight into a dict: a QueryParams costs more than the rest of parameter validation)."""
    return dict(parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True))


def _path_or_query(hint: object) -> Path | Query | None:
    if get_origin(hint) is not Annotated:
        return None
    return next((meta for meta in get_args(hint)[1:] if isinstance(meta, Path | Query)), None)


async def _handled(request: Request, error: Exception) -> Response:
    """The response the app's exception handlers (app.api.errors) give `error`: the same an
    error raised in the FastAPI route gets."""
    handlers = request.app.exception_handlers
    handler = next((handlers[kind] for kind in type(error).__mro__ if kind in handlers), None)
    if handler is None:
        raise error
    return await handler(request, error)
