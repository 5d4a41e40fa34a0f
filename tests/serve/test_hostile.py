"""Hostile clients and faults, each against a real ``prodml serve`` process.

Slow and huge requests are cut off without delaying anyone else; every malformed body is a 400 that
quotes little of it; SIGTERM under keep-alive load fails no accepted request; killed workers come back;
the registry is never written; admin tokens are checked as RFC 6750 says; the optional API key, CORS and
TLS work.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.serve.conftest import Served
from tests.servers import ServeProcess, connect, raw_post, read_responses

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(served: Served) -> Iterator[ServeProcess]:
    with ServeProcess(served.root, served.env, "--read-timeout", "1", "--max-connections", "12") as proc:
        proc.wait_ready()
        yield proc


def _ok(server: ServeProcess, served: Served) -> None:
    """Another client is served, at once."""
    r = httpx.post(f"{server.url}/predict", json=served.rows[:1], timeout=2)
    assert r.status_code == 200, r.text


# --- slow or huge clients -----------------------------------------------------------------------------


def test_a_slow_head_is_cut_off_with_408_and_holds_nobody(server: ServeProcess, served: Served) -> None:
    with connect(server.port) as slow, connect(server.port) as silent:
        slow.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\n")  # and never the rest
        _ok(server, served)
        [(status, headers, _)] = read_responses(slow, 1)
        assert (status, headers["connection"]) == (408, "close")
        assert read_responses(silent, 1)[0][0] == 408  # connected, sent nothing
        assert slow.recv(10) == b""


def test_a_slow_body_is_cut_off_with_408(server: ServeProcess, served: Served) -> None:
    with connect(server.port) as slow:
        slow.sendall(raw_post("/predict", b"[" + b" " * 99)[:-90])  # 10 of its 100 bytes
        _ok(server, served)
        [(status, headers, body)] = read_responses(slow, 1)
    assert (status, headers["connection"]) == (408, "close")
    assert "did not arrive" in orjson.loads(body)["error"]


def test_a_huge_header_gets_431_before_it_is_read(server: ServeProcess, served: Served) -> None:
    got = b""
    with connect(server.port) as huge:
        huge.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-big: ")
        huge.settimeout(0.1)
        for _ in range(64 * 64):  # up to 64 MiB, 16 KiB at a time, until the server answers
            huge.sendall(b"a" * (16 << 10))
            try:
                got += huge.recv(4096)
            except TimeoutError:
                continue
            break
    assert got.startswith(b"HTTP/1.1 431 ")
    _ok(server, served)


def test_connections_beyond_the_cap_are_refused_and_the_cap_frees(
    server: ServeProcess, served: Served
) -> None:
    held = [connect(server.port) for _ in range(12)]
    try:
        time.sleep(0.2)
        with connect(server.port) as extra:
            [(status, _, body)] = read_responses(extra, 1)
            assert status == 503 and b"too many connections" in body
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    _ok(server, served)


# --- 400, never 500 -----------------------------------------------------------------------------------


def _oip(row: dict[str, Any], **change: Any) -> dict[str, Any]:
    inputs = [
        {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP32", "data": [v]}
        for k, v in row.items()
    ]
    return {"inputs": inputs, **change}


def _bodies(row: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(path, what is wrong, JSON body) for every JSON form."""
    number = next(k for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool))
    nested = {**row, number: [1.0]}
    deep = _oip(row)
    deep["inputs"][0]["data"] = [[[1.0]]]
    deep["inputs"][0]["shape"] = [1, 1]
    bool_in_number = {**row, number: True}
    cols = list(row)
    return [
        ("/predict", "nested value", [nested]),
        ("/predict", "object value", [{**row, number: {"a": 1}}]),
        ("/predict", "boolean in a numeric column", [bool_in_number]),
        ("/predict", "empty string in a non-nullable categorical", [{**row, "plan": ""}]),
        ("/v1/models/churn:predict", "nested value", {"instances": [nested]}),
        ("/v1/models/churn:predict", "nested list row", {"instances": [[[v] for v in row.values()]]}),
        (
            "/invocations",
            "nested value in split",
            {"dataframe_split": {"columns": cols, "data": [list(nested.values())]}},
        ),
        (
            "/invocations",
            "duplicate column names",
            {"dataframe_split": {"columns": [*cols, cols[0]], "data": [[*row.values(), 1]]}},
        ),
        ("/invocations", "nested value in records", {"dataframe_records": [nested]}),
        ("/invocations", "nested value in instances", {"instances": [nested]}),
        ("/invocations", "nested value in inputs", {"inputs": {k: [v] for k, v in nested.items()}}),
        ("/invocations", "inputs of objects", {"inputs": {k: [{"x": v}] for k, v in row.items()}}),
        ("/v2/models/churn/infer", "data deeper than its shape", deep),
        ("/v2/models/churn/infer", "outputs: 5", _oip(row, outputs=5)),
        (
            "/v2/models/churn/infer",
            "declared datatype does not match",
            {"inputs": [{**_oip(row)["inputs"][0], "datatype": "BYTES"}]},
        ),
        (
            "/v2/models/churn/infer",
            "a negative shape",
            {"inputs": [{**_oip(row)["inputs"][0], "shape": [-1]}]},
        ),
        ("/v2/models/churn/infer", "duplicate input", {"inputs": _oip(row)["inputs"] * 2}),
    ]


