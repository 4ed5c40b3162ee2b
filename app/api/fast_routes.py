"""The hot endpoints answered ahead of FastAPI's middleware and router, when all goes well.

On this FastAPI version, its per-request machinery (exception and exit-stack middleware, the
router, solving the dependencies of every parameter) costs more than all the work of
GET /predict, of a cached GET /recommendations and of queueing a rating for POST /ratings
(BENCHMARKS.md, "REST service" and "Writes": the rows with and without this layer, measured in
the same run). `FastRoutes`, a pure ASGI middleware, matches those routes' paths (Starlette's
`Route.matches`) and runs the very endpoint function of each FastAPI route, with the very
parameter declarations (each `Path`/`Query` of its signature is a field of one pydantic model,
validated in one call; a body parameter is its pydantic model, validated from the parsed JSON as
FastAPI validates it), the route's own dependencies (those that read only the request and its
headers, such as the API key), its status code and the very response model (validated and
serialised by pydantic).

What the endpoint or a dependency raises (HTTPException, database errors) is answered by the
app's own exception handlers. A request whose parameters or body do not validate is handed, as
it came (its body replayed), to the ordinary FastAPI stack, whose 422 it gets: errors look
exactly as they do without this layer, and cost only the requests that make them. Everything
else goes down the ordinary FastAPI stack too; the FastAPI routes stay registered for OpenAPI,
and serve everything when `FAST_ROUTES` is off. Only public API: `starlette.routing.Route`, the
app's `exception_handlers`, pydantic's `create_model` and `TypeAdapter`, and APIRoute's
attributes.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, get_args, get_origin, get_type_hints
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.params import Depends, Header, Path, Query
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Any]]


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _NotFast(Exception):
    """The request's parameters or body did not validate: FastAPI's stack answers it (with
    `body`, the body already read, to replay)."""

    def __init__(self, body: bytes | None = None) -> None:
        self.body = body


class FastRoutes:
    """Pure ASGI: answer the requests of `endpoints` (GET or POST routes of `routers`) directly."""

    def __init__(self, app: ASGIApp, routers: Iterable[APIRouter], endpoints: Iterable[Endpoint]) -> None:
        self.app = app
        wanted = set(endpoints)
        self.routes = [
            (
                method,
                route.path.partition("{")[0],
                Route(route.path, route.endpoint, methods=[method]),
                FastRoute(route),
            )
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute) and route.endpoint in wanted
            for method in sorted(route.methods & {"GET", "POST"})
        ]
        if len(self.routes) != len(wanted):
            raise ValueError(
                "every fast endpoint must be the endpoint of one GET or POST route of the routers"
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            for method, prefix, matcher, route in self.routes:
                if scope["method"] != method or not path.startswith(prefix):  # before the regex
                    continue
                match, child = matcher.matches(scope)
                if match is Match.FULL:
                    scope["route"] = route.route  # the template the metrics count it under
                    request = Request({**scope, **child}, receive)
                    try:
                        response = await route.respond(request)
                    except _NotFast as refused:
                        await self.app(scope, _replay(receive, refused.body), send)
                        return
                    except Exception as error:
                        response = await _handled(request, error)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class FastRoute:
    """One APIRoute's endpoint with its parameters, dependencies, status code and response
    model, outside FastAPI."""

    def __init__(self, route: APIRoute) -> None:
        self.route = route
        self.endpoint = route.endpoint
        self.signature = _Signature(route.endpoint, f"{route.path}")
        if self.signature.headers:
            raise ValueError(f"{route.path}: header parameters only in its dependencies")
        self.dependencies = [_dependency(route.path, depends) for depends in route.dependencies]
        self.status_code = route.status_code or 200
        self.response = TypeAdapter(route.response_model)
        self.exclude_none = route.response_model_exclude_none

    async def respond(self, request: Request) -> Response:
        """In FastAPI's order: the body read and parsed, the dependencies run, the parameters
        and the body validated (a dependency runs again when FastAPI answers a 422)."""
        raw = await request.body() if self.signature.body_model is not None else None
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            raise _NotFast(raw) from None
        for dependency in self.dependencies:
            await dependency.call(**dependency.arguments(request, None, None))
        response = None
        if self.signature.response_argument is not None:
            response = Response()  # what the endpoint may set, as FastAPI's sub-response
            del response.headers["content-length"]
            response.status_code = None  # type: ignore[assignment]
        try:
            arguments = self.signature.arguments(request, response, parsed)
        except _NotFast:
            raise _NotFast(raw) from None
        result = await self.endpoint(**arguments)
        if isinstance(result, Response):  # sent as it is, as FastAPI sends it
            return result
        answer = Response(
            self.response.dump_json(self.response.validate_python(result), exclude_none=self.exclude_none),
            status_code=(response and response.status_code) or self.status_code,
            media_type="application/json",
        )
        if response is not None and response.raw_headers:
            answer.raw_headers.extend(response.raw_headers)
        return answer


class _Signature:
    """A function's parameters, as FastAPI reads them: Path, Query and Header declarations
    (validated as one pydantic model), at most one body model, the Request and the Response."""

    def __init__(self, function: Callable[..., Any], where: str) -> None:
        hints = get_type_hints(function, include_extras=True)
        fields: dict[str, Any] = {}
        self.request_argument: str | None = None
        self.response_argument: str | None = None
        self.body_argument = ""
        self.body_model: type[BaseModel] | None = None
        self.path: list[str] = []
        self.query = False
        self.headers: dict[str, str] = {}  # argument name -> header name
        for name, parameter in inspect.signature(function).parameters.items():
            hint = hints[name]
            if hint is Request:
                self.request_argument = name
                continue
            if hint is Response:
                self.response_argument = name
                continue
            if isinstance(hint, type) and issubclass(hint, BaseModel) and self.body_model is None:
                self.body_argument, self.body_model = name, hint
                continue
            info = _declaration(hint)
            if info is None:
                raise ValueError(f"{where}: parameter {name!r} is not one FastRoute knows how to read")
            if isinstance(info, Path):
                self.path.append(name)
            elif isinstance(info, Query):
                self.query = True
            else:
                self.headers[name] = name.replace("_", "-") if info.convert_underscores else name
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[name] = (hint, default)
        self.parameters = (
            create_model(f"{where}_parameters", __base__=_Parameters, **fields) if fields else None
        )

    def arguments(self, request: Request, response: Response | None, body: Any) -> dict[str, Any]:
        """The function's arguments from the request; `body` is the parsed JSON (None: no body),
        validated by the body model from Python objects as FastAPI does. _NotFast when any
        does not validate."""
        arguments: dict[str, Any] = {}
        if self.parameters is not None:
            values: dict[str, Any] = _query(request) if self.query else {}
            for name in self.path:
                values[name] = request.path_params[name]
            for name, header in self.headers.items():
                values[name] = request.headers.get(header)
            try:
                arguments.update(vars(self.parameters.model_validate(values)))
            except ValidationError:
                raise _NotFast from None
        if self.request_argument is not None:
            arguments[self.request_argument] = request
        if self.response_argument is not None:
            arguments[self.response_argument] = response
        if self.body_model is not None:
            if body is None:
                raise _NotFast
            try:
                arguments[self.body_argument] = self.body_model.model_validate(body)
            except ValidationError:
                raise _NotFast from None
        return arguments


class _Dependency(_Signature):
    def __init__(self, call: Callable[..., Awaitable[Any]], where: str) -> None:
        super().__init__(call, where)
        self.call = call


def _dependency(where: str, depends: Any) -> _Dependency:
    """A route dependency FastRoute can run: an `async def` of the Request and Header parameters."""
    call = depends.dependency if isinstance(depends, Depends) else None
    if call is None or not inspect.iscoroutinefunction(call):
        raise ValueError(f"{where}: only async def dependencies can be run by FastRoute")
    dependency = _Dependency(call, where)
    if dependency.path or dependency.query or dependency.body_model or dependency.response_argument:
        raise ValueError(f"{where}: a FastRoute dependency reads only the request and its headers")
    return dependency


def _query(request: Request) -> dict[str, str]:
    """The query string's values, the last of repeated names as Starlette takes them (parsed
    straight into a dict: a QueryParams costs more than the rest of parameter validation).
    Without escapes (no '%' or '+') the pairs are only split, as parse_qsl would split them."""
    query = request.scope["query_string"].decode("latin-1")
    if not query:
        return {}
    if "%" in query or "+" in query:
        return dict(parse_qsl(query, keep_blank_values=True))
    return {name: value for name, _, value in (part.partition("=") for part in query.split("&") if part)}


def _declaration(hint: object) -> Path | Query | Header | None:
    if get_origin(hint) is not Annotated:
        return None
    return next((meta for meta in get_args(hint)[1:] if isinstance(meta, Path | Query | Header)), None)


def _replay(receive: Receive, body: bytes | None) -> Receive:
    """`receive`, giving first `body` (what was read of it already) when there is one."""
    if body is None:
        return receive
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _handled(request: Request, error: Exception) -> Response:
    """The response the app's exception handlers (app.api.errors) give `error`: the same an
    error raised in the FastAPI route gets."""
    handlers = request.app.exception_handlers
    handler = next((handlers[kind] for kind in type(error).__mro__ if kind in handlers), None)
    if handler is None:
        raise error
    return await handler(request, error)
