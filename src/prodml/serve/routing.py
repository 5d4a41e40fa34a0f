"""Routing by the deployment spec: which loaded version answers a request.

After each registry check the model manager calls :meth:`Router.refresh`, which reads the deployment spec
(``prodml.registry.deployment``) in a daemon thread, loads and verifies every serving variant it names
(versions already loaded are reused) and swaps in a new routing :class:`Table` — one reference, so
requests in flight finish on the model they started with and a change fails no request. A spec that
cannot be read or loaded leaves the current table serving; without a spec the champion takes everything.

A request's variant is chosen by its stickiness key — the spec's request field (first row) or header —
as ``sha256(key) mod 10000`` against the cumulative weights in basis points, so one key always gets one
variant on every replica; a request without a key is placed at random. The chosen variant is counted
in ``prodml_variant_*`` metrics and named in every response.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from prodml.core.errors import NotFound, ProdmlError
from prodml.export.drift import prediction_score
from prodml.serve.shadow import Mirror

if TYPE_CHECKING:
    from prodml.registry.deployment import Deployment
    from prodml.serve.metrics import Metrics
    from prodml.serve.model import LoadedModel, ModelManager

__all__ = ["HEADERS", "PRIMARY", "Router", "Table", "bucket"]

logger = logging.getLogger(__name__)

PRIMARY = "primary"
SCALE = 10_000  # routing resolution: basis points
SCORE_BINS = 20  # prediction-score histogram per variant (probabilities in [0, 1])
# the request's headers, set by the HTTP transport (for a header stickiness key)
HEADERS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("headers", default=None)
# the variant chosen for the request in this context: (variant, version); read when it is counted
CHOSEN: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("chosen", default=None)


def bucket(key: str) -> int:
    """The routing bucket in [0, 10000) of a stickiness key: the same on every replica and run."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % SCALE


@dataclass(frozen=True)
class Table:
    """One revision of the spec, loaded: variants with their cumulative upper bounds in basis points."""

    revision: int
    names: tuple[str, ...]
    models: tuple[LoadedModel, ...]
    bounds: tuple[int, ...]
    field: str | None
    header: str | None
    shadow: tuple[str, LoadedModel, int] | None = None  # (variant, model, sample in basis points)

    def choose(self, key: str | None) -> int:
        point = bucket(key) if key is not None else random.randrange(SCALE)  # noqa: S311 - a traffic split, not a secret
        for i, bound in enumerate(self.bounds):
            if point < bound:
                return i
        return len(self.bounds) - 1


