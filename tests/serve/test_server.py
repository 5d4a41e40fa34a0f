"""The server process over raw sockets: pipelining, keep-alive, chunked bodies, busy polling, vanishing
clients — what stock uvicorn and prodml's ASGI app do together."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.serve.conftest import Served
from tests.servers import ServeProcess, connect, raw_post, read_responses


@pytest.fixture(scope="module")
def server(served: Served) -> Iterator[ServeProcess]:
    with ServeProcess(served.root, served.env) as proc:
        proc.wait_ready()
        yield proc


@pytest.mark.integration
def test_pipelined_mixed_requests_come_back_in_order(server: ServeProcess, served: Served) -> None:
    row = orjson.dumps([served.rows[0]])
    split = orjson.dumps(
        {"dataframe_split": {"columns": list(served.rows[1]), "data": [list(served.rows[1].values())]}}
    )
    with connect(server.port) as sock:
        sock.sendall(
            raw_post("/predict", row, rid="p1")
            + b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
            + raw_post("/invocations", split, rid="p3")
            + raw_post("/predict", b"{not json", rid="p4")
            + raw_post("/predict", row, rid="p5")
        )
        responses = read_responses(sock, 5)
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
    # opt-in (the default, 0, sleeps at once); a 100 ms window makes the polling measurable in the
    # loop thread's CPU time
    env = {**served.env, "PRODML_SERVE__BUSY_POLL_US": "100000"}
    with ServeProcess(served.root, env) as server:
        server.wait_ready()
        _wait_quiet(server.proc.pid)  # and past the readiness probes' windows
        sock = connect(server.port)
        with sock:
            start = _loop_cpu_seconds(server.proc.pid)
            for _ in range(10):  # a request every 80 ms: the window stays open for ~0.9 s
                sock.sendall(raw_post("/predict", orjson.dumps([served.rows[0]])))
                assert read_responses(sock, 1)[0][0] == 200
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
        with connect(server.port) as sock:
            sock.sendall(raw_post("/predict", row, version=version, extra=extra))
            [(status, headers, _)] = read_responses(sock, 1)
            assert (status, headers["connection"]) == (200, "close")
            assert sock.recv(100) == b""  # closed by the server


@pytest.mark.integration
def test_chunked_and_expect_continue_are_served_too(server: ServeProcess, served: Served) -> None:
    row = orjson.dumps([served.rows[0]])
    with connect(server.port) as sock:
        head = b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        sock.sendall(head + b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(row), row))
        [(status, _, body)] = read_responses(sock, 1)
        assert status == 200 and len(orjson.loads(body)["predictions"]) == 1
        sock.sendall(head + b"content-length: %d\r\nexpect: 100-continue\r\n\r\n" % len(row))
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(row)
        [(status, _, _)] = read_responses(sock, 1)
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
    for request in (raw_post("/v2/models/churn/infer", body), chunked):
        with connect(server.port) as sock:
            sock.sendall(request)
            [(status, headers, out)] = read_responses(sock, 1)
        assert status == 200
        assert "x-evil" not in headers
        assert headers["x-request-id"] == "a%0D%0Ax-evil: 1 %E2%9C%93"
        assert orjson.loads(out)["id"] == "a\r\nx-evil: 1 ✓"  # the body keeps it as given


@pytest.mark.integration
def test_clients_that_vanish_mid_request_do_not_hurt_the_server(server: ServeProcess, served: Served) -> None:
    row = orjson.dumps([served.rows[0]])
    for cut in (raw_post("/predict", row)[:-5], raw_post("/predict", row)):  # mid-body, and before the answer
        with connect(server.port) as sock:
            sock.sendall(cut)
    with connect(server.port) as sock:
        sock.sendall(raw_post("/predict", row, rid="after"))
        [(status, headers, _)] = read_responses(sock, 1)
    assert (status, headers["x-request-id"]) == (200, "after")


@pytest.mark.integration
def test_an_upgrade_request_is_answered_and_hurts_nobody(server: ServeProcess, served: Served) -> None:
    with connect(server.port) as sock:
        sock.sendall(
            b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
        )
        [(status, _, _)] = read_responses(sock, 1)
    assert status in (200, 400)  # served as plain HTTP/1.1, or refused: never a dropped connection
    with connect(server.port) as sock:
        sock.sendall(raw_post("/predict", orjson.dumps([served.rows[0]]), rid="next"))
        assert read_responses(sock, 1)[0][0] == 200
