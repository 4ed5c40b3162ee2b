"""Connection limits uvicorn does not have: a deadline for a request's headers and a cap on their
size (`dotrec serve` runs uvicorn with this protocol; README, "Serving limits").

Without them a client sending its headers a byte a minute, or 128 MB of them, held a connection
(and the memory of what it sent) for as long as it liked. The request body has its deadline in
app.api.errors.RequestLimitsMiddleware; idle keep-alive connections have uvicorn's own
`timeout_keep_alive`, and the number of connections its `limit_concurrency`.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import get_settings


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 408 to headers not complete within
    SERVER_HEADER_TIMEOUT_S of their first byte (or of the connection) and 431 to headers over
    SERVER_MAX_HEADER_BYTES, then closing the connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        settings = get_settings()  # per process: every worker reads the same environment
        self.header_timeout_s = settings.server_header_timeout_s
        self.max_header_bytes = settings.server_max_header_bytes
        self.header_bytes = 0
        self.awaiting_headers = True
        self.header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:  # called while parsing a chunk already counted
        super().on_message_begin()
        self.awaiting_headers = True
        if self.header_timer is None:
            self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.awaiting_headers:
            self.header_bytes += len(data)
        super().data_received(data)
        # checked after parsing: a chunk holding the end of the headers and body bytes is fine
        if self.awaiting_headers and self.header_bytes > self.max_header_bytes:
            self._refuse(
                431, "Request Header Fields Too Large", "request headers over SERVER_MAX_HEADER_BYTES"
            )

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.awaiting_headers = True  # the next request's headers (idle: uvicorn's keep-alive timeout)
        self.header_bytes = 0

    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.awaiting_headers and self.header_bytes:
            self._refuse(
                408, "Request Timeout", "request headers not complete within SERVER_HEADER_TIMEOUT_S"
            )
        elif self.awaiting_headers:  # a connection that never sent a byte: nothing to answer
            self.transport.close()

    def _refuse(self, status: int, reason: str, message: str) -> None:
        if self.transport.is_closing():
            return
        self.awaiting_headers = False
        self._disarm_header_timer()
        body = message.encode("ascii")
        self.transport.write(
            b"".join(
                [
                    f"HTTP/1.1 {status} {reason}\r\n".encode("ascii"),
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()
