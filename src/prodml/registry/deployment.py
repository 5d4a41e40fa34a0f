"""The deployment spec: which versions of a model serve, with what share of traffic, and its history.

The spec lives where every replica and the controller already reach: a tag of the registered model,
``prodml.deployment``, holding JSON::

    {"revision": 4,
     "variants": [{"name": "primary", "version": "3", "weight": 75, "role": "primary"},
                  {"name": "canary", "version": "4", "weight": 25, "role": "canary"}],
     "stickiness": {"field": "customer_id"},          # or {"header": "x-user"}; {} = random
     "rollout": {"kind": "canary", "version": "4", "step": 1, "status": "running", ...},
     "analysis": {"steps": [25, 50, 100], "interval_s": 30, ...}}

Each change is written with :meth:`DeploymentStore.write`, which validates the whole spec first (one
primary, weights of the serving variants summing to 100, versions that exist, no version twice), checks
that nobody changed the spec since it was read (the revision), and records an event — who, when, what,
why and the evidence — in a tag ``prodml.deployment.event.<n>``. A refused change writes nothing.
"""

from __future__ import annotations

import getpass
import json
import math
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from prodml.core.errors import ConfigError
from prodml.registry.mlflow import Registry

__all__ = [
    "EVENT_TAG",
    "ROLES",
    "SPEC_TAG",
    "Deployment",
    "DeploymentStore",
    "Event",
    "Stickiness",
    "Variant",
    "parse_spec",
    "validate",
]

SPEC_TAG = "prodml.deployment"
EVENT_TAG = "prodml.deployment.event."
ROLES = ("primary", "canary", "shadow", "arm")
ACTIVE = ("running", "paused")  # a rollout in one of these states holds the deployment


@dataclass(frozen=True)
class Variant:
    """One version in the deployment. ``weight``: percent of requests (0 for a shadow); ``sample``: the
    percent of requests a shadow sees (mirrored, never answered from)."""

    name: str
    version: str
    weight: float
    role: str = "primary"
    sample: float = 0.0


@dataclass(frozen=True)
class Stickiness:
    """What keeps one client on one variant: a request field or a header (random when both are None or
    the request lacks it)."""

    field: str | None = None
    header: str | None = None

    def __post_init__(self) -> None:  # header names are case-insensitive; transports give them lower-cased
        if self.header is not None and self.header != self.header.lower():
            object.__setattr__(self, "header", self.header.lower())


