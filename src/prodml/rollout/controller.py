"""The canary controller: walk a new version's weight up step by step while each window passes, roll it
back after N consecutive failures, and move ``champion`` when it reaches the end.

Everything the controller knows is in the deployment spec (``rollout`` holds the step, the failures in a
row and the status; ``analysis`` the settings), so a controller that is killed resumes where the spec
says — ``prodml rollout run`` starts again from the stored state. Every decision is an event with its
evidence. After each change the replicas pick it up on their next registry check, at once when their
admin URLs are given (``POST /admin/reload``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from prodml.core.errors import ConfigError
from prodml.core.project import Project
from prodml.registry.deployment import Deployment, DeploymentStore, Variant
from prodml.rollout.analysis import Checks, Snapshot, Verdict, analyse, scrape

__all__ = [
    "CanaryPlan",
    "Controller",
    "abort",
    "promote",
    "rollback",
    "set_paused",
    "set_shadow",
    "start_canary",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CanaryPlan:
    """How a canary proceeds: weights in percent, the analysis window, the checks, the failures allowed
    in a row, and where the replicas are."""

    steps: tuple[float, ...]
    interval_s: float
    checks: Checks
    failures: int
    replicas: tuple[str, ...]
    admin_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        steps = list(self.steps)
        if not steps or any(not (0 < s <= 100) for s in steps) or steps != sorted(set(steps)):
            raise ConfigError(
                f"--steps {','.join(f'{s:g}' for s in steps)}: give increasing percents in (0, 100]",
                hint="e.g. --steps 5,25,50,100",
            )
        if not self.replicas:
            raise ConfigError(
                "no replica to read metrics from", hint="give --replica URL or rollout.replicas"
            )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "checks": asdict(self.checks)}

    @staticmethod
    def of(project: Project) -> CanaryPlan:
        """The plan the project's ``rollout:`` settings describe (replicas: ``serve``'s address when none
        are listed)."""
        s = project.rollout
        return CanaryPlan(
            steps=tuple(float(x) for x in s.steps),
            interval_s=s.interval_s,
            checks=Checks(
                max_error_rate=s.max_error_rate,
                max_p99_ms=s.max_p99_ms,
                max_prediction_shift=s.max_prediction_shift,
                min_requests=s.min_requests,
                max_metric_drop=s.max_metric_drop,
                metric={"binary": "accuracy", "regression": "error"}.get(project.task),
                min_labels=s.min_labels,
            ),
            failures=s.failure_threshold,
            replicas=tuple(s.replicas or [f"http://{project.serve.host}:{project.serve.port}"]),
            admin_urls=tuple(s.admin_urls),
        )

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> CanaryPlan:
        return CanaryPlan(
            steps=tuple(raw["steps"]),
            interval_s=float(raw["interval_s"]),
            checks=Checks(**raw["checks"]),
            failures=int(raw["failures"]),
            replicas=tuple(raw["replicas"]),
            admin_urls=tuple(raw.get("admin_urls", ())),
        )


def _with_canary(spec: Deployment, primary: Variant, version: str, weight: float) -> tuple[Variant, ...]:
    # a shadow of the canary's own version ends as it starts answering (a version serves one role)
    others = tuple(
        v
        for v in spec.variants
        if v.role not in ("primary", "canary") and not (v.role == "shadow" and v.version == version)
    )
    return (
        replace(primary, weight=100 - weight),
        Variant("canary", version, weight, "canary"),
        *others,
    )


def start_canary(store: DeploymentStore, version: str, plan: CanaryPlan, *, why: str) -> Deployment:
    """Put ``version`` in as a canary at the first step.

    Raises:
        ConfigError: another rollout holds the deployment, the version is unknown or already primary.
    """
    spec = store.current()
    if spec.active:
        assert spec.rollout is not None
        raise ConfigError(
            f"a {spec.rollout.get('kind')} of version {spec.rollout.get('version')} is already "
            f"{spec.rollout.get('status')} on '{store.name}'",
            hint="one rollout at a time: finish it first (prodml rollout promote | abort | rollback)",
        )
    primary = spec.primary
    if primary.version == version:
        raise ConfigError(f"version {version} is already the primary of '{store.name}'", hint="nothing to do")
    rollout = {
        "kind": "canary",
        "version": version,
        "from_version": primary.version,
        "step": 0,
        "failures": 0,
        "status": "running",
        "started_at": time.time(),
    }
    new = replace(
        spec,
        variants=_with_canary(spec, primary, version, plan.steps[0]),
        rollout=rollout,
        analysis=plan.to_dict(),
    )
    stored = store.write(
        new,
        action="canary started",
        why=why,
        evidence={"weight": plan.steps[0]},
        expect_revision=None if store.read() is None else spec.revision,
    )
    notify(plan.admin_urls)
    return stored


def _active(store: DeploymentStore) -> Deployment:
    spec = store.read()
    if spec is None or not spec.active:
        raise ConfigError(f"no rollout is in progress on '{store.name}'", hint="see prodml rollout status")
    return spec


def set_paused(store: DeploymentStore, paused: bool, *, why: str) -> Deployment:
    """Pause (weights stay, no step is taken) or resume the rollout in progress."""
    spec = _active(store)
    assert spec.rollout is not None
    status = "paused" if paused else "running"
    if spec.rollout["status"] == status:
        return spec
    rollout = {**spec.rollout, "status": status, "failures": 0}
    return store.write(
        replace(spec, rollout=rollout),
        action="paused" if paused else "resumed",
        why=why,
        expect_revision=spec.revision,
    )


def _finish(
    store: DeploymentStore,
    spec: Deployment,
    *,
    winner: str,
    status: str,
    action: str,
    why: str,
    evidence: dict[str, Any] | None = None,
) -> Deployment:
    """The rollout ends with ``winner`` the only serving version (shadows and arms are dropped too)."""
    rollout = {**(spec.rollout or {}), "status": status, "ended_at": time.time()}
    new = replace(spec, variants=(Variant("primary", winner, 100.0, "primary"),), rollout=rollout)
    stored = store.write(new, action=action, why=why, evidence=evidence, expect_revision=spec.revision)
    notify(tuple(spec.analysis.get("admin_urls", ())))
    return stored


def abort(store: DeploymentStore, *, why: str, action: str = "aborted", evidence: Any = None) -> Deployment:
    """End the rollout in progress: the primary takes every request again; aliases are unchanged."""
    spec = _active(store)
    return _finish(
        store, spec, winner=spec.primary.version, status=action, action=action, why=why, evidence=evidence
    )


def promote(store: DeploymentStore, *, why: str, evidence: dict[str, Any] | None = None) -> Deployment:
    """The canary becomes the primary and ``champion``; the old primary is kept as ``previous``."""
    spec = _active(store)
    assert spec.rollout is not None
    old, new = spec.primary.version, spec.rollout["version"]
    stored = _finish(
        store, spec, winner=new, status="promoted", action="promoted", why=why, evidence=evidence
    )
    store.registry.set_alias(store.name, "previous", old)
    store.registry.set_alias(store.name, "champion", new)
    return stored


def rollback(store: DeploymentStore, *, why: str) -> Deployment:
    """Back to safety in one command: abort the rollout in progress, or, with none, return ``champion``
    (and every replica) to the ``previous`` version."""
    spec = store.current()
    if spec.active:
        return abort(store, why=why, action="rolled back")
    previous = store.registry.alias_version(store.name, "previous")
    if previous is None:
        raise ConfigError(
            f"model '{store.name}' has no 'previous' version to return to",
            hint="a version becomes 'previous' when a canary promotes its successor",
        )
    if previous.version == spec.primary.version:
        raise ConfigError(f"version {previous.version} is already the primary", hint="nothing to do")
    current = spec.primary.version
    new = replace(spec, variants=(Variant("primary", previous.version, 100.0, "primary"),), rollout=None)
    stored = store.write(
        new,
        action="rolled back",
        why=why,
        evidence={"from": current, "to": previous.version},
        expect_revision=None if store.read() is None else spec.revision,
    )
    store.registry.set_alias(store.name, "champion", previous.version)
    store.registry.set_alias(store.name, "previous", current)
    notify(tuple(spec.analysis.get("admin_urls", ())))
    return stored


def notify(admin_urls: Sequence[str], token: str | None = None) -> None:
    """Ask each replica to check the registry now (best effort: they also poll)."""
    import os

    import httpx

    token = token or os.environ.get("PRODML_ADMIN_TOKEN")
    if not admin_urls or not token:
        return
    for url in admin_urls:
        try:
            httpx.post(
                f"{url.rstrip('/')}/admin/reload", headers={"authorization": f"Bearer {token}"}, timeout=10
            )
        except httpx.HTTPError as exc:
            logger.warning("replica %s did not take the reload (%s); it will poll", url, exc)


class Controller:
    """Runs the rollout stored in the spec of ``store`` until it ends.

    Args:
        store: the model's deployment.
        scrape_metrics: reads the replicas (tests may give another).
        sleep: waits one window.
        on_window: told each window's verdict (the CLI prints it).
        labelled_log: reads the request log with feedback labels (for ``max_metric_drop``).
    """

    def __init__(
        self,
        store: DeploymentStore,
        *,
        scrape_metrics: Callable[[Sequence[str]], Snapshot] = scrape,
        sleep: Callable[[float], None] = time.sleep,
        on_window: Callable[[Deployment, Verdict], None] | None = None,
        labelled_log: Callable[[], Any] | None = None,
    ) -> None:
        self.store = store
        self.scrape = scrape_metrics
        self.labelled_log = labelled_log
        self.sleep = sleep
        self.on_window = on_window or (lambda spec, verdict: None)

    def run(self) -> Deployment | None:
        """Step the rollout until it is promoted, rolled back or aborted; the final spec (None if there
        was no rollout to run)."""
        while True:
            spec = self.store.read()
            if spec is None or not spec.active:
                return spec
            assert spec.rollout is not None
            if spec.rollout["status"] == "paused":
                self.sleep(1.0)
                continue
            ab = spec.rollout.get("kind") == "ab"
            if ab and "steps" not in spec.analysis:
                return spec  # an A/B test without a guardrail: nothing to watch, it ends by hand
            plan = CanaryPlan.from_dict(spec.analysis)
            before = self.scrape(plan.replicas)
            self.sleep(plan.interval_s)
            now = self.store.read()
            if now is None or now.revision != spec.revision:  # paused, aborted or promoted meanwhile
                continue
            window = self.scrape(plan.replicas).minus(before)
            tested = now.role("arm" if ab else "canary")
            assert tested is not None
            checks = replace(plan.checks, max_prediction_shift=None) if ab else plan.checks  # arms may differ
            verdict = analyse(window, canary=tested.version, primary=now.primary.version, checks=checks)
            if not ab and checks.max_metric_drop is not None:
                verdict = self._task_metric(now, checks, verdict)
            self.on_window(now, verdict)
            try:
                self.guard(now, plan, verdict) if ab else self.decide(now, plan, verdict)
            except ConfigError as exc:  # someone changed the spec between the read and the write
                logger.warning("decision not applied: %s; reading the spec again", exc.message)

    def _task_metric(self, spec: Deployment, checks: Checks, verdict: Verdict) -> Verdict:
        """The window's verdict with the task-metric check added: a failure when the canary's metric
        trails the primary's by more than ``max_metric_drop``; no verdict of its own with too few
        labels, no log or a task it does not apply to (noted in the evidence)."""
        from prodml.core.errors import ProdmlError
        from prodml.rollout.abtest import metric_check

        canary = spec.role("canary")
        assert canary is not None and spec.rollout is not None and checks.max_metric_drop is not None
        if checks.metric is None or self.labelled_log is None:
            note = {"skipped": "no task metric for this task" if checks.metric is None else "no request log"}
            return replace(verdict, evidence={**verdict.evidence, "task_metric": note})
        try:
            reason, evidence = metric_check(
                self.labelled_log(),
                canary=canary.name,
                primary=spec.primary.name,
                metric=checks.metric,
                max_drop=checks.max_metric_drop,
                min_labels=checks.min_labels,
                since=float(spec.rollout.get("started_at", 0.0)),
            )
        except ProdmlError as exc:  # no log yet, a broker away: no verdict from labels this window
            evidence, reason = {"skipped": exc.message}, None
        out = replace(verdict, evidence={**verdict.evidence, "task_metric": evidence})
        if reason is None:
            return out
        return replace(out, passed=False, reasons=[*verdict.reasons, reason], harmful=True)

    def guard(self, spec: Deployment, plan: CanaryPlan, verdict: Verdict) -> Deployment:
        """One window of an A/B test: arm b's harm (error rate, p99 over the checks) counts towards
        stopping it; a clean window resets the count; too few observations change nothing (an A/B test
        runs until someone ends it, or until the guardrail does)."""
        assert spec.rollout is not None
        failures = int(spec.rollout["failures"])
        if not verdict.harmful:
            if not verdict.passed or failures == 0:
                return spec
            return self.store.write(
                replace(spec, rollout={**spec.rollout, "failures": 0}),
                action="guardrail clean",
                why="the window passed",
                evidence=verdict.evidence,
                expect_revision=spec.revision,
            )
        return self._failed(
            spec,
            plan,
            verdict,
            dict(verdict.evidence),
            ended="stopped by the guardrail",
            what="guardrail breached",
        )

    def decide(self, spec: Deployment, plan: CanaryPlan, verdict: Verdict) -> Deployment:
        """One window's consequence: the next step, promotion, a recorded failure, or the rollback."""
        assert spec.rollout is not None
        step = int(spec.rollout["step"])
        evidence = {**verdict.evidence, "step": step, "weight": plan.steps[step]}
        if verdict.passed:
            if step + 1 >= len(plan.steps):
                return promote(self.store, why="every analysis window passed", evidence=evidence)
            weight = plan.steps[step + 1]
            rollout = {**spec.rollout, "step": step + 1, "failures": 0}
            new = replace(
                spec, variants=_with_canary(spec, spec.primary, rollout["version"], weight), rollout=rollout
            )
            stored = self.store.write(
                new,
                action=f"step {step + 1}: canary at {weight:g}%",
                why="the analysis window passed",
                evidence=evidence,
                expect_revision=spec.revision,
            )
            notify(plan.admin_urls)
            return stored
        return self._failed(spec, plan, verdict, evidence, ended="rolled back", what="check failed")

    def _failed(
        self,
        spec: Deployment,
        plan: CanaryPlan,
        verdict: Verdict,
        evidence: dict[str, Any],
        *,
        ended: str,
        what: str,
    ) -> Deployment:
        """Count one failed window; the ``plan.failures``-th in a row ends the rollout (action ``ended``)
        with the primary taking every request."""
        assert spec.rollout is not None
        failures = int(spec.rollout["failures"]) + 1
        evidence["reasons"] = verdict.reasons
        if failures >= plan.failures:
            return abort(
                self.store,
                why=f"{failures} analysis windows failed in a row: " + "; ".join(verdict.reasons),
                action=ended,
                evidence=evidence,
            )
        return self.store.write(
            replace(spec, rollout={**spec.rollout, "failures": failures}),
            action=f"{what} ({failures} of {plan.failures})",
            why="; ".join(verdict.reasons),
            evidence=evidence,
            expect_revision=spec.revision,
        )


def set_shadow(
    store: DeploymentStore,
    version: str | None,
    *,
    sample: float = 100.0,
    why: str,
    admin_urls: Sequence[str] = (),
) -> Deployment:
    """Mirror ``sample`` percent of requests to ``version`` (None: stop shadowing). A shadow answers no
    request, so it may run beside a canary.

    Raises:
        ConfigError: the version is unknown or already serving, or the sample is out of range.
    """
    spec = store.current()
    if version is not None and any(v.version == version for v in spec.serving):
        raise ConfigError(f"version {version} already answers requests here", hint="shadow another version")
    kept = tuple(v for v in spec.variants if v.role != "shadow")
    variants = kept if version is None else (*kept, Variant("shadow", version, 0.0, "shadow", sample))
    stored = store.write(
        replace(spec, variants=variants),
        action="shadow stopped" if version is None else f"shadow of version {version} at {sample:g}%",
        why=why,
        expect_revision=None if store.read() is None else spec.revision,
    )
    notify(admin_urls)
    return stored
