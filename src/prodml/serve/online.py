"""Online features in the data plane: a request may carry the entity key instead of the model's inputs.

When the project names an ``entity`` and has an online store (``features.online`` in the project file or
``PRODML_FEATURES__ONLINE__*`` variables, or the default SQLite store once ``prodml features materialize``
wrote it), each worker opens the store once and every model version it builds gets its own
:class:`~prodml.data.online_store.OnlineFeatures` step (that version's inputs and profile defaults).

``DataPlane.infer`` calls :meth:`OnlineStep.join` before validation for a request that carries the key and
lacks some input: the store is read in one round trip for all the request's rows, in a thread (a slow
store holds a thread for at most ``timeout_ms``, never the event loop), and inputs the request carries
(request-time features) win. A missing entity and a store that does not answer follow the declared
policies (404 naming the entities or defaults; 424 or defaults): never a 5xx. The request log keeps the
entity key with the served features (:func:`with_key`), so ``prodml features skew`` can recompute them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prodml.core.project import Project
from prodml.data.online_store import OnlineFeatures, OnlineSpec, _key, online_spec, open_store
from prodml.serve.metrics import Metrics
from prodml.serve.model import LoadedModel, ModelManager
from prodml.serve.validation import STRINGS

__all__ = ["OnlineOptions", "OnlineStep", "online_features", "online_options", "with_key"]

logger = logging.getLogger(__name__)
ENV_PREFIX = "PRODML_FEATURES__ONLINE__"


@dataclass(frozen=True)
class OnlineOptions:
    """What a server needs to read the online store: its settings, the entity key, where the project
    lives (a relative SQLite path starts there) and its name (Redis keys are namespaced by it)."""

    spec: OnlineSpec
    entity: str
    root: Path
    name: str


def online_options(project: Project) -> OnlineOptions | None:
    """The online step's settings, or None when the project has no entity key or no store to read.

    Raises:
        ConfigError: ``features.online`` or a ``PRODML_FEATURES__ONLINE__*`` variable is invalid.
    """
    if not project.entity:
        return None
    spec = online_spec(project.features.online)
    declared = project.features.online is not None or any(k.startswith(ENV_PREFIX) for k in os.environ)
    if not declared and not Path(project.resolve(spec.path)).is_file():
        return None  # nothing configured and nothing materialised: requests must carry their inputs
    return OnlineOptions(spec, project.entity, project.root, project.name)


class OnlineStep:
    """One model version's online step: the policy layer over the store, and the rows it fetched."""

    def __init__(self, features: OnlineFeatures, rows: Any) -> None:
        self.features, self.entity, self.rows = features, features.entity, rows

    def wants(self, columns: Mapping[str, Any]) -> bool:
        """Whether a request carries the entity key (to read what it lacks, or only to be logged)."""
        return self.entity in columns

    async def join(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> dict[str, Any]:
        """``columns`` with the inputs it lacks read from the store (see the module docstring).

        Raises:
            InvalidInput: a null key, or the key column is not a list.
            MissingEntity: (404) entities are not stored and the policy is ``reject``.
            FeaturesUnavailable: (424) the store did not answer and the policy is ``reject``.
        """
        if not self.features.wants(columns):  # every input is there: the key is dropped, nothing read
            return self.features.join(columns)[0]
        joined, fetched = await asyncio.to_thread(self.features.join, columns)
        if fetched.fallback:
            self.rows.labels("fallback").inc(fetched.rows)
        elif fetched.rows:
            missing = len(fetched.missing)
            self.rows.labels("found").inc(fetched.rows - missing)
            if missing:
                self.rows.labels("missing").inc(missing)
        return joined


def online_features(manager: ModelManager, metrics: Metrics, options: OnlineOptions) -> Callable[[], None]:
    """Open the store (once per worker) and give each model version ``manager`` builds its
    :class:`OnlineStep`; returns the store's ``close``."""
    from prometheus_client import Counter

    store = open_store(options.spec, root=options.root, name=options.name)
    multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))  # as Metrics does: summed over workers
    rows = Counter(
        "prodml_online_feature_rows",
        "Rows whose features came from the online store, by outcome (found; missing: defaults served; "
        "fallback: the store did not answer, defaults served)",
        ["result"],
        registry=None if multiprocess else metrics.registry,
    )

    def attach(model: LoadedModel) -> None:
        package = model.package
        features = OnlineFeatures.for_model(
            store, package.schema, package.profile, entity=options.entity, spec=options.spec
        )
        model.online = OnlineStep(features, rows)

    manager.on_build.append(attach)
    return store.close


def with_key(
    feeds: dict[str, np.ndarray],
    layout: tuple[tuple[str, ...], tuple[str, ...]],
    entity: str,
    keys: Sequence[Any] | np.ndarray,
) -> tuple[dict[str, np.ndarray], tuple[tuple[str, ...], tuple[str, ...]]]:
    """The request log's view of a request served from the store: its feeds with the entity key as one
    more text column (and the layout naming it), so that the log holds each served vector with its key."""
    numbers, strings = layout
    if entity in numbers or entity in strings:  # the model takes the key itself: logged already
        return feeds, layout
    column = np.array([_key(k) for k in keys], dtype=object).reshape(-1, 1)
    text = feeds.get(STRINGS)
    return {**feeds, STRINGS: column if text is None else np.hstack([text, column])}, (
        numbers,
        (*strings, entity),
    )
