"""The promotion gate: a version gets an alias only if its holdout metric passes ``promotion``.

The gate compares the candidate's holdout metric with an absolute floor (``min``) and with the current
holder of the alias (``max_drop_vs_champion``), in the metric's own direction (lower is better for
losses). ``force`` overrides a refusal and records who-knows-why in the version's tags.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from prodml.core.errors import ConfigError, ProdmlError
from prodml.core.project import Promotion
from prodml.registry.mlflow import ModelVersion, Registry
from prodml.train.metrics import METRICS

__all__ = ["GateRefused", "Verdict", "check_gate", "promote"]

METRIC_TAG = "prodml.metric."


class GateRefused(ProdmlError):
    """The candidate does not pass the promotion gate."""

    exit_code = 11
    http_status = 409
    grpc_code = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    metric: str
    value: float
    reasons: list[str]


def _metric(mv: ModelVersion, name: str) -> float | None:
    raw = mv.tags.get(METRIC_TAG + name)
    return float(raw) if raw is not None else None


def check_gate(promotion: Promotion, candidate: ModelVersion, champion: ModelVersion | None) -> Verdict:
    """Check ``candidate`` against the gate and the current ``champion``; never raises on a failure."""
    name = promotion.metric
    if name not in METRICS:
        raise ConfigError(
            f"promotion.metric: '{name}' is not a metric", hint=f"use one of: {', '.join(METRICS)}"
        )
    higher = METRICS[name].higher_is_better
    value = _metric(candidate, name)
    if value is None:  # missing metrics never promote
        return Verdict(False, name, float("nan"), [f"version {candidate.version} has no recorded '{name}'"])
    reasons = []
    if promotion.min is not None and (value < promotion.min if higher else value > promotion.min):
        reasons.append(
            f"{name} {value:.4f} is {'below' if higher else 'above'} the gate's "
            f"{'minimum' if higher else 'maximum'} {promotion.min:.4f}"
        )
    if (
        champion is not None
        and champion.version != candidate.version
        and promotion.max_drop_vs_champion is not None
    ):
        best = _metric(champion, name)
        if best is not None:
            floor = best - promotion.max_drop_vs_champion if higher else best + promotion.max_drop_vs_champion
            if value < floor if higher else value > floor:
                reasons.append(
                    f"{name} {value:.4f} is worse than the champion (version {champion.version}, "
                    f"{best:.4f}) by more than {promotion.max_drop_vs_champion}"
                )
    return Verdict(not reasons, name, value, reasons)


def promote(
    registry: Registry,
    promotion: Promotion,
    name: str,
    version: str,
    *,
    alias: str = "champion",
    force: bool = False,
    reason: str | None = None,
) -> Verdict:
    """Give ``alias`` to ``name`` version ``version`` if it passes the gate (or ``force`` with a reason).

    Raises:
        GateRefused: the gate refuses and ``force`` is not set; the message holds the numbers.
        ConfigError: ``force`` without a ``reason``.
    """
    candidate = registry.get(name, version)
    holder = registry.alias_version(name, alias)
    verdict = check_gate(promotion, candidate, holder)
    if not verdict.passed and not force:
        raise GateRefused(
            f"version {version} of '{name}' does not pass the promotion gate: " + "; ".join(verdict.reasons),
            hint="improve the model, or override with --force --reason '...'",
        )
    if force and not verdict.passed and not reason:
        raise ConfigError("--force needs --reason", hint="say why the gate is overridden; it is recorded")
    registry.set_alias(name, alias, version)
    tags: dict[str, object] = {f"prodml.promoted.{alias}": datetime.now(UTC).isoformat(timespec="seconds")}
    if force and not verdict.passed:
        tags |= {"prodml.override.reason": reason, "prodml.override.refusal": "; ".join(verdict.reasons)}
    registry.set_version_tags(name, version, tags)
    return verdict
