"""One monitoring run: the rows split into windows, each window's drift, performance where labels
arrived, and the verdict on the newest window — what ``prodml monitor report`` renders and ``prodml
monitor check`` decides on.

Example:
    >>> summary = summarize(package.profile, load("requests", project), every="7d")  # doctest: +SKIP
    >>> [s.feature for s in summary.breaches]  # doctest: +SKIP
    ['age', '__prediction__']
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from prodml.core.errors import DataError, ProdmlError
from prodml.core.types import Task
from prodml.export.drift import FeatureScore, Reference, Thresholds
from prodml.monitor.drift import WindowDrift, missing_features, score_windows
from prodml.monitor.performance import PerformancePoint, performance
from prodml.monitor.windows import split

__all__ = ["DriftBreach", "Summary", "summarize"]


class DriftBreach(ProdmlError):
    """The newest window breaks a drift or data-quality threshold (``prodml monitor check``)."""

    exit_code = 12
    http_status = 409
    grpc_code = "FAILED_PRECONDITION"


@dataclass
class Summary:
    """The result of one monitoring run; ``as_dict()`` is the JSON summary."""

    model: str
    source: str
    every: str
    reference: Reference
    profile: Mapping[str, Any]
    windows: list[WindowDrift]
    performance: list[PerformancePoint]
    thresholds: Thresholds
    missing: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @property
    def current(self) -> WindowDrift:
        """The newest window: the one checks decide on."""
        return self.windows[-1]

    @property
    def breaches(self) -> list[FeatureScore]:
        return self.current.breaches

    @property
    def breached(self) -> bool:
        return bool(self.breaches)

    def as_dict(self) -> dict[str, Any]:
        t = self.thresholds
        return {
            "model": self.model,
            "source": self.source,
            "window": self.every,
            "created": self.created,
            "breached": self.breached,
            "breaches": [{"feature": s.feature, "checks": list(s.breaches)} for s in self.breaches],
            "thresholds": {k: v for k, v in t.__dict__.items() if k != "per_feature"}
            | {"per_feature": {k: dict(v) for k, v in t.per_feature.items()}},
            "missing_features": self.missing,
            "windows": [w.as_dict() for w in self.windows],
            "performance": [p.as_dict() for p in self.performance],
        }


def summarize(
    profile: Mapping[str, Any],
    frame: pd.DataFrame,
    *,
    every: str | int,
    thresholds: Thresholds | None = None,
    task: Task = "binary",
    metrics: list[str] | None = None,
    model: str = "",
    source: str = "",
    threshold: float = 0.5,
) -> Summary:
    """Split ``frame`` into windows (``every``: ``7d`` or a row count) and score each against ``profile``.

    Raises:
        DataError: the source holds no rows.
    """
    if frame.empty:
        raise DataError(f"the source {source or ''} holds no rows to monitor", hint="send traffic first")
    reference = Reference.from_profile(profile)
    windows = split(frame, every)
    t = thresholds or Thresholds()
    t.check_features([*reference.numeric, *reference.categorical])
    drift = score_windows(reference, windows, t)
    perf = performance(windows, task, metrics or [], threshold=threshold) if metrics else []
    return Summary(
        model, source, str(every), reference, profile, drift, perf, t, missing_features(reference, frame)
    )
