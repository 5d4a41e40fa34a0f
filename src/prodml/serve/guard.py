"""Limits uvicorn does not set on its ``httptools`` connections, so that slow or huge clients cannot hold
the server: a connection cap, a cap on a request's line and headers (431), a time limit on reading them
(408). The body's own limits are the ASGI app's (``http``).

:func:`guarded` wraps uvicorn's protocol class by composition — the ``http=`` extension point of
``uvicorn.Config`` — and feeds every byte through a second ``httptools`` parser first, which finds where
each request's head starts and ends (pipelined, chunked or not) for ~1 µs a request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["guarded"]


def _refusal(status: int, reason: str, error: str) -> bytes:
    body = b'{"error":"%s"}' % error.encode()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n" % (status, reason.encode())
    return head + b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)


def guarded(*, max_connections: int, max_head_bytes: int, head_timeout_s: float) -> type[asyncio.Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)``: uvicorn's own, behind these limits."""
    open_connections: set[Guard] = set()

    class Guard(asyncio.Protocol):
        def __init__(self, **kwargs: Any) -> None:
            self.inner = HttpToolsProtocol(**kwargs)
            self.parser: Any = httptools.HttpRequestParser(self)
            self.head = 0  # bytes of the current request's line and headers
            self.timer: asyncio.TimerHandle | None = None
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            if len(open_connections) >= max_connections:
                transport.write(_refusal(503, "Service Unavailable", "too many connections"))
                transport.close()
                self.parser = None
                return
            open_connections.add(self)
            self.inner.connection_made(transport)
            self.on_message_begin()  # a client that connects and sends nothing is timed too

        def connection_lost(self, exc: Exception | None) -> None:
            if self in open_connections:
                open_connections.discard(self)
                self.on_headers_complete()
                self.inner.connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.parser is not None:
                try:
                    self.parser.feed_data(data)
                except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # uvicorn's parser answers
                    self.parser = None
                if self.timer is not None:  # still in a request's head (httptools reports a header
                    self.head += len(data)  # only once it is whole: count what arrives meanwhile)
                    if self.head > max_head_bytes:
                        self.refuse(431, "Request Header Fields Too Large")
            if not self.transport.is_closing():
                self.inner.data_received(data)

        def eof_received(self) -> None:
            self.inner.eof_received()

        def pause_writing(self) -> None:
            self.inner.pause_writing()

        def resume_writing(self) -> None:
            self.inner.resume_writing()

        # --- the second parser's callbacks ------------------------------------------------------

        def on_message_begin(self) -> None:
            self.head = 0
            if self.timer is None:
                self.timer = asyncio.get_running_loop().call_later(
                    head_timeout_s, self.refuse, 408, "Request Timeout"
                )

        def on_headers_complete(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def refuse(self, status: int, reason: str) -> None:
            self.on_headers_complete()
            self.parser = None
            if not self.transport.is_closing():
                error = (
                    f"the request head took more than {head_timeout_s:g} s"
                    if status == 408
                    else (f"the request line and headers exceed {max_head_bytes} bytes")
                )
                self.transport.write(_refusal(status, reason, error))
                self.transport.close()

    return Guard
