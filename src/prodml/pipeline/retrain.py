"""The drift → retrain → gate → canary loop: what ``prodml monitor check --on-breach retrain`` runs.

1. Cooldown: a retraining started within ``cooldown_s`` of the last one (recorded in
   ``.prodml/monitor/retrain.json``, written before training starts, so a failing run cannot loop
   either) is skipped.
2. Train on the project's current data (:func:`prodml.pipeline.train.run_training`).
3. The promotion gate compares the new version with the champion; a refusal stops here.
4. A passing version gets the ``challenger`` alias (tagged with the reason); the champion is not
   touched here. ``prodml monitor check --on-breach retrain`` then puts it out as a canary
   (``prodml.cli.rollout.canary_retrained``: the rollout layer sits beside this one).

Example:
    >>> outcome = retrain(project, reason="drift in age", cooldown_s=86_400)  # doctest: +SKIP
    >>> outcome.status  # doctest: +SKIP
    'challenger'
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from prodml.core.files import atomic_write_text
from prodml.core.project import Project
from prodml.registry.mlflow import Registry
from prodml.registry.promotion import Verdict, check_gate

__all__ = ["MonitorStep", "RetrainOutcome", "drifted_rows", "monitor_and_retrain", "replay", "retrain"]

logger = logging.getLogger(__name__)
CANDIDATE_ALIAS = "challenger"


@dataclass(frozen=True)
class RetrainOutcome:
    """What the loop did: ``cooldown`` (skipped), ``refused`` (the gate said no), ``challenger`` (passed,
    no canary started: ``why_not`` says why) or ``canary`` (passed and canaried)."""

    status: str
    reason: str
    version: str | None = None
    verdict: Verdict | None = None
    next_allowed: float | None = None
    why_not: str | None = None

    def describe(self) -> str:
        if self.status == "cooldown":
            wait = max((self.next_allowed or 0) - time.time(), 0) / 3600
            return f"skipped: the last retraining is within the cooldown ({wait:.1f} h left)"
        v = self.verdict
        gate = "" if v is None else f"{v.metric} {v.value:.4f}"
        if self.status == "refused":
            return f"version {self.version} trained; the promotion gate refused it ({gate}): " + "; ".join(
                v.reasons if v else []
            )
        if self.status == "canary":
            return (
                f"version {self.version} trained, passed the gate ({gate}) and is out as a canary: "
                "'prodml rollout run' walks it"
            )
        tail = f" (no canary: {self.why_not})" if self.why_not else ""
        return (
            f"version {self.version} trained, passed the gate ({gate}) and is now '{CANDIDATE_ALIAS}'{tail}"
        )


def _state(project: Project) -> Any:
    return project.state_dir / "monitor" / "retrain.json"


def retrain(
    project: Project,
    *,
    reason: str,
    cooldown_s: float = 86_400.0,
    tracking_uri: str | None = None,
    now: Callable[[], float] = time.time,
) -> RetrainOutcome:
    """Retrain ``project`` because of ``reason`` unless within the cooldown; gate the result."""
    from prodml.pipeline.train import run_training

    path = _state(project)
    state: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    last = float(state.get("started", 0.0))
    if now() - last < cooldown_s:
        logger.info("retraining skipped: last one at %s, cooldown %.0f s", last, cooldown_s)
        return RetrainOutcome("cooldown", reason, next_allowed=last + cooldown_s)
    started = now()
    atomic_write_text(path, json.dumps({**state, "started": started, "reason": reason}, indent=2))
    outcome = run_training(project, tracking_uri=tracking_uri)
    mv = outcome.version
    registry = Registry(outcome.tracking_uri)
    champion = registry.alias_version(mv.name, "champion")
    verdict = check_gate(project.promotion, mv, champion)
    tags = {"prodml.retrain.reason": reason, "prodml.retrain.gate": "passed" if verdict.passed else "refused"}
    if verdict.passed:
        registry.set_alias(mv.name, CANDIDATE_ALIAS, mv.version)
    else:
        tags["prodml.retrain.refusal"] = "; ".join(verdict.reasons)
    registry.set_version_tags(mv.name, mv.version, tags)
    status = CANDIDATE_ALIAS if verdict.passed else "refused"
    atomic_write_text(
        path,
        json.dumps({"started": started, "reason": reason, "version": mv.version, "status": status}, indent=2),
    )
    return RetrainOutcome(status, reason, mv.version, verdict)


# --- the demo's monitoring step -----------------------------------------------------------------------


def drifted_rows(
    project: Project,
    *,
    drift: float = 1.0,
    rows: int = 3_000,
    seed: int = 1,
    customers: int = 3_000,
    days: int = 365,
) -> list[dict[str, Any]]:
    """Feature rows (as JSON records for ``/predict``) from the simulator's world with ``drift`` from its
    first day: the project's own feature definitions over that data, ``rows`` label rows drawn at random
    over the whole period (as training saw it; the newest rows alone differ from it even without drift,
    since the customers who stay are the engaged ones). Give ``days`` as the training world had."""
    import shutil
    import tempfile
    from pathlib import Path

    from prodml.core.project import load_project
    from prodml.data.simulate import simulate, write_world
    from prodml.data.sources import Catalog
    from prodml.features.offline import build_training_frame

    with tempfile.TemporaryDirectory(prefix="prodml-drift-") as tmp:
        root = Path(tmp)
        shutil.copy(project.root / "prodml.yaml", root / "prodml.yaml")
        write_world(simulate(customers, days, seed, drift=drift, drift_start=0), root / "data")
        frame = build_training_frame(Catalog(load_project(root)))
    table = frame.table.select(frame.features)
    pick = np.random.default_rng(seed).permutation(table.num_rows)[:rows]
    records: list[dict[str, Any]] = table.take(np.sort(pick)).to_pylist()
    return records


def replay(
    base_url: str, records: list[dict[str, Any]], *, batch: int = 50, api_key: str | None = None
) -> int:
    """POST ``records`` to a running server's ``/predict`` in batches; returns the rows answered 200."""
    import httpx

    headers = {"x-api-key": api_key} if api_key else {}
    sent = 0
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
        for i in range(0, len(records), batch):
            response = client.post("/predict", json=records[i : i + batch])
            if response.status_code == 200:
                sent += len(records[i : i + batch])
    return sent


