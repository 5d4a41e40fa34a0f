"""The server process: uvicorn for the inference and admin apps, graceful drain on SIGTERM, workers.

SIGTERM (or SIGINT): readiness turns 503 at once, new requests are still served for ``drain_delay_s``
(so a load balancer that polls readiness stops sending), then the listeners close and requests in flight
finish (up to ``drain_timeout_s``); the request log is flushed and the process exits 0.

With ``workers > 1`` the parent starts N worker processes that share the port (``SO_REUSEPORT``),
restarts any that dies and forwards SIGTERM to them. The admin port belongs to worker 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from prodml.core.errors import ConfigError, ProdmlError, Unavailable
from prodml.core.project import Monitor, Serve
from prodml.serve.cache import Cache, LRUCache, RedisCache
from prodml.serve.dataplane import DataPlane
from prodml.serve.guard import guarded
from prodml.serve.handlers import admin_routes, inference_routes
from prodml.serve.http import HttpApp
from prodml.serve.metrics import Metrics
from prodml.serve.model import ModelManager
from prodml.serve.online import OnlineOptions, online_features
from prodml.serve.poll import BusyPoll
from prodml.serve.reqlog import Recorder, RequestLog
from prodml.serve.sketch import fold, live_drift

__all__ = ["ServeOptions", "run"]

logger = logging.getLogger(__name__)
MIN_TOKEN = 16  # characters of PRODML_ADMIN_TOKEN


@dataclass
class ServeOptions:
    """Everything a server process needs; built by ``prodml serve`` from the project and the CLI."""

    serve: Serve
    ref: str | None
    package_dir: Path | None
    cache_dir: Path
    tracking_uri: str | None
    log_dir: Path | None
    admin_token: str | None
    poll_s: float = 30.0
    drain_delay_s: float = 0.5
    drain_timeout_s: float = 10.0
    read_timeout_s: float = 10.0  # for a request's head, and again for its body
    max_connections: int = 1000  # per worker process
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    tls: tuple[Path, Path] | None = None  # (certificate, key), PEM: HTTPS and gRPC over TLS
    monitor: Monitor | None = None  # live drift gauges (window_rows, thresholds); None: off
    online: OnlineOptions | None = None  # the online feature store, for requests carrying the entity key


class _Server:
    """A stock uvicorn server whose signals are ours (uvicorn would exit at once on SIGTERM)."""

    def __init__(self, app: Any, sock: socket.socket, options: ServeOptions) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                yield

        config = uvicorn.Config(
            app,
            http=guarded(
                max_connections=options.max_connections,
                max_head_bytes=64 << 10,
                head_timeout_s=options.read_timeout_s,
            ),
            ws="none",
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=int(options.drain_timeout_s),
            timeout_keep_alive=5,
            server_header=False,  # do not advertise the server software
            proxy_headers=False,  # nothing reads the client address; spares a middleware per request
            ssl_certfile=options.tls[0] if options.tls else None,
            ssl_keyfile=options.tls[1] if options.tls else None,
        )
        self.server = Quiet(config)
        self.sock = sock

    async def serve(self) -> None:
        await self.server.serve(sockets=[self.sock])

    def stop(self) -> None:
        self.server.should_exit = True


def _socket(host: str, port: int, *, reuse_port: bool, option: str = "--port") -> socket.socket:
    """A listening socket on ``host:port``; a port taken by another process is :class:`Unavailable`
    (exit 7) naming the port and the option that sets it, said before the server says it serves."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise Unavailable(
                f"port {port} on {host} is already in use", hint=f"stop what listens there or choose {option}"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}", hint=f"check {option}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _cache(serve: Serve) -> Cache | None:
    if not serve.cache.enabled:
        return None
    if serve.cache.redis_url:
        return RedisCache(serve.cache.redis_url, ttl_s=serve.cache.ttl_s)
    return LRUCache(max_items=serve.cache.max_items, ttl_s=serve.cache.ttl_s)


