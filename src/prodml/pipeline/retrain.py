"""The drift → retrain → gate → canary loop: what ``prodml monitor check --on-breach retrain`` runs.

1. Cooldown: a retraining started within ``cooldown_s`` of the last one (recorded in
   ``.prodml/monitor/retrain.json``, written before training starts, so a failing run cannot loop
   either) is skipped.
2. Train on the project's current data (:func:`prodml.pipeline.train.run_training`).
3. The promotion gate compares the new version with the champion; a refusal stops here.
4. A passing version gets the ``challenger`` alias (tagged with the reason): the canary the rollout
   controller walks forward; the champion is not touched here.

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

from prodml.core.files import atomic_write_text
from prodml.core.project import Project
from prodml.registry.mlflow import Registry
from prodml.registry.promotion import Verdict, check_gate

__all__ = ["RetrainOutcome", "retrain"]

logger = logging.getLogger(__name__)
CANDIDATE_ALIAS = "challenger"


@dataclass(frozen=True)
class RetrainOutcome:
    """What the loop did: ``cooldown`` (skipped), ``refused`` (the gate said no) or ``challenger``."""

    status: str
    reason: str
    version: str | None = None
    verdict: Verdict | None = None
    next_allowed: float | None = None

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
        return f"version {self.version} trained, passed the gate ({gate}) and is now '{CANDIDATE_ALIAS}'"


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