def test_every_malformed_json_form_is_a_400_naming_a_field(server: ServeProcess, served: Served) -> None:
    row = {k: (0.0 if v is None else v) for k, v in served.rows[0].items()}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for path, what, body in _bodies(row):
            r = client.post(path, json=body)
            assert r.status_code == 400, (path, what, r.text)
            assert r.json()["fields"], (path, what)
            assert client.post("/predict", json=[row]).status_code == 200  # and the next one is fine


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_bad_csv_and_binary_headers_are_400s(server: ServeProcess, served: Served) -> None:
    row = {k: (0.0 if v is None else v) for k, v in served.rows[0].items()}
    number = next(k for k, v in row.items() if isinstance(v, float))
    good = _csv([row])
    cases = {
        "bare CR": good.replace("\n", "\r", 1).rstrip("\n") + "\n" + good.splitlines()[1] + "\r2\n",
        "over-long cell": good.replace(str(row["plan"]), "x" * 200_000),
        "1_0 is no number": _csv([{**row, number: "1_0"}]),
        "duplicate header": good.replace(number, next(iter(row)), 1),
        "rows past the limit": _csv([row] * 10_001),
    }
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert (
            client.post("/invocations", content=good, headers={"content-type": "text/csv"}).status_code == 200
        )
        for what, text in cases.items():
            r = client.post("/invocations", content=text.encode(), headers={"content-type": "text/csv"})
            assert r.status_code == 400, (what, r.text[:300])
        head = {"inference-header-content-length": "²".encode()}  # bytes: non-ASCII on the wire
        r = client.post("/v2/models/churn/infer", content=orjson.dumps(_oip(row)), headers=head)
        assert r.status_code == 400


def test_error_bodies_quote_only_a_short_prefix_of_the_input(server: ServeProcess, served: Served) -> None:
    row = {k: (0.0 if v is None else v) for k, v in served.rows[0].items()}
    long = "q" * 100_000
    with httpx.Client(base_url=server.url, timeout=10) as client:
        misspelt = {**{k: v for k, v in row.items() if k != "age"}, long: 1}  # extra columns are ignored
        for body in ([{**row, "plan": long}], [misspelt], [{**row, "age": long}]):
            r = client.post("/predict", json=body)
            assert r.status_code == 400
            assert len(r.content) < 2_000 and "q" * 50 not in r.text


# --- SIGTERM under keep-alive load --------------------------------------------------------------------


def test_sigterm_under_keep_alive_load_fails_no_accepted_request(served: Served) -> None:
    with ServeProcess(served.root, served.env) as server:
        server.wait_ready()
        outcomes: dict[str, int] = {"ok": 0, "refused": 0, "failed": 0, "close": 0}
        stop = threading.Event()

        def hammer() -> None:
            """Keep-alive requests back to back until an answer says Connection: close (the drain)."""
            with httpx.Client(base_url=server.url, timeout=10) as client:
                while not stop.is_set():
                    try:
                        r = client.post("/predict", json=served.rows[:1])
                    except httpx.ConnectError:  # the listener is closed: never accepted
                        outcomes["refused"] += 1
                        return
                    except httpx.HTTPError:
                        outcomes["failed"] += 1
                        return
                    outcomes["ok" if r.status_code == 200 else "failed"] += 1
                    if r.headers.get("connection") == "close":
                        outcomes["close"] += 1
                        return

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(20)
        stop.set()
        for t in threads:
            t.join(15)
    assert code == 0
    assert outcomes["failed"] == 0, outcomes  # no request on a kept-alive connection reset or unanswered
    assert outcomes["close"] == 8, outcomes  # every connection was told to close by an answer


# --- supervised workers -------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return sorted(int(p) for p in out.split())


def _samples(text: str) -> dict[str, float]:
    return {s.rsplit(" ", 1)[0]: float(s.rsplit(" ", 1)[1]) for s in text.splitlines() if s and s[0] != "#"}


