"""What one request may cost: list caps checked before a list's items are validated, at most one
item error reported per list, and a bound on the heavy requests computing at once.

The caps are settings (MAX_PAIRS, MAX_BATCH_RATINGS, MAX_MATRIX_IDS), so the request models
cannot hold them: `apply_caps`, a dependency of the routes with list bodies, puts the app's
settings in a context variable before FastAPI validates the body, and `capped` (a validator
that runs before the list's items are looked at) refuses a longer list at once, with the 413
naming the cap (`OVER_CAP`, answered by app.api.errors). Without it a few megabytes of hostile
JSON made pydantic build millions of errors: minutes of work and gigabytes of memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from app.config import Settings

OVER_CAP = "over_cap"
"""The error type of a list longer than its cap (a 413, not a 422)."""

_CAPS: ContextVar[Settings | None] = ContextVar("dotrec_request_caps", default=None)


async def apply_caps(request: Request) -> None:
    """The caps of this app for the request's body (a route dependency: solved before the body)."""
    _CAPS.set(request.app.state.dotrec.settings)


def capped(setting: str, what: str) -> BeforeValidator:
    """A validator refusing a list longer than the setting `setting` (e.g. "max_pairs") before
    its items are validated; `what` names the items in the message."""

    def check(value: Any) -> Any:
        caps = _CAPS.get()
        if caps is not None and isinstance(value, list):
            cap = getattr(caps, setting)
            if len(value) > cap:
                raise PydanticCustomError(
                    OVER_CAP,
                    "{count} {what}; the cap is {cap} ({setting})",
                    {"count": f"{len(value):,}", "what": what, "cap": f"{cap:,}", "setting": setting.upper()},
                )
        return value

    return BeforeValidator(check)


class HeavyWork:
    """At most `limit` heavy requests (pairs, matrices, batches) computing at once in a process:
    the others wait up to `timeout_s` for a turn, then get a 503 saying so. Their caps bound each
    one's memory; this bounds them together."""

    def __init__(self, limit: int, timeout_s: float) -> None:
        self.limit = limit
        self.timeout_s = timeout_s
        self._turns = threading.BoundedSemaphore(limit)

    @contextmanager
    def turn(self) -> Iterator[None]:
        if not self._turns.acquire(timeout=self.timeout_s):
            raise HTTPException(
                503,
                f"busy: {self.limit} heavy requests (pairs, matrices, batches) are computing; "
                f"none finished within {self.timeout_s:g} s (MAX_HEAVY_REQUESTS)",
                {"Retry-After": "1"},
            )
        try:
            yield
        finally:
            self._turns.release()
