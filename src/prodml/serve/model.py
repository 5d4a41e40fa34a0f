"""Model lifecycle: resolve ``NAME@alias`` in the registry, keep a verified local cache, swap on change.

Start-up never waits for the registry: the last good version in the local cache (``refs.json`` records
which version an alias pointed to, with its digests) is verified and served at once, and a background
task talks to the registry (importing mlflow off the start path), downloads what changed, verifies it
and swaps it in. A swap replaces one reference: requests in flight finish on the version they started
with, so a swap fails no request. A registry that does not answer changes nothing; the poll retries
with a capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from prodml.core.errors import ConfigError, NotFound, ProdmlError, Unavailable
from prodml.core.project import Serve
from prodml.export.cache import PackageCache
from prodml.export.package import ModelPackage, load_package
from prodml.registry.mlflow import parse_ref
from prodml.serve.labels import Labels
from prodml.serve.metrics import Metrics
from prodml.serve.runtime import MicroBatcher, Runtime
from prodml.serve.validation import Validator

__all__ = ["LoadedModel", "ModelManager"]

logger = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0


@dataclass
class LoadedModel:
    """One servable version: its runtime, validator and batcher."""

    name: str
    version: str
    runtime: Runtime
    validator: Validator
    batcher: MicroBatcher
    explain_baseline: Any = field(
        default=None, repr=False, compare=False
    )  # explain's row, built on first use
    sketch: Any = field(default=None, repr=False, compare=False)  # live drift (prodml.serve.sketch)
    online: Any = field(default=None, repr=False, compare=False)  # online features (prodml.serve.online)

    @property
    def package(self) -> ModelPackage:
        return self.runtime.package

    @cached_property
    def labels(self) -> Labels:
        """Class indices → class names (the label contract, :mod:`prodml.serve.labels`)."""
        return Labels(self.runtime.classes)


async def _daemon(call: Callable[[], Any]) -> Any:
    """``call()`` in a daemon thread: a registry that hangs (or an mlflow import that takes its time)
    must not hold the process's exit the way ``asyncio.to_thread``'s executor threads do."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: Any, failed: bool) -> None:
        if not future.done():
            (future.set_exception if failed else future.set_result)(outcome)

    def run() -> None:
        try:
            outcome, failed = call(), False
        except BaseException as exc:
            outcome, failed = exc, True
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, outcome, failed)

    threading.Thread(target=run, name="prodml-registry", daemon=True).start()
    return await future


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a container's
    ``limits.cpu``), which ``os.cpu_count()`` ignores."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
    except (OSError, ValueError):
        return count
    if quota == "max":
        return count
    try:
        return max(1, min(count, int(int(quota) // int(period))))
    except (ValueError, ZeroDivisionError):
        return count


class ModelManager:
    """Owns the served model.

    Args:
        ref: ``NAME@alias`` / ``NAME/VERSION`` / ``NAME`` in the registry, or None with ``package_dir``.
        package_dir: serve this local package instead (digests computed at start: trusted local files).
        cache_dir: the verified local package cache.
        tracking_uri: the registry's MLflow URI.
        serve: the project's ``serve`` settings (batching, limits).
        poll_s: how often the registry is asked whether the alias moved.
    """

    def __init__(
        self,
        *,
        ref: str | None,
        package_dir: Path | None,
        cache_dir: Path,
        tracking_uri: str | None,
        serve: Serve,
        metrics: Metrics,
        poll_s: float = 30.0,
    ) -> None:
        if ref is not None:  # a reference that can never resolve stops the server at start (exit 2)
            name, alias, _ = parse_ref(ref)
            if not name or alias == "" or "/" in name:
                raise ConfigError(f"model reference {ref!r} is not NAME@alias, NAME/VERSION or NAME")
        self.ref = ref
        self.package_dir = package_dir
        self.cache_dir = cache_dir
        self.tracking_uri = tracking_uri
        self.serve = serve
        self.metrics = metrics
        self.poll_s = poll_s
        self.cache = PackageCache(cache_dir)
        self.current: LoadedModel | None = None
        self.on_swap: list[Callable[[LoadedModel], None]] = []  # e.g. gRPC health follows the model
        self.on_check: list[Callable[[], Awaitable[None]]] = []  # after each registry check (routing)
        self.on_build: list[Callable[[LoadedModel], None]] = []  # per version: drift sketch, online step
        self.last_error: str | None = None
        self.last_check: float | None = None  # when the registry last answered
        self._registry: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # --- start and stop ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what can be loaded without the registry, then poll it in the background."""
        if self.package_dir is not None:
            package = load_package(self.package_dir, None)  # a local directory: trusted, read once
            self._swap(self._build(package, name=self._name(), version="local"))
            return
        try:
            cached = self._load_cached()
        except ProdmlError as exc:
            logger.warning("local model cache unusable: %s", exc)
            cached = None
        if cached is not None:
            self._swap(cached)
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.current is not None:
            await self.current.batcher.close()

    async def reload(self) -> str:
        """Ask the registry now (admin endpoint); return the version served afterwards."""
        if self.package_dir is None:
            await self._check()
        return self.current.version if self.current else ""

    # --- internals --------------------------------------------------------------------------------

    def _name(self) -> str:
        if self.ref is None:
            return str(self.package_dir.name if self.package_dir else "model")
        return parse_ref(self.ref)[0]

    def _alias_key(self) -> str:
        return self.ref.removeprefix("models:/") if self.ref else "local"

    def _load_cached(self) -> LoadedModel | None:
        found = self.cache.load(self._name(), self._alias_key())
        if found is None:
            return None
        version, package = found
        logger.info("serving cached %s version %s until the registry answers", self._name(), version)
        return self._build(package, name=self._name(), version=version)

    def _build(self, package: ModelPackage, *, name: str, version: str) -> LoadedModel:
        runtime = Runtime(package, lone_threads=self.lone_threads())
        validator = Validator(
            package.schema,
            unknown_category=self.serve.unknown_category,
            max_rows=self.serve.max_rows,
            extra_columns=self.serve.extra_columns,
            out_of_range=self.serve.out_of_range,
        )
        batcher = MicroBatcher(
            runtime.run,
            max_rows=self.serve.max_batch_size,
            max_wait_s=self.serve.max_wait_ms / 1000,
            on_batch=self.metrics.batch_rows.observe,
        )
        model = LoadedModel(name, version, runtime, validator, batcher)
        for hook in self.on_build:
            hook(model)
        return model

    def lone_threads(self) -> int:
        """ONNX Runtime threads for a large lone request: as set, else this worker's share of the cores."""
        if self.serve.lone_threads is not None:
            return self.serve.lone_threads
        return max(1, min(4, usable_cpus() // self.serve.workers))

    def _swap(self, model: LoadedModel) -> None:
        old = self.current
        self.current = model
        if old is not None:
            self.metrics.model.labels(old.name, old.version).set(0)
            self.metrics.swaps.inc()
            # requests hold their model reference; the old runtime thread ends once its queue drains
            old.batcher.retire()
        self.metrics.model.labels(model.name, model.version).set(1)
        logger.info("serving %s version %s", model.name, model.version)
        for callback in self.on_swap:
            callback(model)

    def _resolve_and_fetch(self) -> tuple[str, ModelPackage | None, dict[str, str]]:
        """Blocking registry work (in a thread): resolve the ref; download + verify when it moved."""
        if self._registry is None:
            from prodml.registry.mlflow import Registry

            assert self.tracking_uri is not None
            store = Path(self.tracking_uri.removeprefix("sqlite:///"))
            if self.tracking_uri.startswith("sqlite:///") and not store.is_file():  # never create one
                raise Unavailable(
                    f"the registry database {store} does not exist", hint="check PRODML_TRACKING_URI"
                )
            self._registry = Registry(self.tracking_uri)
        assert self.ref is not None
        mv = self._registry.resolve(self.ref)
        current = self.current
        if current is not None and (current.version, current.package.digests) == (mv.version, mv.digests):
            return mv.version, None, mv.digests
        # a new version, or a cached one whose files are not what the registry recorded: load (verified
        # against the registry's digests, downloaded again when the cache does not match them)
        return mv.version, self._registry.load(mv, self.cache_dir), mv.digests

    async def _check(self) -> None:
        async with self._lock:
            try:
                version, package, digests = await _daemon(self._resolve_and_fetch)
            except (ProdmlError, OSError) as exc:
                self.last_error = str(exc).splitlines()[0]
                raise
            self.last_error = None
            self.last_check = time.time()
            if package is not None:
                model = await asyncio.to_thread(self._build, package, name=self._name(), version=version)
                self._swap(model)
                self.cache.remember(self._name(), self._alias_key(), version, digests)
            for hook in self.on_check:
                await hook()

    async def _poll(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self._check()
                backoff = 1.0
                delay = self.poll_s
            except (ProdmlError, OSError) as exc:
                logger.warning(
                    "registry check failed (%s); serving %s",
                    exc,
                    self.current.version if self.current else "nothing",
                )
                delay = backoff
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            except Exception:  # a bug must not kill the poller
                logger.exception("registry poll crashed; retrying")
                delay = backoff
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            await asyncio.sleep(delay)

    def get(self, name: str | None = None, version: str | None = None) -> LoadedModel:
        """The served model, checked against a requested name and version."""
        model = self.current
        if model is None:
            raise Unavailable(
                "no model is loaded yet", hint=self.last_error or "the registry has not answered"
            )
        if name is not None and name != model.name:
            raise NotFound(f"model '{name}' is not served here", hint=f"this server serves '{model.name}'")
        if version is not None and version != model.version:
            raise NotFound(
                f"version {version} of '{model.name}' is not served here",
                hint=f"this server serves version {model.version}",
            )
        return model
