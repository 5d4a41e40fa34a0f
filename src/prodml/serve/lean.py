"""uvicorn's HTTP/1.1 protocol, with the inference routes answered where the request is parsed.

For every request uvicorn builds an ASGI scope, a request/response cycle with its event, and a task that
the event loop starts on its next turn; the app then receives the body and sends the head and the body in
three more awaits. That machinery costs more than the parsing itself (measured on this 2-core VM, one
connection: a bare ASGI echo on uvicorn answered 5.4k requests/s, the same echo on uvicorn's parser and
loop alone 9.3k). :class:`LeanProtocol` keeps uvicorn for everything a connection needs — parsing (the
same ``httptools`` parser), keep-alive and its timeout, flow control, pipelining, graceful shutdown, and
every request that is not a POST to an inference route — and answers those POSTs itself: once the loop
has read every connection with data, it calls each request's handler and writes the response in one
``write``.

A handler that finishes without waiting (the usual case: validation and ONNX Runtime run on the loop
when the request is alone) costs no task at all. One that waits (a batch made after this loop turn or on
the runtime thread, a Redis call) becomes a task from the point where it waits, counted in uvicorn's
task set like any request, so graceful shutdown waits for it and the data plane's backlog sees it.
Because a handler's first step runs outside any task, code on the request path must not need
``asyncio.current_task()``: ``asyncio.timeout`` does, and so does ``asyncio.wait_for`` from Python 3.12
(``asyncio.wait`` does not).

It is uvicorn's ``http=`` extension point (a protocol class), subclassing the ``httptools`` protocol of
the pinned uvicorn release; the tests drive it in process and through a real server over sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from prodml.serve.handlers import FastPath, Reply, declared_too_large, decode_headers, reply_headers
from prodml.serve.poll import BusyPoll

__all__ = ["LeanProtocol", "lean_protocol"]

logger = logging.getLogger(__name__)

_INTERNAL = b'{"error":"internal error"}'


class _Signal:
    """An event nobody waits for: uvicorn sets the cycle's ``message_event`` on disconnect."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _Signal()


class _Answering:
    """A request on the lean path, as uvicorn's protocol sees it while the answer is being made: enough of
    uvicorn's ``RequestResponseCycle`` for its pipelining (requests behind it wait), disconnect and
    shutdown logic."""

    __slots__ = ("disconnected", "keep_alive", "response_complete")
    message_event = _NO_EVENT

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_complete = False


class _Resume:
    """Awaitable that runs the rest of a coroutine that has already been stepped once and waits on
    ``signal`` (what its first step yielded): a task that starts where the coroutine paused.

    It relays what a task would: sends to the coroutine what the task sends, and throws into it what is
    thrown into the task (cancellation)."""

    __slots__ = ("coro", "signal")

    def __init__(self, coro: Coroutine[Any, Any, Reply], signal: Any) -> None:
        self.coro, self.signal = coro, signal

    def __await__(self) -> Generator[Any, Any, Reply]:
        coro, signal = self.coro, self.signal
        while True:
            try:
                sent = yield signal
            except GeneratorExit:  # the task itself is being finalised: so is the coroutine
                coro.close()
                raise
            except BaseException as exc:  # relayed (cancellation too), as a task would
                try:
                    signal = coro.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
            else:
                try:
                    signal = coro.send(sent)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]


class _Turn:
    """The lean requests that completed in one turn of the event loop, answered together after it.

    Requests are not answered inside ``data_received``: the loop first reads every connection that has
    data, then :meth:`run` steps each request's handler. The data plane then sees how many requests
    arrived together (its backlog) — one alone runs at once on the loop; several are merged into one
    call, on the loop after this turn or on the runtime thread for large ones — as it did when each
    request was a task."""

    __slots__ = ("active", "ready")

    def __init__(self) -> None:
        self.ready: list[tuple[LeanProtocol, _Answering, Callable[[bytes], Awaitable[Reply]], bytes]] = []
        self.active = 0  # requests of this turn not yet stepped (the one being stepped included)

    def add(
        self,
        protocol: LeanProtocol,
        answering: _Answering,
        route: Callable[[bytes], Awaitable[Reply]],
        raw: bytes,
    ) -> None:
        if not self.ready:
            protocol.loop.call_soon(self.run)
        self.ready.append((protocol, answering, route, raw))

    def run(self) -> None:
        ready, self.ready = self.ready, []
        left = len(ready)
        for protocol, answering, route, raw in ready:
            self.active = left
            left -= 1
            try:
                protocol.step(answering, route, raw)
            except Exception:  # a broken connection must not cost the others of this turn their answer
                logger.exception("could not answer a request on the lean path")
        self.active = 0


class LeanProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol that answers POSTs to the inference routes itself.

    A request takes the lean path when it is a POST to an inference route with a ``Content-Length``
    within the body limit, no ``Expect: 100-continue``, no upgrade, nothing else pending on its
    connection, and a client that reads what it is sent (the transport has not paused writing); anything
    else goes the ASGI way, to the same handlers (``FastPath``).
    """

    fast: FastPath  # set by lean_protocol
    turn: _Turn  # shared by the server's connections
    poll: BusyPoll | None = None  # set by lean_protocol: armed by every request read and answered

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._route: Callable[[bytes], Awaitable[Reply]] | None = None
        self._chunks: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        if self.poll is not None:
            self.poll.arm()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        route = self._lean_route() if self.parser.get_method() == b"POST" else None
        if route is None:
            super().on_headers_complete()
            return
        self._route, self._chunks = route, []
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        # uvicorn sees a cycle in progress: requests pipelined behind this one wait for it
        self.cycle = _Answering(keep_alive)  # type: ignore[assignment]

    def _lean_route(self) -> Callable[[bytes], Awaitable[Reply]] | None:
        if (
            self.expect_100_continue
            or self.flow.write_paused  # a client that does not read: uvicorn's path waits for it to drain
            or self.pipeline
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.parser.should_upgrade()
        ):
            return None
        headers = decode_headers(self.headers)
        declared = headers.get("content-length")
        if declared is None or declared_too_large(declared, self.fast.limit):
            return None  # chunked or too large: the ASGI way, which reads or refuses it
        path = httptools.parse_url(self.url).path.decode("ascii")
        if "%" in path:
            return None
        return self.fast.route(path, headers)

    def on_body(self, body: bytes) -> None:
        if self._route is None:
            super().on_body(body)
        else:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        route = self._route
        if route is None:
            super().on_message_complete()
            return
        self._route = None
        raw = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks = []
        self.turn.add(self, self.cycle, route, raw)  # type: ignore[arg-type]

    def step(self, answering: _Answering, route: Callable[[bytes], Awaitable[Reply]], raw: bytes) -> None:
        """Run the handler up to its first wait; answer now if it finished, else from a task."""
        if answering.disconnected:
            answering.response_complete = True
            return
        coro: Coroutine[Any, Any, Reply] = route(raw)  # type: ignore[assignment]
        try:
            signal = coro.send(None)
        except StopIteration as done:
            self._answer(answering, done.value)
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # handlers turn errors into replies; this is the net under them (a
            # CancelledError included: it is no Exception, and must not cost the turn's other requests)
            logger.exception("unexpected error on the lean path")
            self._answer(answering, Reply(500, _INTERNAL))
            return
        # it waits (a batch, the cache): the rest runs as a task, like any request
        task = self.loop.create_task(self._finish(answering, coro, signal))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _finish(self, answering: _Answering, coro: Coroutine[Any, Any, Reply], signal: Any) -> None:
        try:
            reply = await _Resume(coro, signal)
        except asyncio.CancelledError:  # uvicorn's shutdown gave up waiting for it
            self._answer(answering, Reply(503, b'{"error":"the server is shutting down"}'))
            raise
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            logger.exception("unexpected error on the lean path")
            reply = Reply(500, _INTERNAL)
        self._answer(answering, reply)

    def _answer(self, answering: _Answering, reply: Reply) -> None:
        """Write the response in one piece, then do what uvicorn does when a response completes."""
        answering.response_complete = True
        if answering.disconnected or self.transport.is_closing():
            return
        head = [
            STATUS_LINE[reply.status],
            *(b"%s: %s\r\n" % pair for pair in self.server_state.default_headers),
            *(b"%s: %s\r\n" % pair for pair in reply_headers(reply)),
        ]
        if not answering.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        head.append(reply.body)
        self.transport.write(b"".join(head))
        if self.poll is not None:
            self.poll.arm()
        if not answering.keep_alive:
            self.transport.close()
        self.on_response_complete()


def lean_protocol(fast: FastPath, poll: BusyPoll | None = None) -> type[LeanProtocol]:
    """The protocol class for uvicorn's ``Config(http=...)``, answering ``fast``'s routes itself and
    arming ``poll`` on each request; its ``turn.active`` counts the requests it holds outside tasks (the
    server's backlog adds them)."""
    return type("LeanProtocol", (LeanProtocol,), {"fast": fast, "turn": _Turn(), "poll": poll})