def _request_log(options: ServeOptions) -> Recorder | None:
    """Parquet parts under ``log_dir``, or a Kafka topic when ``serve.request_log.kafka`` is set."""
    if options.log_dir is None:
        return None
    kafka = options.serve.request_log.kafka
    if kafka is not None:
        from prodml.serve.kafka import KafkaRequestLog

        return KafkaRequestLog(kafka)
    return RequestLog(options.log_dir)


async def _main(options: ServeOptions, sock: socket.socket, admin_sock: socket.socket | None) -> None:
    metrics = Metrics()
    manager = ModelManager(
        ref=options.ref,
        package_dir=options.package_dir,
        cache_dir=options.cache_dir,
        tracking_uri=options.tracking_uri,
        serve=options.serve,
        metrics=metrics,
        poll_s=options.poll_s,
    )
    if options.monitor is not None:
        live_drift(manager, metrics, options.monitor)
    close_store = online_features(manager, metrics, options.online) if options.online else None
    log = _request_log(options)
    metrics.request_log = log
    plane = DataPlane(manager, metrics=metrics, cache=_cache(options.serve), log=log)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    def spawn(coro: Any) -> None:
        task = loop.create_task(coro)
        pending.add(task)
        task.add_done_callback(pending.discard)

    grpc_server = None
    if options.serve.grpc_port:
        from prodml.serve.grpc import GrpcServer

        serve = options.serve
        max_bytes = serve.max_body_bytes
        grpc_server = GrpcServer(
            plane, host=serve.host, port=serve.grpc_port, max_message_bytes=max_bytes, tls=options.tls
        )
        await grpc_server.start()
        # health follows the model: SERVING the moment one is swapped in (the only way one arrives)
        manager.on_swap.append(lambda _: spawn(grpc_server.set_serving(plane.ready())))
    await manager.start()
    if manager.ref is not None:
        await plane.router.from_cache()  # the split this server last applied, until the registry answers
    app = HttpApp(
        inference_routes(plane),
        title="prodml inference server",
        max_body_bytes=options.serve.max_body_bytes,
        body_timeout_s=options.read_timeout_s,
        draining=lambda: plane.draining,
        api_key=options.api_key,
        cors_origins=options.cors_origins,
    )
    servers = [_Server(_polled(app, options.serve.busy_poll_us / 1e6), sock, options)]
    if admin_sock is not None and options.admin_token:  # (run checked its length and host)
        admin = HttpApp(
            admin_routes(plane, options.admin_token, time.time()),
            title=None,
            max_body_bytes=1 << 16,
            body_timeout_s=options.read_timeout_s,
            draining=lambda: plane.draining,
        )
        servers.append(_Server(admin, admin_sock, options))

    def drain() -> None:
        if plane.draining:
            return
        plane.draining = True
        if grpc_server is not None:
            spawn(grpc_server.set_serving(False))
        logger.info("draining: readiness is 503; closing listeners in %.1f s", options.drain_delay_s)

        def stop_all() -> None:
            # no new connections; requests already on an accepted one are read and answered (each with
            # Connection: close) before uvicorn closes the idle ones
            for server in (srv for s in servers for srv in s.server.servers):
                server.close()
            for s in servers:
                loop.call_later(0.2, s.stop)

        loop.call_later(options.drain_delay_s, stop_all)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, drain)

    flushing: list[asyncio.Task[list[Path]]] = []  # the log flush in progress: shutdown waits for it

    async def housekeeping() -> None:
        tick = 0
        while True:
            await asyncio.sleep(0.1)
            tick += 1
            fold(manager)  # the live drift sketch bins what it kept
            if log is None:
                continue
            await log.absorb_async()  # what the sink takes in batches (Kafka), 64 requests at a time
            metrics.sync_log()
            # a part every 10 s, or sooner once 10k rows wait (at 100-row requests rows come fast: the
            # log holds 50k at most and drops, counted, beyond)
            if tick % 100 == 0 or log.pending >= 10_000:
                flushing[:] = [loop.create_task(log.flush_async())]
                try:
                    await asyncio.shield(flushing[0])
                except Exception:  # a full disk must not stop the log, nor the shutdown's final flush
                    logger.exception("request log flush failed; its rows are lost, logging goes on")

    chores = loop.create_task(housekeeping())
    try:
        await asyncio.gather(*(s.serve() for s in servers))
    finally:
        chores.cancel()
        # rows already handed to a flush are written before the final one (a failure was logged already)
        await asyncio.gather(*flushing, return_exceptions=True)
        if grpc_server is not None:
            await grpc_server.stop(options.drain_timeout_s)
        await manager.stop()
        if close_store is not None:
            close_store()
        if log is not None:
            log.flush()


