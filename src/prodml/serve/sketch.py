"""Live drift on a server: a :class:`~prodml.export.drift.LiveSketch` per model version, its gauges on
``/metrics`` (``prodml_drift_*``).

``live_drift`` gives every version the manager builds a sketch of its package's reference profile, and
registers one collector that reports the sketch of whichever version is served now. The data plane calls
``sketch.observe`` after each answer (keeping references to the request's validated matrices, under a
microsecond); the server's 0.1 s tick calls :func:`fold`, which bins what was kept and scores each
window of ``monitor.window_rows`` rows. At most ``rows_per_request`` rows of a request are kept (a
systematic sample), which bounds the sketch's share of a server at full load with large requests.

With several worker processes each worker keeps its own sketch of the requests it answers, and a scrape
shows the sketch of the worker it reaches: each is a sample of the same traffic, so its drift scores
estimate the same thing, over windows that fill N times slower.

A sketch that fails stops observing and counts the failure (``prodml_drift_sketch_errors_total``);
serving never notices.
"""

from __future__ import annotations

import logging

from prodml.core.project import Monitor
from prodml.export.drift import LiveSketch, Thresholds, drift_collector
from prodml.serve.metrics import Metrics
from prodml.serve.model import LoadedModel, ModelManager

__all__ = ["fold", "live_drift"]

logger = logging.getLogger(__name__)
ROWS_PER_REQUEST = 16


def live_drift(
    manager: ModelManager, metrics: Metrics, monitor: Monitor, *, rows_per_request: int | None = None
) -> None:
    """Give each model version ``manager`` builds from now on a sketch (windows and thresholds from the
    project's ``monitor`` section); export the served one's gauges."""
    thresholds = Thresholds.from_settings(monitor)

    def attach(model: LoadedModel) -> None:
        try:
            model.sketch = LiveSketch(
                model.package.profile,
                model.validator.layout,
                window_rows=monitor.window_rows,
                thresholds=thresholds,
                rows_per_request=rows_per_request or monitor.rows_per_request,
                sample_every=monitor.sample_every,
            )
        except Exception:  # a profile the sketch cannot read costs the gauges, never the model
            logger.exception("no live drift for %s version %s", model.name, model.version)

    def current() -> LiveSketch | None:
        model = manager.current
        return None if model is None else model.sketch

    manager.on_build.append(attach)
    metrics.registry.register(drift_collector(current))


def fold(manager: ModelManager) -> None:
    """Bin what the served version's sketch kept (the server's 0.1 s tick; cheap when little is kept)."""
    model = manager.current
    if model is not None and model.sketch is not None:
        model.sketch.fold()