class Router:
    """The routing table of one server process (see the module docstring)."""

    def __init__(self, manager: ModelManager, metrics: Metrics) -> None:
        self.manager = manager
        self.metrics = metrics
        self.table: Table | None = None
        self.last_error: str | None = None
        self.mirror = Mirror(metrics, self.observe)

    # --- the request path ----------------------------------------------------------------------------

    def pick(
        self, columns: Mapping[str, Sequence[Any] | np.ndarray], name: str | None, version: str | None
    ) -> tuple[str, LoadedModel]:
        """The variant and model for one request; a request for an explicit version gets that version if
        the deployment serves it."""
        table = self.table
        if table is None:
            model = self.manager.get(name, version)
            chosen = (PRIMARY, model.version)
        else:
            if name is not None and name != table.models[0].name:
                self.manager.get(name)  # raises NotFound naming the served model
            if version is not None:
                i = next((j for j, m in enumerate(table.models) if m.version == version), -1)
                if i < 0:
                    raise NotFound(
                        f"version {version} of '{table.models[0].name}' is not served here",
                        hint="served: " + ", ".join(m.version for m in table.models),
                    )
            else:
                i = table.choose(self._key(table, columns))
            model = table.models[i]
            chosen = (table.names[i], model.version)
        CHOSEN.set(chosen)
        return chosen[0], model

    @staticmethod
    def _key(table: Table, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> str | None:
        if table.field is not None:
            values = columns.get(table.field)
            return _text(values[0]) if values is not None and len(values) > 0 else None
        if table.header is not None:
            headers = HEADERS.get()
            return None if headers is None else headers.get(table.header)
        return None

    def observe(self, variant: str, model: LoadedModel, outputs: list[np.ndarray]) -> None:
        """Count the request's prediction scores per variant (the canary's prediction-shift check)."""
        if self.table is None or model.runtime.task not in ("binary", "multiclass"):
            return
        scores = prediction_score(outputs[-1])
        bins = np.bincount(np.clip((scores * SCORE_BINS).astype(np.int64), 0, SCORE_BINS - 1))
        counter = self.metrics.variant_scores
        for b in np.flatnonzero(bins):
            counter.labels(variant, model.version, str(int(b))).inc(int(bins[b]))

    def mirror_request(
        self, columns: Mapping[str, Sequence[Any] | np.ndarray], outputs: list[np.ndarray]
    ) -> None:
        """Offer the request to the shadow when the spec has one and the sample takes it (off the
        response path: see :mod:`prodml.serve.shadow`)."""
        table = self.table
        if table is None or table.shadow is None:
            return
        variant, model, sample = table.shadow
        if sample >= SCALE or random.randrange(SCALE) < sample:  # noqa: S311 - a sample, not a secret
            self.mirror.offer(variant, model, columns, outputs)

    def done(self, status: int | str, seconds: float) -> None:
        """Count one answered request under its variant (when one was chosen)."""
        chosen = CHOSEN.get()
        if chosen is not None:
            metrics = self.metrics
            metrics.variant_requests.labels(*chosen, str(status)).inc()
            metrics.variant_latency.labels(*chosen).observe(seconds)

    def describe(self) -> dict[str, Any]:
        """The routing in force (admin status)."""
        table = self.table
        if table is None:
            return {"revision": None, "variants": [], "last_error": self.last_error}
        lows = (0, *table.bounds[:-1])
        return {
            "revision": table.revision,
            "variants": [
                {"name": n, "version": m.version, "weight": (b - a) / 100}
                for n, m, a, b in zip(table.names, table.models, lows, table.bounds, strict=True)
            ],
            "last_error": self.last_error,
        }

    # --- following the spec --------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the spec and swap in its table (called after each registry check, under its lock)."""
        from prodml.serve.model import _daemon

        try:
            spec, loaded = await _daemon(self._fetch)
            table = None if spec is None else await asyncio.to_thread(self._build, spec, loaded)
        except (ProdmlError, OSError) as exc:
            self.last_error = str(exc).splitlines()[0]
            logger.warning("deployment spec not applied (%s); routing unchanged", self.last_error)
            return
        self.last_error = None
        old = self.table
        if (old is None) != (table is None) or (
            old is not None
            and table is not None
            and (old.revision, old.models, old.shadow) != (table.revision, table.models, table.shadow)
        ):
            self.table = table
            if table is None:
                logger.info("no deployment spec: the champion takes every request")
            else:
                shares = ", ".join(
                    f"{v['name']} v{v['version']} {v['weight']:g}%" for v in self.describe()["variants"]
                )
                logger.info("deployment revision %d: %s", table.revision, shares)
            self._retire(old, table)
            await asyncio.to_thread(self._remember, spec, table)  # on a change only: no write per check

    def _loaded(self) -> dict[str, LoadedModel]:
        table = self.table
        found = {m.version: m for m in (table.models if table else ())}
        if table is not None and table.shadow is not None:
            found[table.shadow[1].version] = table.shadow[1]
        current = self.manager.current
        if current is not None:
            found[current.version] = current
        return found

    def _fetch(self) -> tuple[Deployment | None, dict[str, Any]]:
        """Blocking registry work: the spec, and each serving variant's model (reused) or verified package."""
        from prodml.registry.deployment import DeploymentStore

        registry = self.manager._registry
        if registry is None:
            return None, {}
        name = self.manager._name()
        spec = DeploymentStore(registry, name).read()
        if spec is None:
            return None, {}
        have = self._loaded()
        loaded: dict[str, Any] = {}
        for variant in spec.variants:
            mv = registry.get(name, variant.version)
            model = have.get(variant.version)
            if model is not None and model.package.digests == mv.digests:
                loaded[variant.version] = model
            else:
                loaded[variant.version] = registry.load(mv, self.manager.cache_dir)
        return spec, loaded

    def _remember(self, spec: Deployment | None, table: Table | None) -> None:
        """Keep the applied spec, with the digests of the packages its table serves, in the local cache:
        a restart routes by it until the registry answers (:meth:`from_cache`)."""
        models = (*table.models, *([table.shadow[1]] if table.shadow else [])) if table else ()
        digests = {m.version: m.package.digests for m in models}
        self.manager.cache.remember_spec(self.manager._name(), spec.to_json() if spec else None, digests)

    async def from_cache(self) -> None:
        """Route by the spec this server last applied (the local cache) until the registry answers: a
        replica restarted while the registry is down keeps its split. Nothing happens when there is none,
        when its packages are not all cached and intact, or when a registry check got there first."""
        from prodml.export.package import load_package
        from prodml.registry.deployment import parse_spec

        name = self.manager._name()

        def read() -> tuple[Deployment, dict[str, Any]] | None:
            found = self.manager.cache.spec(name)
            if found is None:
                return None
            text, digests = found
            spec = parse_spec(text, where=f"the cached deployment of '{name}'")
            have = self._loaded()
            loaded: dict[str, Any] = {}
            for variant in (*spec.serving, *(v for v in spec.variants if v.role == "shadow")):
                model = have.get(variant.version)
                if model is not None and model.package.digests == digests.get(variant.version):
                    loaded[variant.version] = model
                else:  # verified against the digests the registry gave when the spec was applied
                    path = self.manager.cache.path(name, variant.version)
                    loaded[variant.version] = load_package(path, digests[variant.version])
            return spec, loaded

        try:
            found = await asyncio.to_thread(read)
            table = None if found is None else await asyncio.to_thread(self._build, *found)
        except (ProdmlError, OSError, KeyError, ValueError) as exc:
            logger.warning("cached deployment spec not applied (%s)", str(exc).splitlines()[0])
            return
        if table is not None and self.table is None:
            self.table = table
            logger.info(
                "deployment revision %d from the local cache until the registry answers", table.revision
            )

    def _build(self, spec: Deployment, loaded: dict[str, Any]) -> Table:
        from prodml.serve.model import LoadedModel

        names, models, bounds, total = [], [], [], 0
        for variant in sorted(spec.serving, key=lambda v: v.role != "primary"):
            got = loaded[variant.version]
            model = (
                got
                if isinstance(got, LoadedModel)
                else self.manager._build(got, name=self.manager._name(), version=variant.version)
            )
            total += round(variant.weight * SCALE / 100)
            names.append(variant.name)
            models.append(model)
            bounds.append(total)
        shadow = next((v for v in spec.variants if v.role == "shadow"), None)
        if shadow is not None:
            got = loaded[shadow.version]
            model = (
                got
                if isinstance(got, LoadedModel)
                else self.manager._build(got, name=self.manager._name(), version=shadow.version)
            )
            shadowed = (shadow.name, model, round(shadow.sample * SCALE / 100))
        return Table(
            spec.revision,
            tuple(names),
            tuple(models),
            tuple(bounds),
            spec.stickiness.field,
            spec.stickiness.header,
            shadowed if shadow is not None else None,
        )

    def _retire(self, old: Table | None, new: Table | None) -> None:
        """Stop the runtime threads of models no longer served (requests holding them still finish)."""
        keep = {id(m) for m in (new.models if new else ())}
        if new is not None and new.shadow is not None:
            keep.add(id(new.shadow[1]))
        if self.manager.current is not None:
            keep.add(id(self.manager.current))
        for model in (*old.models, *([old.shadow[1]] if old.shadow else [])) if old else ():
            if id(model) not in keep:
                model.batcher.retire()


def _text(value: Any) -> str | None:
    """A key's text, the same whichever protocol carried it: ``42``, ``42.0`` and float32 42 are "42"."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        number = float(value)
        if math.isnan(number):
            return None
        return str(int(number)) if number.is_integer() else repr(number)
    return str(value)