def test_a_killed_worker_is_restarted_and_metrics_are_one_view(served: Served) -> None:
    with ServeProcess(served.root, served.env, "--workers", "2") as server:
        server.wait_ready()
        deadline = time.monotonic() + 30
        while len(_children(server.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        first = _children(server.proc.pid)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(20):
                assert client.post("/predict", json=served.rows[:1]).status_code == 200
        os.kill(first[0], signal.SIGKILL)
        while (now := _children(server.proc.pid)) == first or len(now) < 2:
            assert time.monotonic() < deadline + 30, "the killed worker was not started again"
            time.sleep(0.1)
        server.wait_ready()
        counts = set()
        for _ in range(6):  # new connections: either worker may answer, every answer is the same view
            samples = _samples(httpx.get(f"{server.url}/metrics", headers={"connection": "close"}).text)
            counts.add(samples.get('prodml_requests_total{code="200",protocol="predict"}'))
            assert "process_cpu_seconds_total" in samples
        assert counts == {20.0}
        assert server.stop() == 0
        assert "died of signal 9; starting it again" in server.output()


# --- the registry, and the model reference ------------------------------------------------------------


def test_the_server_never_creates_a_registry_store(project_copy: Served) -> None:
    missing = project_copy.root / "nowhere.db"
    env = {**project_copy.env, "PRODML_TRACKING_URI": f"sqlite:///{missing}"}
    auth = {"authorization": "Bearer test-token-0123456789"}
    with ServeProcess(project_copy.root, env) as server:
        deadline, error = time.monotonic() + 120, None
        while error is None:  # until the registry poller has tried (and failed)
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.2)
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(f"{server.admin_url}/admin/status", headers=auth).json()
                error = status["last_registry_error"]
        assert "does not exist" in error
        assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert not missing.exists()


def test_an_invalid_model_reference_exits_2_at_start(served: Served) -> None:
    for ref in ("churn/abc", "churn@", "@champion"):
        with ServeProcess(served.root, served.env, "--model", ref) as server:
            assert server.proc.wait(60) == 2, server.output()


def test_a_cached_package_that_differs_from_the_registry_is_not_served(project_copy: Served) -> None:
    served = project_copy
    with ServeProcess(served.root, served.env) as server:  # fills the verified local cache
        server.wait_ready()
    cached = next((served.root / ".prodml/models").glob("*/1/schema.json"))
    cached.write_text(cached.read_text().replace('"nullable"', '"nullable" ', 1))  # and its refs.json agrees:
    refs = cached.parent.parent / "refs.json"
    import hashlib

    entry = orjson.loads(refs.read_bytes())
    for value in entry.values():
        value["digests"]["schema.json"] = hashlib.sha256(cached.read_bytes()).hexdigest()
    refs.write_bytes(orjson.dumps(entry))
    with ServeProcess(served.root, served.env) as server:
        server.wait_ready()
        deadline = time.monotonic() + 120
        while cached.read_text().count('"nullable" ') and time.monotonic() < deadline:
            time.sleep(0.2)  # the registry answered: its digests win, the package is loaded again
        assert '"nullable" ' not in cached.read_text()
        assert httpx.post(f"{server.url}/predict", json=served.rows[:1]).status_code == 200


# --- admin, API key, CORS, TLS ------------------------------------------------------------------------


def test_admin_bearer_tokens_follow_rfc_6750_and_failures_are_slowed(server: ServeProcess) -> None:
    status = f"{server.admin_url}/admin/status"
    token = "test-token-0123456789"
    for good in (f"Bearer {token}", f"bearer {token}", f"BEARER   {token}"):
        assert httpx.get(status, headers={"authorization": good}).status_code == 200
    refused = []
    for bad in (f"Basic {token}", f"Bearer{token}", f"Bearer {token}x", "Bearer", token):
        r = httpx.get(status, headers={"authorization": bad})
        refused.append(r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
    assert refused == [401] * 5
    assert server.output().count("admin call refused") >= 5


def test_a_short_admin_token_disables_the_admin_port(served: Served) -> None:
    with ServeProcess(served.root, {**served.env, "PRODML_ADMIN_TOKEN": "short"}) as server:
        server.wait_ready()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.admin_url}/admin/status")
        assert "needs at least 16 characters" in server.output()


def test_api_key_cors_and_no_docs(served: Served) -> None:
    env = {**served.env, "PRODML_API_KEY": "k" * 20}
    with ServeProcess(served.root, env, "--cors-origin", "https://app.example") as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.post("/predict", json=served.rows[:1]).status_code == 401
            assert (
                client.post("/predict", json=served.rows[:1], headers={"x-api-key": "k" * 20}).status_code
                == 200
            )
            assert client.get("/v2/health/ready").status_code == 200  # probes need no key
            pre = client.options(
                "/predict", headers={"origin": "https://app.example", "access-control-request-method": "POST"}
            )
            assert pre.headers["access-control-allow-origin"] == "https://app.example"
            other = client.get("/v2/health/live", headers={"origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers
            assert client.get("/docs").status_code == 404  # no page that loads scripts from a CDN


def test_tls_for_http_and_grpc(served: Served, tmp_path: Path) -> None:
    import grpc
    from tritonclient.grpc import service_pb2 as pb  # the same OIP protocol, as Triton's client ships it
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    with ServeProcess(served.root, served.env, "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        url = f"https://127.0.0.1:{server.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(
                    f"{url}/v2/health/ready", verify=ssl.create_default_context(cafile=cert), timeout=2
                )
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/v2/health/live", timeout=2)
        creds = grpc.ssl_channel_credentials(cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{server.grpc_port}", creds) as channel:
            ready = pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=10)
        assert ready.ready
