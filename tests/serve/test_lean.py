"""The lean HTTP protocol: uvicorn's parser and connection handling, the inference POSTs answered in place.

In-process tests drive the real protocol class (uvicorn's, subclassed) with a transport that records what
would go on the wire; the process tests speak raw HTTP/1.x to a real ``prodml serve`` over a socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httptools
import orjson
import pytest
import uvicorn
from uvicorn.server import ServerState

from prodml.serve.handlers import FastPath, Reply
from prodml.serve.lean import _Resume, lean_protocol
from tests.serve.conftest import Served
from tests.servers import ServeProcess

# --- in process ----------------------------------------------------------------------------------------


class Wire(asyncio.Transport):
    """What the protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def responses(self) -> list[tuple[int, dict[str, str], bytes]]:
        """The responses written, parsed (status, headers, body)."""
        parsed = Responses()
        parsed.feed(b"".join(self.writes))
        return parsed.out


class Responses:
    """HTTP responses parsed from bytes fed as they come: (status, headers, body) each."""

    def __init__(self) -> None:
        self.out: list[tuple[int, dict[str, str], bytes]] = []
        self.parser = httptools.HttpResponseParser(self)

    def feed(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.headers: dict[str, str] = {}
        self.body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.out.append((self.parser.get_status_code(), self.headers, self.body))


class Stub:
    """Inference handlers that answer with what they were asked, at once or after ``gate`` opens."""

    def __init__(self) -> None:
        self.state = SimpleNamespace(max_body_bytes=1000)
        self.gate: asyncio.Event | None = None
        self.backlogs: list[int] = []
        self.protocol: Any = None

    async def invocations(self, headers: dict[str, str], raw: bytes) -> Reply:
        self.backlogs.append(self.protocol.turn.active + len(self.protocol.server_state.tasks))
        if self.gate is not None:
            await self.gate.wait()
        return Reply(200, raw, {"x-request-id": headers.get("x-request-id", "-")})

    async def predict(self, headers: dict[str, str], raw: bytes) -> Reply:
        raise RuntimeError("a bug below the handlers' own error handling")


async def fallback(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app behind the lean routes: answers 204 naming the path."""
    while (await receive()).get("more_body"):
        pass
    await send(
        {"type": "http.response.start", "status": 204, "headers": [(b"x-path", scope["path"].encode())]}
    )
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def lean() -> Iterator[tuple[Any, Wire, Stub, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    stub = Stub()
    fast = FastPath(stub, fallback)  # type: ignore[arg-type]
    cls = lean_protocol(fast)
    config = uvicorn.Config(fast, lifespan="off", log_config=None, http=cls)
    config.load()
    wire = Wire()
    state = ServerState()
    state.default_headers = [(b"date", b"Sun, 29 Nov 2026 21:00:00 GMT")]  # the server's tick sets it
    protocol = cls(config=config, server_state=state, app_state={}, _loop=loop)
    protocol.connection_made(wire)
    stub.protocol = protocol
    yield protocol, wire, stub, loop
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def another_connection(protocol: Any, loop: asyncio.AbstractEventLoop) -> tuple[Any, Wire]:
    """A second connection to the same server (the same turn, task set and handlers)."""
    other = protocol.__class__(
        config=protocol.config, server_state=protocol.server_state, app_state={}, _loop=loop
    )
    wire = Wire()
    other.connection_made(wire)
    return other, wire


def post(path: str, body: bytes, *, rid: str = "-", version: str = "1.1", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-request-id: {rid}\r\n{extra}\r\n"
    ).encode() + body


def turn(loop: asyncio.AbstractEventLoop, times: int = 5) -> None:
    for _ in range(times):
        loop.run_until_complete(asyncio.sleep(0))


def test_an_inference_post_is_answered_in_one_write_without_a_task(lean: Any) -> None:
    protocol, wire, stub, loop = lean
    protocol.data_received(post("/invocations", b'{"a":1}', rid="r1"))
    assert wire.writes == []  # answered after the loop has read every connection of this turn
    turn(loop, 1)
    assert len(wire.writes) == 1
    [(status, headers, body)] = wire.responses()
    assert (status, body, headers["x-request-id"]) == (200, b'{"a":1}', "r1")
    assert headers["content-length"] == "7"
    assert headers["date"] == "Sun, 29 Nov 2026 21:00:00 GMT"  # uvicorn's default headers, as its own
    assert stub.backlogs == [1]  # alone: the data plane runs it inline
    assert not wire.closed
    assert protocol.timeout_keep_alive_task is not None  # keep-alive armed, as uvicorn does


class Arms:
    """Stands in for the server's BusyPoll: counts the arms."""

    def __init__(self) -> None:
        self.count = 0

    def arm(self) -> None:
        self.count += 1


def test_reading_and_answering_a_request_each_arm_the_busy_poll(lean: Any) -> None:
    protocol, wire, _, loop = lean
    arms = protocol.poll = Arms()  # on the instance: the class (shared by the server) keeps None
    protocol.data_received(post("/invocations", b"1"))
    assert arms.count == 1  # read: the loop keeps polling while the request is worked on
    turn(loop, 1)
    assert (arms.count, len(wire.responses())) == (2, 1)  # answered: and for the next request


def test_requests_of_one_turn_see_each_other_in_the_backlog(lean: Any) -> None:
    protocol, wire, stub, loop = lean
    other, wire2 = another_connection(protocol, loop)
    protocol.data_received(post("/invocations", b"1", rid="a"))
    other.data_received(post("/invocations", b"2", rid="b"))
    turn(loop, 1)
    # the first is not alone (the data plane sends it to the batching thread); the last one is
    assert stub.backlogs == [2, 1]
    assert [r[2] for r in wire.responses() + wire2.responses()] == [b"1", b"2"]


def test_a_waiting_handler_finishes_as_a_task_and_pipelined_requests_keep_their_order(lean: Any) -> None:
    protocol, wire, stub, loop = lean
    stub.gate = asyncio.Event()
    pipelined = (
        post("/invocations", b"first", rid="1")
        + b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
        + post("/invocations", b"third", rid="3")
    )
    protocol.data_received(pipelined)
    turn(loop)
    assert wire.writes == []  # the first waits; nothing behind it may overtake it
    assert len(protocol.server_state.tasks) == 1  # counted like any request (drain waits for it)
    assert wire.paused  # uvicorn stops reading behind a pending request
    loop.call_soon(stub.gate.set)
    turn(loop, 20)
    responses = wire.responses()
    assert [(s, h.get("x-request-id") or h.get("x-path")) for s, h, _ in responses] == [
        (200, "1"),
        (204, "/v2/health/live"),
        (200, "3"),
    ]
    assert not protocol.server_state.tasks


@pytest.mark.parametrize(
    ("version", "extra"), [("1.0", ""), ("1.1", "connection: close\r\n")], ids=["http-1.0", "close"]
)
def test_no_keep_alive_closes_after_the_response(lean: Any, version: str, extra: str) -> None:
    protocol, wire, _, loop = lean
    protocol.data_received(post("/invocations", b"x", version=version, extra=extra))
    turn(loop)
    [(status, headers, _)] = wire.responses()
    assert status == 200
    assert headers["connection"] == "close"
    assert wire.closed


@pytest.mark.parametrize(
    ("request_bytes", "status", "backlogs"),
    [
        # reached the handler as an ASGI task (the task is its backlog)
        (
            b"POST /invocations HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
            200,
            [1],
        ),
        (post("/invocations", b"x", extra="expect: 100-continue\r\n"), 200, [1]),
        (post("/invocations", b"x" * 1001), 400, []),  # over the body limit: the ASGI route refuses it
        (post("/v2/models/a%2Fb/infer", b"x"), 204, []),  # escaped: uvicorn unquotes it, no inference route
    ],
    ids=["chunked", "expect-100", "too-large", "escaped-path"],
)
def test_what_the_lean_path_does_not_take_goes_the_asgi_way(
    lean: Any, request_bytes: bytes, status: int, backlogs: list[int]
) -> None:
    protocol, wire, stub, loop = lean
    protocol.data_received(request_bytes)
    turn(loop, 20)
    assert len(wire.writes) >= 2  # uvicorn's path: head and body written apart
    assert wire.responses()[-1][0] == status
    assert stub.backlogs == backlogs


def test_a_client_that_does_not_read_gets_no_more_answers_until_it_does(lean: Any) -> None:
    protocol, wire, _, loop = lean
    protocol.pause_writing()  # what the transport says once its buffer passes the high-water mark
    protocol.data_received(post("/invocations", b"x", rid="later"))
    turn(loop, 10)
    assert wire.writes == []  # uvicorn's path waits for the buffer to drain
    protocol.resume_writing()
    turn(loop, 10)
    [(status, headers, _)] = wire.responses()
    assert (status, headers["x-request-id"]) == (200, "later")


def test_a_client_gone_before_the_answer_gets_nothing_written(lean: Any) -> None:
    protocol, wire, stub, loop = lean
    stub.gate = asyncio.Event()
    protocol.data_received(post("/invocations", b"x"))
    turn(loop)
    protocol.connection_lost(None)
    stub.gate.set()
    turn(loop, 10)
    assert wire.responses() == []
    assert not protocol.server_state.tasks


def test_a_request_cut_off_by_shutdown_gets_a_503(lean: Any) -> None:
    protocol, wire, stub, loop = lean
    stub.gate = asyncio.Event()  # never opens
    protocol.data_received(post("/invocations", b"x"))
    turn(loop)
    [task] = protocol.server_state.tasks
    task.cancel()  # what uvicorn does once the graceful shutdown timeout has passed
    turn(loop)
    [(status, _, body)] = wire.responses()
    assert status == 503
    assert orjson.loads(body) == {"error": "the server is shutting down"}
    assert task.cancelled()


def test_an_exception_under_the_handlers_is_a_500_without_a_trace(lean: Any) -> None:
    protocol, wire, _, loop = lean
    protocol.data_received(post("/predict", b"[]"))
    turn(loop)
    [(status, _, body)] = wire.responses()
    assert status == 500
    assert orjson.loads(body) == {"error": "internal error"}
    protocol.data_received(post("/invocations", b"ok"))  # the connection goes on
    turn(loop)
    assert wire.responses()[-1][0] == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        post("/invocations", b"x"),
        b"POST /invocations HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    ],
    ids=["lean", "asgi"],
)
def test_header_values_are_percent_encoded_alike_on_both_paths(lean: Any, request_bytes: bytes) -> None:
    protocol, wire, stub, loop = lean

    async def odd(headers: dict[str, str], raw: bytes) -> Reply:
        return Reply(200, b"{}", {"x-request-id": "a\r\nx-evil: 1", "x-model-name": "modèle✓ 100%"})

    stub.invocations = odd
    protocol.data_received(request_bytes)
    turn(loop, 10)
    [(status, headers, _)] = wire.responses()
    assert status == 200
    assert "x-evil" not in headers
    assert headers["x-request-id"] == "a%0D%0Ax-evil: 1"
    assert headers["x-model-name"] == "mod%C3%A8le%E2%9C%93 100%25"


def test_a_cancelled_first_step_costs_only_its_own_request(lean: Any) -> None:
    protocol, wire, stub, loop = lean
    other, wire2 = another_connection(protocol, loop)

    async def cancelled(headers: dict[str, str], raw: bytes) -> Reply:
        raise asyncio.CancelledError  # no Exception: it must not escape the turn

    stub.predict = cancelled  # type: ignore[method-assign]
    protocol.data_received(post("/predict", b"[]"))
    other.data_received(post("/invocations", b"ok"))
    turn(loop)
    assert [r[0] for r in wire.responses()] == [500]
    assert [r[0] for r in wire2.responses()] == [200]
    assert protocol.turn.active == 0


def test_a_huge_content_length_is_refused_not_a_500(lean: Any) -> None:
    protocol, wire, _, loop = lean
    protocol.data_received(
        post("/invocations", b"xy").replace(b"content-length: 2", b"content-length: " + b"0" * 5000 + b"2")
    )
    turn(loop, 10)
    assert [r[0] for r in wire.responses()] == [400]


def test_resume_closes_the_coroutine_when_its_task_is_finalised() -> None:
    loop = asyncio.new_event_loop()
    future = loop.create_future()

    async def work() -> Reply:
        await future
        return Reply(200, b"")

    coro = work()
    resume = _Resume(coro, coro.send(None)).__await__()
    next(resume)
    coro.close()  # the garbage collector may finalise the coroutine before the task that runs it
    resume.close()  # then the task: no "cannot reuse already awaited coroutine" on the way out
    assert coro.cr_frame is None
    loop.close()


def test_resume_relays_sends_and_cancellation_like_a_task() -> None:
    loop = asyncio.new_event_loop()
    seen: list[str] = []

    async def work(future: asyncio.Future[int]) -> Reply:
        try:
            value = await future
            seen.append(f"got {value}")
            await asyncio.sleep(0)
            return Reply(200, str(value).encode())
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def both() -> None:
        ok_future, cancel_future = loop.create_future(), loop.create_future()
        ok, cancelled = work(ok_future), work(cancel_future)
        first = ok.send(None)  # stepped once outside a task, as the protocol does
        task = loop.create_task(_finish_via(ok, first))
        loop.call_soon(ok_future.set_result, 7)
        assert (await task).body == b"7"
        second = cancelled.send(None)
        doomed = loop.create_task(_finish_via(cancelled, second))
        await asyncio.sleep(0)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed

    loop.run_until_complete(both())
    loop.close()
    assert seen == ["got 7", "cancelled"]


@pytest.mark.parametrize(("delay", "found"), [(0.0, b"hit"), (1.0, None)], ids=["answers", "silent"])
def test_the_redis_cache_works_from_a_first_step_outside_any_task(delay: float, found: bytes | None) -> None:
    from prodml.serve.cache import RedisCache

    class Peer:  # redis.asyncio's get: an answer, or a silent peer
        async def get(self, key: str) -> bytes:
            await asyncio.sleep(delay)
            return b"hit"

    loop = asyncio.new_event_loop()
    cache = RedisCache("redis://127.0.0.1:1", timeout_s=0.05)
    cache.client = Peer()

    async def guarded() -> Any:
        return await cache._guard(cache.client.get("k"))

    async def drive() -> Any:
        first: asyncio.Future[Any] = loop.create_future()

        def first_step() -> None:  # a plain loop callback, as the lean protocol's turn: no current task
            coro = guarded()
            try:
                first.set_result(_finish_via(coro, coro.send(None)))
            except StopIteration as done:  # finished without waiting: it could not even ask the peer
                first.set_result(asyncio.sleep(0, done.value))

        loop.call_soon(first_step)
        return await (await first)

    assert loop.run_until_complete(drive()) == found
    assert cache.breaker.failures == (0 if found else 1)
    loop.close()


async def _finish_via(coro: Any, signal: Any) -> Reply:
    return await _Resume(coro, signal)


# --- a real server, raw sockets ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(served: Served) -> Iterator[ServeProcess]:
    with ServeProcess(served.root, served.env) as proc:
        proc.wait_ready()
        yield proc


def _read_responses(sock: socket.socket, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    parsed = Responses()
    while len(parsed.out) < n and (data := sock.recv(65536)):
        parsed.feed(data)
    return parsed.out


def _connect(server: ServeProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@pytest.mark.integration
def test_pipelined_mixed_requests_come_back_in_order(server: ServeProcess, served: Served) -> None:
    row = orjson.dumps([served.rows[0]])
    split = orjson.dumps(
        {"dataframe_split": {"columns": list(served.rows[1]), "data": [list(served.rows[1].values())]}}
    )
    with _connect(server) as sock:
        sock.sendall(
            post("/predict", row, rid="p1")
            + b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
            + post("/invocations", split, rid="p3")
            + post("/predict", b"{not json", rid="p4")
            + post("/predict", row, rid="p5")
        )
        responses = _read_responses(sock, 5)
    assert [s for s, _, _ in responses] == [200, 200, 200, 400, 200]
    assert [h.get("x-request-id") for _, h, _ in responses] == ["p1", None, "p3", None, "p5"]
    assert orjson.loads(responses[1][2]) == {"live": True}
    assert orjson.loads(responses[0][2])["request_id"] == "p1"


def _cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loop_cpu_seconds(pid: int) -> float:
    """CPU time of the server's main thread (its event loop), not of its background threads (the
    registry poller, the log writer, gRPC)."""
    return _cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat"))


def _wait_quiet(pid: int, timeout: float = 30.0) -> None:
    """Until the whole server process idles: its background start-up work (resolving the registry
    imports mlflow in a thread, ~1 s of CPU that holds the GIL the loop needs) is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        start = _cpu_seconds(Path(f"/proc/{pid}/stat"))
        time.sleep(0.3)
        if _cpu_seconds(Path(f"/proc/{pid}/stat")) - start < 0.03:
            return
    raise AssertionError(f"the server kept busy for {timeout} s after it started")


@pytest.mark.integration
@pytest.mark.skipif(sys.platform != "linux", reason="reads the loop thread's CPU time from /proc")
def test_the_server_busy_polls_after_a_request_then_sleeps(served: Served) -> None:
    # a 100 ms window (the default is 200 µs) makes the polling measurable in the loop thread's CPU time
    env = {**served.env, "PRODML_SERVE__BUSY_POLL_US": "100000"}
    with ServeProcess(served.root, env) as server:
        server.wait_ready()
        _wait_quiet(server.proc.pid)  # and past the readiness probes' windows
        sock = _connect(server)
        with sock:
            start = _loop_cpu_seconds(server.proc.pid)
            for _ in range(10):  # a request every 80 ms: the window stays open for ~0.9 s
                sock.sendall(post("/predict", orjson.dumps([served.rows[0]])))
                assert _read_responses(sock, 1)[0][0] == 200
                time.sleep(0.08)
            polling = _loop_cpu_seconds(server.proc.pid) - start
            time.sleep(0.2)
            start = _loop_cpu_seconds(server.proc.pid)
            time.sleep(1.0)
            idle = _loop_cpu_seconds(server.proc.pid) - start
    # it polled: ~0.9 s of CPU on an idle machine; each pass yields the core, so on a busy one (the test
    # suite's other processes) it gets less, but still far more than the few ms the requests cost
    assert polling >= 0.15
    assert idle < 0.05  # then slept: an idle server costs no CPU


@pytest.mark.integration
def test_http_10_and_connection_close_end_the_connection(server: ServeProcess, served: Served) -> None:
    row = orjson.dumps([served.rows[0]])
    for version, extra in (("1.0", ""), ("1.1", "connection: close\r\n")):
        with _connect(server) as sock:
            sock.sendall(post("/predict", row, version=version, extra=extra))
            [(status, headers, _)] = _read_responses(sock, 1)
            assert (status, headers["connection"]) == (200, "close")
            assert sock.recv(100) == b""  # closed by the server


@pytest.mark.integration
def test_chunked_and_expect_continue_are_served_too(server: ServeProcess, served: Served) -> None:
    row = orjson.dumps([served.rows[0]])
    with _connect(server) as sock:
        head = b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        sock.sendall(head + b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(row), row))
        [(status, _, body)] = _read_responses(sock, 1)
        assert status == 200 and len(orjson.loads(body)["predictions"]) == 1
        sock.sendall(head + b"content-length: %d\r\nexpect: 100-continue\r\n\r\n" % len(row))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(row)
        [(status, _, _)] = _read_responses(sock, 1)
        assert status == 200


@pytest.mark.integration
def test_a_request_id_cannot_split_the_response(server: ServeProcess, served: Served) -> None:
    inputs = [
        {
            "name": k,
            "shape": [1, 1],
            "datatype": "BYTES" if isinstance(v, str) else "FP32",
            "data": [v],
        }
        for k, v in served.rows[0].items()
    ]
    body = orjson.dumps({"id": "a\r\nx-evil: 1 ✓", "inputs": inputs})
    chunked = (
        b"POST /v2/models/churn/infer HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    for request in (post("/v2/models/churn/infer", body), chunked):  # the lean path, the ASGI path
        with _connect(server) as sock:
            sock.sendall(request)
            [(status, headers, out)] = _read_responses(sock, 1)
        assert status == 200
        assert "x-evil" not in headers
        assert headers["x-request-id"] == "a%0D%0Ax-evil: 1 %E2%9C%93"
        assert orjson.loads(out)["id"] == "a\r\nx-evil: 1 ✓"  # the body keeps it as given


@pytest.mark.integration
def test_clients_that_vanish_mid_request_do_not_hurt_the_server(server: ServeProcess, served: Served) -> None:
    row = orjson.dumps([served.rows[0]])
    for cut in (post("/predict", row)[:-5], post("/predict", row)):  # mid-body, and before the answer
        with _connect(server) as sock:
            sock.sendall(cut)
    with _connect(server) as sock:
        sock.sendall(post("/predict", row, rid="after"))
        [(status, headers, _)] = _read_responses(sock, 1)
    assert (status, headers["x-request-id"]) == (200, "after")
