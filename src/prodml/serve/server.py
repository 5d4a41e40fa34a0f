"""The server process: uvicorn for the inference and admin apps, graceful drain on SIGTERM, workers.

SIGTERM (or SIGINT): readiness turns 503 at once, new requests are still served for ``drain_delay_s``
(so a load balancer that polls readiness stops sending), then the listeners close and requests in flight
finish (up to ``drain_timeout_s``); the request log is flushed and the process exits 0.

With ``workers > 1`` the parent starts N worker processes that share the port (``SO_REUSEPORT``), and
forwards SIGTERM to them. The admin port belongs to worker 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prodml.core.errors import ProdmlError
from prodml.core.project import Serve
from prodml.serve.cache import Cache, LRUCache, RedisCache
from prodml.serve.dataplane import DataPlane
from prodml.serve.handlers import FastPath
from prodml.serve.http import ServerState, admin_app, inference_app
from prodml.serve.lean import lean_protocol
from prodml.serve.metrics import Metrics
from prodml.serve.model import ModelManager
from prodml.serve.poll import BusyPoll
from prodml.serve.reqlog import Recorder, RequestLog
from prodml.serve.validation import warm_arrow

__all__ = ["ServeOptions", "run"]

logger = logging.getLogger(__name__)


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


class _Server:
    """A uvicorn server whose signals are ours (uvicorn would exit at once on SIGTERM)."""

    def __init__(
        self, app: Any, sock: socket.socket, drain_timeout_s: float, poll: BusyPoll | None = None
    ) -> None:
        import uvicorn

        # the inference app's POST routes are answered by the protocol itself (see prodml.serve.lean)
        self.protocol = lean_protocol(app, poll) if isinstance(app, FastPath) else None

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                yield

        config = uvicorn.Config(
            app,
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=int(drain_timeout_s),
            timeout_keep_alive=5,
            server_header=False,  # do not advertise the server software
            proxy_headers=False,  # nothing reads the client address; spares a middleware per request
            http=self.protocol or "auto",
        )
        self.server = Quiet(config)
        self.sock = sock

    def backlog(self) -> int:
        """HTTP requests this server holds (started, not yet answered): those of this loop turn that the
        lean protocol has not stepped yet, and uvicorn's task set (0 if a uvicorn release renames it:
        requests then run inline, which is correct, only slower)."""
        state = getattr(self.server, "server_state", None)
        held = len(getattr(state, "tasks", ()))
        return held + self.protocol.turn.active if self.protocol is not None else held

    async def serve(self) -> None:
        await self.server.serve(sockets=[self.sock])

    def stop(self) -> None:
        self.server.should_exit = True


def _socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
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
    warm_arrow()  # not in the first request (with the request log off, nothing else pays it)
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
    log = _request_log(options)
    metrics.request_log = log
    plane = DataPlane(manager, metrics=metrics, cache=_cache(options.serve), log=log)
    state = ServerState(plane, max_body_bytes=options.serve.max_body_bytes)
    grpc_server = None
    pending: set[asyncio.Task[None]] = set()
    if options.serve.grpc_port:
        from prodml.serve.grpc import GrpcServer

        grpc = GrpcServer(
            plane,
            host=options.serve.host,
            port=options.serve.grpc_port,
            max_message_bytes=options.serve.max_body_bytes,
            draining=lambda: state.draining,
        )
        await grpc.start()

        def health_follows(_: object) -> None:
            # SERVING the moment a model is swapped in (the only way one arrives)
            task = asyncio.get_running_loop().create_task(grpc.set_serving(not state.draining))
            pending.add(task)
            task.add_done_callback(pending.discard)

        manager.on_swap.append(health_follows)
        grpc_server = grpc
    await manager.start()
    _tune_gc()
    poll = BusyPoll(asyncio.get_running_loop(), options.serve.busy_poll_us / 1e6)
    servers = [_Server(inference_app(state), sock, options.drain_timeout_s, poll)]
    http, grpc_servicer = servers[0], grpc_server.servicer if grpc_server is not None else None
    plane.backlog = lambda: http.backlog() + (grpc_servicer.active if grpc_servicer is not None else 0)
    if admin_sock is not None:
        servers.append(_Server(admin_app(state, options.admin_token), admin_sock, options.drain_timeout_s))
    loop = asyncio.get_running_loop()

    def drain() -> None:
        if state.draining:
            return
        state.draining = True
        if grpc_server is not None:
            task = loop.create_task(grpc_server.set_serving(False))
            pending.add(task)
            task.add_done_callback(pending.discard)
        logger.info("draining: readiness is 503; closing listeners in %.1f s", options.drain_delay_s)

        def stop_all() -> None:
            for s in servers:
                s.stop()

        loop.call_later(options.drain_delay_s, stop_all)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, drain)

    flushing: list[asyncio.Task[list[Path]]] = []  # the log flush in progress: shutdown waits for it

    async def housekeeping() -> None:
        tick = 0
        while log is not None:
            await asyncio.sleep(0.1)
            tick += 1
            await log.absorb_async()  # what the sink takes in batches (Kafka), 64 requests at a time
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
        if log is not None:
            log.flush()


def _tune_gc() -> None:
    """Keep the interpreter's housekeeping off the request path.

    What start-up loaded (modules, the model, FastAPI's routes) is frozen out of every future collection,
    and young collections run every 50k net allocations instead of 700 — requests free what they
    allocate, so few objects survive. Threads (the runtime's, the log writer's) hand the GIL back to the
    event loop within 1 ms instead of Python's default 5 ms, which would otherwise show up in p99.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sys.setswitchinterval(0.001)


def _worker(options: ServeOptions, fd: int, admin_fd: int | None) -> None:
    sock = socket.socket(fileno=fd)
    admin_sock = socket.socket(fileno=admin_fd) if admin_fd is not None else None
    try:
        _run_loop(options, sock, admin_sock)
    except ProdmlError as exc:  # said once, plainly; the parent exits with the worker's code
        print(f"error: worker {os.getpid()}: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)


def _run_loop(options: ServeOptions, sock: socket.socket, admin_sock: socket.socket | None) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(_main(options, sock, admin_sock))
    else:
        uvloop.run(_main(options, sock, admin_sock))


def run(options: ServeOptions) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return.

    With several workers, a worker that cannot start says why on stderr and the process exits with its
    code once the others have stopped.
    """
    serve = options.serve
    sock = _socket(serve.host, serve.port, reuse_port=serve.workers > 1)
    admin_sock = (
        _socket(serve.admin_host, serve.admin_port, reuse_port=False) if options.admin_token else None
    )
    if serve.workers == 1:
        _run_loop(options, sock, admin_sock)
        return
    # fork, not spawn: the children inherit the listening sockets; nothing is loaded in the parent yet.
    ctx = multiprocessing.get_context("fork")
    procs = []
    for i in range(serve.workers):
        admin_fd = admin_sock.fileno() if (admin_sock is not None and i == 0) else None
        proc = ctx.Process(target=_worker, args=(options, sock.fileno(), admin_fd), daemon=False)
        proc.start()
        procs.append(proc)

    def forward(sig: int, _: object) -> None:
        for proc in procs:
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    failed = [proc.exitcode for proc in procs if proc.exitcode]
    if failed:  # a worker that could not start (it said why), or one killed by a signal (negative)
        sys.exit(max(failed) if max(failed) > 0 else 1)
