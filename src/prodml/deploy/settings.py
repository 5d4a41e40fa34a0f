"""What a rendering needs beyond ``prodml.yaml``: the image, the cluster's sizes, the model's size.

:func:`deploy_settings` checks them once, so every renderer reads plain, valid values. Sizes are
Kubernetes quantities (``512Mi``, ``1Gi``, ``500m``); a memory limit that cannot hold the model is refused
before anything is written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from prodml import __version__
from prodml.core.errors import ConfigError
from prodml.core.project import Project, Rollout, Serve

__all__ = [
    "BASE_MEMORY",
    "KUBERNETES_VERSION",
    "DeploySettings",
    "StreamSpec",
    "deploy_settings",
    "parse_quantity",
]

KUBERNETES_VERSION = "1.37.0"
"""The Kubernetes version the manifests are written for and validated against."""
BASE_MEMORY = 256 << 20
"""Bytes a worker needs before its model: the interpreter, ONNX Runtime and the server."""

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
_UNITS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def parse_quantity(value: str, what: str) -> float:
    """A Kubernetes quantity as a number (``"1Gi"`` → 1073741824, ``"500m"`` → 0.5)."""
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ConfigError(
            f"{what} {value!r} is not a Kubernetes quantity",
            hint="write it like 512Mi, 1Gi or 2G for memory, 500m or 2 for CPU",
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class StreamSpec:
    """The Kafka stream worker (``prodml stream run``): where it reads, writes and sends dead letters."""

    brokers: str
    input_topic: str
    output_topic: str
    dlq_topic: str


@dataclass(frozen=True)
class DeploySettings:
    """Everything the renderers read. Build it with :func:`deploy_settings`."""

    project: Project
    name: str
    """DNS-1123 name of the service (the project name, ``_`` → ``-``)."""
    namespace: str
    image: str
    model_ref: str
    """Registry reference the server follows (``NAME@champion``), or ``""`` when the package is baked in."""
    package: Path | None
    model_bytes: int | None
    """Size of the model package, when it is known here (baked in, or in the local package cache)."""
    replicas: int
    max_replicas: int
    cpu: str
    memory: str
    stream: StreamSpec | None = None
    """Render the stream worker too (``--stream IN,OUT,DLQ``)."""
    kubernetes_version: str = KUBERNETES_VERSION

    @property
    def serve(self) -> Serve:
        return self.project.serve

    @property
    def rollout(self) -> Rollout:
        return self.project.rollout

    @property
    def registered_model(self) -> str:
        return self.project.tracking.registered_model or self.project.name

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.name, "app.kubernetes.io/part-of": "prodml"}


def deploy_settings(
    project: Project,
    *,
    image: str | None = None,
    namespace: str | None = None,
    model: str | None = None,
    package: Path | None = None,
    replicas: int = 2,
    max_replicas: int = 10,
    cpu: str = "1",
    memory: str = "1Gi",
    stream: str | None = None,
    stream_brokers: str | None = None,
) -> DeploySettings:
    """Check the options against the project and the model; raise ConfigError naming the option to fix."""
    name = project.name.lower().replace("_", "-")
    namespace = namespace or name
    if not _DNS_LABEL.match(namespace):
        raise ConfigError(
            f"--namespace {namespace!r} is not a valid Kubernetes namespace",
            hint="use lower-case letters, digits and '-', at most 63 characters",
        )
    if replicas < 1 or max_replicas < replicas:
        raise ConfigError(
            f"--replicas {replicas} / --max-replicas {max_replicas}: need 1 <= replicas <= max-replicas",
            hint="raise --max-replicas or lower --replicas",
        )
    if package is not None and model is not None:
        raise ConfigError("give --model or --package, not both", hint="--package bakes a local package in")
    if package is not None and not (package / "model.onnx").is_file():
        raise ConfigError(
            f"--package {package}: no model.onnx there",
            hint="point it at a model package directory (what 'prodml train' registers)",
        )
    parse_quantity(cpu, "--cpu")
    limit = parse_quantity(memory, "--memory")
    ref = (
        ""
        if package is not None
        else (model or f"{project.tracking.registered_model or project.name}@champion")
    )
    size = _package_bytes(package) if package is not None else _cached_bytes(project, ref)
    need = project.serve.workers * (BASE_MEMORY + 2 * (size or 0))
    if limit < need:
        model = f" + 2 x {_mib(size)} model" if size is not None else ""
        raise ConfigError(
            f"--memory {memory} ({_mib(limit)}) is below what the server needs: "
            f"{project.serve.workers} worker(s) x ({_mib(BASE_MEMORY)} base{model}) = {_mib(need)}",
            hint=f"give --memory {-(-need // (1 << 20))}Mi or more, or fewer serve.workers",
        )
    return DeploySettings(
        stream=_stream(project, stream, stream_brokers) if stream is not None else None,
        project=project,
        name=name,
        namespace=namespace,
        image=image or f"prodml/{name}:{__version__}",
        model_ref=ref,
        package=package,
        model_bytes=size,
        replicas=replicas,
        max_replicas=max_replicas,
        cpu=cpu,
        memory=memory,
    )


def _stream(project: Project, topics: str, brokers: str | None) -> StreamSpec:
    names = [t.strip() for t in topics.split(",")]
    if len(names) != 3 or len(set(names)) != 3 or not all(_TOPIC.match(t) for t in names):
        raise ConfigError(
            f"--stream {topics!r}: give three different Kafka topics, INPUT,OUTPUT,DEAD_LETTERS",
            hint="e.g. --stream churn-requests,churn-results,churn-dead-letters",
        )
    kafka = project.serve.request_log.kafka
    brokers = brokers or (kafka.bootstrap_servers if kafka else None)
    if not brokers:
        raise ConfigError(
            "--stream needs the Kafka brokers",
            hint="give --stream-brokers HOST:PORT, or set serve.request_log.kafka.bootstrap_servers",
        )
    return StreamSpec(brokers, *names)


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def _package_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file())


def _cached_bytes(project: Project, ref: str) -> int | None:
    """The size of the version ``ref`` last pointed to in the local package cache, if it is there."""
    name = ref.split("@")[0].split("/")[0]
    refs = project.state_dir / "models" / name / "refs.json"
    if not refs.is_file():
        return None
    entry = json.loads(refs.read_text()).get(ref)
    directory = project.state_dir / "models" / name / str(entry["version"]) if entry else None
    return _package_bytes(directory) if directory is not None and directory.is_dir() else None
