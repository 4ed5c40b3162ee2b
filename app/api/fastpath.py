"""A direct route to the two hot endpoints, GET /predict/{user_id}/{movie_id} and
GET /recommendations/{user_id}.

FastAPI's router and request machinery cost about as much as all the work of these endpoints
(on this FastAPI version: routers matched one by one, dependencies solved, exit stacks entered,
even for an endpoint whose only parameter is the request). This pure-ASGI layer matches their
path templates first and calls the very same endpoint functions, which parse and validate
their own parameters; errors get the responses of the app's installed handlers
(errors.error_to_response). Every other request, and any other method on those paths, goes
through FastAPI as usual; the routes stay registered there, so OpenAPI documents them and the
metrics see the same route templates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_to_response

Endpoint = Callable[[Request], Awaitable[Response]]


class FastPaths:
    """Pure ASGI: serve GET requests of `endpoints` without FastAPI's router."""

    def __init__(self, app: ASGIApp, routers: Iterable[APIRouter], endpoints: Iterable[Endpoint]) -> None:
        self.app = app
        wanted = set(endpoints)
        self.routes = [
            (route.path_regex, route.endpoint, route)
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute) and route.endpoint in wanted and "GET" in route.methods
        ]
        if len(self.routes) != len(wanted):
            raise ValueError("every fast endpoint must be a GET route of the given routers")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = get_route_path(scope)
            for pattern, endpoint, route in self.routes:
                match = pattern.match(path)
                if match is not None:
                    scope["route"] = route
                    scope["path_params"] = match.groupdict()
                    request = Request(scope, receive)
                    try:
                        response = await endpoint(request)
                    except Exception as error:
                        response = await error_to_response(request, error)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
