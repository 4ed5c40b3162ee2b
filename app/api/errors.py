"""Error responses: one shape, `{"detail": ...}`, a 4xx naming the problem for any bad input,
503 with the reason when the database is unreachable, 500 only for genuine bugs (logged).

Also the request limits, enforced before a body is parsed: its size (413 naming the cap) and
its content type (415 unless JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.limits import OVER_CAP
from app.api.schemas import ID_RULE
from app.db.errors import UNAVAILABLE, database_problem

log = logging.getLogger("dotrec.api")

RETRY_AFTER_S = "5"
ID_FIELDS = ("user_id", "movie_id", "user_ids", "movie_ids", "pairs")
MAX_ECHOED_INPUT = 100


def error_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for error_type in UNAVAILABLE:
        app.add_exception_handler(error_type, _database_unavailable)
    app.add_exception_handler(sa_exc.IntegrityError, _integrity_error)
    app.add_exception_handler(Exception, _unexpected)


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    cause = error.__cause__
    # FastAPI answers a body json.loads cannot read with a bare 400 "error parsing the body";
    # it is malformed JSON like any other, so the same 422 naming where and why
    if error.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        return error_response(422, [_not_unicode(cause)])
    if error.status_code == 400 and isinstance(cause, RecursionError):
        return error_response(422, [_json_problem("the body is not usable JSON: it is nested too deeply")])
    if error.status_code == 400 and isinstance(cause, ValueError) and "digits" in str(cause):
        return error_response(
            422, [_json_problem(f"the body holds an integer too long to read ({str(cause).split(';')[0]})")]
        )
    return error_response(error.status_code, error.detail, getattr(error, "headers", None))


def _json_problem(message: str) -> dict:
    return {"loc": ["body"], "msg": message, "type": "json_invalid"}


def _not_unicode(error: UnicodeDecodeError) -> dict:
    reason = f"not {error.encoding.upper()}: {error.reason}"
    return {
        "loc": ["body", error.start],
        "msg": f"the body is not valid JSON ({reason}) at byte {error.start}",
        "type": "json_invalid",
    }


SHOWN_ERRORS = 20
"""Field errors listed in a 422 at most; the rest are counted in one more entry."""


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    errors = error.errors()
    over = next((e for e in errors if e.get("type") == OVER_CAP), None)
    if over is not None:  # a list over its cap: the request is too large, whatever else is wrong
        return error_response(413, _text(over.get("msg", "over a cap")))
    shown = [_clean(e) for e in errors[:SHOWN_ERRORS]]
    if len(errors) > SHOWN_ERRORS:
        more = len(errors) - SHOWN_ERRORS
        shown.append(
            {"loc": ["body"], "msg": f"and {more:,} more errors not shown", "type": "too_many_errors"}
        )
    return error_response(422, shown)


def _clean(error: dict) -> dict:
    """A pydantic error as a client needs it: where, what, and a short echo of the input."""
    loc = [part if isinstance(part, int) else _text(part) for part in error.get("loc", ())]
    message = _text(error.get("msg", "invalid"))
    kind = str(error.get("type", "value_error"))
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error")
        message = f"the body is not valid JSON ({reason}) at character {loc[-1]}" if reason else message
    elif any(isinstance(part, str) and part in ID_FIELDS for part in loc) and kind not in (
        "missing",
        "extra_forbidden",
        "list_type",
        "tuple_type",
        "too_short",
        "too_long",
    ):
        message = f"{message}: ids are {ID_RULE}"
    cleaned: dict[str, Any] = {"loc": loc, "msg": message, "type": kind}
    if "input" in error and _small(error["input"]):
        value = error["input"]
        cleaned["input"] = _text(value) if isinstance(value, str) else value
    return cleaned


def _text(value: object) -> str:
    """`value` as text that encodes to UTF-8 (a lone surrogate from JSON becomes an escape)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _small(value: Any) -> bool:
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return False
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return False
    if value is None or isinstance(value, bool | int | float):
        return True
    return isinstance(value, str) and len(value) <= MAX_ECHOED_INPUT


async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
    reason = database_problem(error)
    log.warning("database unavailable for %s %s: %s", request.method, request.url.path, reason)
    return error_response(503, f"database unavailable: {reason}", {"Retry-After": RETRY_AFTER_S})


async def _integrity_error(request: Request, error: sa_exc.IntegrityError) -> JSONResponse:
    return error_response(409, f"the database refused the write: {database_problem(error)}")


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error; it has been logged")


# --- request limits -----------------------------------------------------------------------------------

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RequestLimitsMiddleware:
    """Pure ASGI: a body over `max_body_bytes` is a 413 naming the cap (at once when
    Content-Length says so, else as soon as the streamed bytes pass it); a body that is not
    JSON is a 415; a body whose next piece does not come within `body_timeout_s` is a 408.

    `element_budgets` maps the paths of list bodies to (most commas, the cap's description):
    commas are counted as the body arrives (a byte count, no parsing), and a body with more
    than a list of its caps' length could hold is a 413 before it is read to its end, let alone
    parsed: parsing 8 MB of JSON numbers holds the event loop (and the GIL) for a second.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout_s: float = 30.0,
        element_budgets: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.element_budgets = element_budgets or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        length: str | None = None
        content_type = ""
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if length is not None:
            if not length.strip().isdigit():
                await _send_error(scope, receive, send, 400, f"invalid Content-Length {length[:40]!r}")
                return
            if int(length) > self.max_body_bytes:
                await _send_error(scope, receive, send, 413, self.too_large())
                return
        has_body = chunked or (length is not None and int(length) > 0)
        if has_body and not _is_json(content_type):
            shown = content_type or "none"
            await _send_error(
                scope, receive, send, 415, f"Content-Type must be application/json (got {shown[:80]})"
            )
            return
        await self.app(scope, self._limited(receive, self.element_budgets.get(scope["path"])), send)

    def too_large(self) -> str:
        return f"request body larger than the cap of {self.max_body_bytes:,} bytes (MAX_BODY_BYTES)"

    def _limited(self, receive: Receive, budget: tuple[int, str] | None) -> Receive:
        received = commas = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, commas, complete
            if complete:  # after the body, receive() waits for the client to go: no deadline
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout_s):  # no task a call, as wait_for's
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408, f"the request body stalled: no data for {self.body_timeout_s:g} s (BODY_TIMEOUT_S)"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, self.too_large())
                if budget is not None:
                    commas += message.get("body", b"").count(b",")
                    if commas > budget[0]:
                        raise HTTPException(413, f"the body lists more than {budget[1]}")
                complete = not message.get("more_body", False)
            return message

        return limited_receive


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _send_error(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
