"""The worker process: the data plane (model manager, metrics, request log) and one :class:`Worker`.

``run`` with ``workers > 1`` forks that many worker processes, all in the same consumer group, so Kafka
splits the input partitions among them (and among workers on other hosts); a worker that dies is
restarted (with a capped backoff) and its partitions go to the others meanwhile. SIGTERM to the parent is
forwarded: each worker drains and commits, and the parent exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from prodml.core.errors import ProdmlError
from prodml.core.project import Serve
from prodml.serve import DataPlane, ModelManager
from prodml.serve.metrics import Metrics
from prodml.serve.reqlog import Recorder, RequestLog
from prodml.stream.worker import StreamOptions, Worker

__all__ = ["RunOptions", "run", "run_worker"]

logger = logging.getLogger(__name__)
MAX_RESTART_BACKOFF_S = 30.0


@dataclass
class RunOptions:
    """A worker process: the stream, the model and where its metrics and request log go."""

    stream: StreamOptions
    serve: Serve
    ref: str | None
    package_dir: Path | None
    cache_dir: Path
    tracking_uri: str | None
    log_dir: Path | None = None  # the request log (Parquet parts; Kafka when serve.request_log.kafka is set)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # worker i serves /metrics on metrics_port + i
    workers: int = 1
    poll_s: float = 30.0


def _request_log(options: RunOptions) -> Recorder | None:
    if options.log_dir is None:
        return None
    if options.serve.request_log.kafka is not None:
        from prodml.serve.kafka import KafkaRequestLog

        return KafkaRequestLog(options.serve.request_log.kafka)
    return RequestLog(options.log_dir)


async def _main(options: RunOptions, index: int) -> None:
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
    plane = DataPlane(manager, metrics=metrics, log=log)  # no cache: a batch's rows are not a repeat
    worker = Worker(plane, options.stream, index=index)
    if options.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(options.metrics_port + index, options.metrics_host, registry=metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await manager.start()
    # what start-up loaded stays out of every later collection; a batch frees what it allocates
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    chores = loop.create_task(_housekeeping(log))
    try:
        await worker.run(stop)
    finally:
        chores.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chores
        await manager.stop()
        if log is not None:
            log.flush()
    logger.info("worker %d stopped after %d batches", index, worker.batches)


async def _housekeeping(log: Recorder | None) -> None:
    """The request log's periodic hand-over and flush, as the server does it."""
    tick = 0
    while log is not None:
        await asyncio.sleep(0.1)
        tick += 1
        await log.absorb_async()
        if tick % 100 == 0 or log.pending >= 10_000:
            try:
                await log.flush_async()
            except Exception:  # a full disk must not stop the worker
                logger.exception("request log flush failed; its rows are lost, logging goes on")


def run_worker(options: RunOptions, index: int = 0) -> None:
    """One worker in this process, until SIGTERM/SIGINT."""
    asyncio.run(_main(options, index))


def _child(options: RunOptions, index: int) -> None:
    try:
        run_worker(options, index)
    except ProdmlError as exc:
        print(f"error: stream worker {index} ({os.getpid()}): {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)


def run(options: RunOptions) -> None:
    """Run ``options.workers`` workers until SIGTERM/SIGINT; restart any that dies."""
    if options.workers == 1:
        run_worker(options)
        return
    ctx = multiprocessing.get_context("fork")  # nothing is loaded in the parent yet
    procs: dict[int, multiprocessing.process.BaseProcess] = {}
    stopping = False
    backoff = [1.0] * options.workers

    def start(i: int) -> None:
        proc = ctx.Process(target=_child, args=(options, i), daemon=False)
        proc.start()
        procs[i] = proc

    def forward(sig: int, _: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(options.workers):
        start(i)
    while not stopping:
        time.sleep(0.2)
        for i, proc in list(procs.items()):
            if proc.exitcode is not None and not stopping:
                if proc.exitcode > 0:  # it said why (bad settings): restarting would fail the same way
                    logger.error("stream worker %d exited with %d; stopping", i, proc.exitcode)
                    forward(signal.SIGTERM, None)
                    break
                logger.warning(
                    "stream worker %d died (%s); restarting in %.0f s", i, proc.exitcode, backoff[i]
                )
                time.sleep(backoff[i])
                backoff[i] = min(backoff[i] * 2, MAX_RESTART_BACKOFF_S)
                if stopping:  # SIGTERM came during the backoff: a new worker would never hear it
                    break
                start(i)
    for proc in procs.values():
        proc.join()
    failed = [proc.exitcode for proc in procs.values() if proc.exitcode and proc.exitcode > 0]
    if failed:
        sys.exit(failed[0])
