"""``render(settings, target, out)``: every file a target needs, written under ``out``.

Every target gets the serving image (Dockerfile, .dockerignore, the project file, the baked package),
Prometheus and Grafana files and the CI workflow; then its own: Kubernetes manifests, KServe
InferenceServices, a Helm chart, or the compose stack. Kubernetes targets also get the Terraform module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prodml.core.errors import ConfigError
from prodml.deploy.ci import workflow_files
from prodml.deploy.compose import REPLICAS, compose_files
from prodml.deploy.files import Files, to_yaml, write_files
from prodml.deploy.helm import chart_files
from prodml.deploy.image import image_files, package_files
from prodml.deploy.kserve import inference_services
from prodml.deploy.kubernetes import config_map, manifests, namespace
from prodml.deploy.observability import monitoring_files
from prodml.deploy.settings import DeploySettings
from prodml.deploy.terraform import terraform_files

__all__ = ["TARGETS", "render", "render_files"]

_HEADER = "Rendered by prodml deploy render from prodml.yaml; render again rather than editing."


def _kubernetes(settings: DeploySettings) -> Files:
    files: Files = {}
    for i, obj in enumerate(manifests(settings)):
        name = f"kubernetes/{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        files[name] = to_yaml(obj, header=_HEADER)
    return files


def _kserve(settings: DeploySettings) -> Files:
    return {
        # the predictors read the server's settings from the same ConfigMap as the Deployment
        "kserve/config.yaml": to_yaml(namespace(settings), config_map(settings), header=_HEADER),
        "kserve/inferenceservice.yaml": to_yaml(*inference_services(settings, "serverless"), header=_HEADER),
        "kserve/raw/inferenceservice.yaml": to_yaml(*inference_services(settings, "raw"), header=_HEADER),
    }


def _cluster(own: Callable[[DeploySettings], Files]) -> Callable[[DeploySettings], Files]:
    def files(settings: DeploySettings) -> Files:
        return {**own(settings), **terraform_files(settings), **monitoring_files(settings, [])}

    return files


def _compose(settings: DeploySettings) -> Files:
    port = settings.serve.port
    return {**compose_files(settings), **monitoring_files(settings, [f"{r}:{port}" for r in REPLICAS])}


TARGETS: dict[str, Callable[[DeploySettings], Files]] = {
    "k8s": _cluster(_kubernetes),
    "kserve": _cluster(_kserve),
    "helm": _cluster(chart_files),
    "compose": _compose,
}


def render_files(settings: DeploySettings, target: str) -> Files:
    """The text files of ``target``; ConfigError for an unknown target."""
    if target not in TARGETS:
        raise ConfigError(
            f"unknown deploy target {target!r}",
            hint=f"use one of: {', '.join(TARGETS)}",
        )
    return {**image_files(settings), **TARGETS[target](settings), **workflow_files(settings, target)}


def render(settings: DeploySettings, target: str, out: Path) -> list[Path]:
    """Write ``target``'s files under ``out``; return the paths written."""
    return write_files(out, render_files(settings, target), binary=package_files(settings))