def _polled(app: HttpApp, window_s: float) -> Any:
    """``app`` with busy polling armed on each request and answer (``serve.busy_poll_us``; 0: off)."""
    if window_s <= 0:
        return app
    poll = BusyPoll(asyncio.get_running_loop(), window_s)

    async def polled(scope: Any, receive: Any, send: Any) -> None:
        poll.arm()
        await app(scope, receive, send)
        poll.arm()

    return polled


def _worker(options: ServeOptions, fd: int, admin_fd: int | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handlers are not this process's
    sock = socket.socket(fileno=fd)
    admin_sock = socket.socket(fileno=admin_fd) if admin_fd is not None else None
    try:
        _run_loop(options, sock, admin_sock)
    except ProdmlError as exc:  # said once, plainly; the parent exits with the worker's code
        print(f"error: worker {os.getpid()}: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)


def _run_loop(options: ServeOptions, sock: socket.socket, admin_sock: socket.socket | None) -> None:
    import uvloop

    uvloop.run(_main(options, sock, admin_sock))


def run(options: ServeOptions, on_listening: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return; ``on_listening`` is called once every port is
    bound (a taken port raises :class:`Unavailable` first, exit 7).

    With several workers the parent supervises them: a worker that dies (killed, crashed) is started
    again and logged; SIGTERM is passed to every worker and the parent exits 0 once all have drained. A
    worker that cannot start says why on stderr, and the process exits with its code.
    """
    serve = options.serve
    if options.admin_token and len(options.admin_token) < MIN_TOKEN:
        logger.warning("admin port disabled: PRODML_ADMIN_TOKEN needs at least %d characters", MIN_TOKEN)
        options = replace(options, admin_token=None)
    if options.admin_token and serve.admin_host not in ("127.0.0.1", "::1", "localhost"):
        logger.warning(
            "the admin port is bound to %s, beyond loopback: keep it off public networks", serve.admin_host
        )
    if serve.grpc_port:  # gRPC binds in each worker (SO_REUSEPORT, which would share a taken port): ask now
        _socket(serve.host, serve.grpc_port, reuse_port=False, option="--grpc-port").close()
    sock = _socket(serve.host, serve.port, reuse_port=serve.workers > 1)
    try:
        admin_sock = (
            _socket(serve.admin_host, serve.admin_port, reuse_port=False, option="--admin-port")
            if options.admin_token
            else None
        )
    except ProdmlError:
        sock.close()
        raise
    if on_listening is not None:
        on_listening()
    if serve.workers == 1:
        _run_loop(options, sock, admin_sock)
        return
    # fork, not spawn: the children inherit the listening sockets; nothing is loaded in the parent yet.
    ctx = multiprocessing.get_context("fork")

    def start(i: int) -> Any:
        admin_fd = admin_sock.fileno() if (admin_sock is not None and i == 0) else None
        proc = ctx.Process(target=_worker, args=(options, sock.fileno(), admin_fd), daemon=False)
        proc.start()
        return proc

    procs = {i: start(i) for i in range(serve.workers)}
    stopping, failed = False, 0

    def forward(sig: int, _: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while procs:
        wait([p.sentinel for p in procs.values()])
        for i, proc in list(procs.items()):
            if proc.is_alive():
                continue
            del procs[i]
            if proc.exitcode == 0 or stopping:
                continue
            if proc.exitcode > 0:  # it could not start (it said why): not started again
                failed = max(failed, proc.exitcode)
                continue
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
            logger.warning(
                "worker %d (pid %d) died of signal %d; starting it again", i, proc.pid, -proc.exitcode
            )
            procs[i] = start(i)
    if failed:
        sys.exit(failed)