@dataclass(frozen=True)
class MonitorStep:
    """The demo's monitoring step: the drift verdict, where the report is, what retraining did."""

    breached: list[str]
    report: Any  # Path of the HTML report
    retrain: RetrainOutcome | None

    def describe(self) -> str:
        if not self.breached:
            return f"no drift alert; report {self.report}"
        what = ", ".join("prediction" if f == "__prediction__" else f for f in self.breached[:6])
        more = f" (+{len(self.breached) - 6})" if len(self.breached) > 6 else ""
        tail = f"; {self.retrain.describe()}" if self.retrain else ""
        return f"drift alert on {what}{more}{tail}; report {self.report}"


def monitor_and_retrain(
    project: Project,
    *,
    tracking_uri: str | None = None,
    profile: dict[str, Any] | None = None,
    cooldown_s: float = 0.0,
    retrain_on_breach: bool = True,
) -> MonitorStep:
    """Check the project's request log against the champion's profile (the newest ``monitor.window_rows``
    rows), write the report, and on a breach retrain through the gate (:func:`retrain`).

    ``profile`` defaults to the champion's, from the local package cache (``prodml models promote`` and
    ``prodml train`` fill it).
    """
    from prodml.core.errors import NotFound
    from prodml.export.cache import PackageCache
    from prodml.export.drift import Thresholds
    from prodml.monitor.report import write_report
    from prodml.monitor.sources import load
    from prodml.monitor.summary import summarize

    name = project.tracking.registered_model or project.name
    if profile is None:
        cached = PackageCache(project.state_dir / "models").load(name, f"{name}@champion")
        if cached is None:
            raise NotFound(
                f"no cached champion of '{name}'", hint=f"run 'prodml models promote {name} VERSION'"
            )
        profile = cached[1].profile
    frame = load("requests", project)
    summary = summarize(
        profile,
        frame,
        every=project.monitor.window_rows,
        thresholds=Thresholds.from_settings(project.monitor),
        task=project.task,
        metrics=project.computed_metrics,
        model=f"{name}@champion",
        source="requests",
    )
    html, _ = write_report(summary, project.state_dir / "reports")
    breached = [s.feature for s in summary.breaches]
    outcome = None
    if breached and retrain_on_breach:
        outcome = retrain(
            project,
            reason=f"drift in {', '.join(breached)}",
            cooldown_s=cooldown_s,
            tracking_uri=tracking_uri,
        )
    return MonitorStep(breached, html, outcome)