@dataclass(frozen=True)
class Deployment:
    revision: int
    variants: tuple[Variant, ...]
    stickiness: Stickiness = Stickiness()
    rollout: dict[str, Any] | None = None
    analysis: dict[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> Variant:
        return next(v for v in self.variants if v.role == "primary")

    def role(self, role: str) -> Variant | None:
        return next((v for v in self.variants if v.role == role), None)

    @property
    def active(self) -> bool:
        """Whether a rollout holds the deployment (running or paused)."""
        return self.rollout is not None and self.rollout.get("status") in ACTIVE

    @property
    def serving(self) -> tuple[Variant, ...]:
        """The variants that answer requests (all but shadows)."""
        return tuple(v for v in self.variants if v.role != "shadow")

    def to_json(self) -> str:
        body = asdict(self)
        body["stickiness"] = {k: v for k, v in body["stickiness"].items() if v is not None}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @staticmethod
    def single(version: str, *, revision: int = 0) -> Deployment:
        """One primary variant taking all requests."""
        return Deployment(revision, (Variant("primary", version, 100.0, "primary"),))


@dataclass(frozen=True)
class Event:
    n: int
    at: float
    who: str
    action: str
    why: str
    revision: int
    evidence: dict[str, Any] = field(default_factory=dict)


def parse_spec(text: str, *, where: str = SPEC_TAG) -> Deployment:
    """The spec from its JSON.

    Raises:
        ConfigError: not JSON, or a field is missing or has the wrong type.
    """
    try:
        raw = json.loads(text)
        variants = tuple(
            Variant(
                name=str(v["name"]),
                version=str(v["version"]),
                weight=float(v["weight"]),
                role=str(v.get("role", "primary")),
                sample=float(v.get("sample", 0.0)),
            )
            for v in raw["variants"]
        )
        sticky = raw.get("stickiness") or {}
        return Deployment(
            revision=int(raw.get("revision", 0)),
            variants=variants,
            stickiness=Stickiness(sticky.get("field"), sticky.get("header")),
            rollout=raw.get("rollout"),
            analysis=dict(raw.get("analysis") or {}),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"the deployment spec in {where} is not valid: {type(exc).__name__}: {exc}",
            hint="fix or remove the tag, or write a new spec with 'prodml rollout set'",
        ) from None


def validate(spec: Deployment, known_versions: Iterable[str] | None = None) -> None:
    """Check a spec as a whole; every problem is named in one error.

    Raises:
        ConfigError: with one ``(variants[i].field, problem)`` per problem.
    """
    problems: list[tuple[str, str]] = []
    known = None if known_versions is None else set(known_versions)
    names: set[str] = set()
    versions: set[str] = set()
    for i, v in enumerate(spec.variants):
        where = f"variants[{i}]"
        if v.role not in ROLES:
            problems.append((f"{where}.role", f"'{v.role}' is not one of {', '.join(ROLES)}"))
        if not v.name or v.name in names:
            problems.append((f"{where}.name", f"'{v.name}' is empty or used twice"))
        names.add(v.name)
        if v.version in versions:
            problems.append((f"{where}.version", f"version {v.version} appears twice"))
        versions.add(v.version)
        if known is not None and v.version not in known:
            shown = ", ".join(sorted(known, key=lambda s: int(s) if s.isdigit() else 0)) or "none"
            problems.append((f"{where}.version", f"version {v.version} is not registered (have: {shown})"))
        if not (math.isfinite(v.weight) and 0 <= v.weight <= 100):
            problems.append((f"{where}.weight", f"{v.weight:g} is not between 0 and 100"))
        if v.role == "shadow" and v.weight != 0:
            problems.append((f"{where}.weight", "a shadow answers no request: its weight must be 0"))
        if v.role == "shadow" and not (0 < v.sample <= 100):
            problems.append((f"{where}.sample", f"{v.sample:g} is not in (0, 100]"))
    primaries = [v for v in spec.variants if v.role == "primary"]
    if len(primaries) != 1:
        problems.append(("variants", f"there must be exactly one primary, not {len(primaries)}"))
    if sum(1 for v in spec.variants if v.role == "canary") > 1:
        problems.append(("variants", "at most one canary at a time"))
    total = sum(v.weight for v in spec.serving)
    if abs(total - 100) > 1e-6:
        shown = " + ".join(f"{v.name} {v.weight:g}" for v in spec.serving)
        problems.append(("variants", f"the weights sum to {total:g} ({shown}), not 100"))
    if spec.stickiness.field and spec.stickiness.header:
        problems.append(("stickiness", "give a field or a header, not both"))
    if problems:
        raise ConfigError(
            "the deployment spec is not valid: " + "; ".join(f"{k}: {m}" for k, m in problems),
            hint="nothing was changed",
            problems=problems,
        )


def who() -> str:
    """The user and host a change is recorded under."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class DeploymentStore:
    """Read and change the deployment of registered model ``name`` in ``registry``."""

    def __init__(self, registry: Registry, name: str) -> None:
        self.registry = registry
        self.name = name

    def read(self) -> Deployment | None:
        """The stored spec, or None when the model has none (its champion then takes every request)."""
        text = self.registry.model_tags(self.name).get(SPEC_TAG)
        return None if text is None else parse_spec(text, where=f"model '{self.name}' tag {SPEC_TAG}")

    def current(self) -> Deployment:
        """The stored spec, or the implicit one: ``champion`` takes every request."""
        spec = self.read()
        if spec is not None:
            return spec
        champion = self.registry.alias_version(self.name, "champion")
        if champion is None:
            raise ConfigError(
                f"model '{self.name}' has no champion and no deployment spec",
                hint="promote a version first: prodml models promote NAME VERSION",
            )
        return Deployment.single(champion.version)

    def events(self) -> list[Event]:
        """Every recorded change, oldest first."""
        found = []
        for key, value in self.registry.model_tags(self.name).items():
            if key.startswith(EVENT_TAG) and key.removeprefix(EVENT_TAG).isdigit():
                try:
                    found.append(Event(**json.loads(value)))
                except (ValueError, TypeError):
                    continue  # a damaged event is skipped, not fatal: the spec is what serves
        return sorted(found, key=lambda e: e.n)

    def write(
        self,
        spec: Deployment,
        *,
        action: str,
        why: str,
        evidence: dict[str, Any] | None = None,
        expect_revision: int | None,
        by: str | None = None,
    ) -> Deployment:
        """Validate ``spec``, store it as the next revision and record the event.

        Args:
            expect_revision: the revision the change was based on (None: there was no stored spec).

        Raises:
            ConfigError: the spec is not valid, or the stored one changed since it was read.
        """
        validate(spec, [mv.version for mv in self.registry.versions(self.name)])
        stored = self.read()
        now = None if stored is None else stored.revision
        if now != expect_revision:
            raise ConfigError(
                f"the deployment of '{self.name}' changed meanwhile (revision {now}, expected "
                f"{expect_revision})",
                hint="read it again ('prodml rollout status') and retry; nothing was changed",
            )
        stored_spec = replace(spec, revision=(now or 0) + 1)
        tags = self.registry.model_tags(self.name)
        n = 1 + max((int(k.removeprefix(EVENT_TAG)) for k in tags if k.startswith(EVENT_TAG)), default=0)
        self.registry.set_model_tag(self.name, SPEC_TAG, stored_spec.to_json())
        event = Event(n, time.time(), by or who(), action, why, stored_spec.revision, evidence or {})
        self.registry.set_model_tag(self.name, f"{EVENT_TAG}{n}", json.dumps(asdict(event), default=str))
        return stored_spec

    def record(self, action: str, why: str, evidence: dict[str, Any] | None = None) -> None:
        """An event that changes no spec (e.g. one failed analysis window)."""
        tags = self.registry.model_tags(self.name)
        spec = self.read()
        n = 1 + max((int(k.removeprefix(EVENT_TAG)) for k in tags if k.startswith(EVENT_TAG)), default=0)
        event = Event(n, time.time(), who(), action, why, spec.revision if spec else 0, evidence or {})
        self.registry.set_model_tag(self.name, f"{EVENT_TAG}{n}", json.dumps(asdict(event), default=str))
