"""KServe ``InferenceService`` objects running prodml's image as a custom predictor (OIP v2).

KServe's two modes declare ports differently:

- ``serverless`` (Knative, the default): a container may expose one port, named ``http1`` for REST or
  ``h2c`` for gRPC, so REST and gRPC are two InferenceServices on the same image. Knative revisions carry
  ``canaryTrafficPercent``, mapped from the first of ``rollout.steps``.
- ``raw`` (plain Deployments): one InferenceService with both ports (KServe's Service gives the first
  port 80 and marks the ``h2c`` one for HTTP/2). KServe applies ``canaryTrafficPercent`` only to Knative
  revisions, so raw mode renders none; its canary is the Kubernetes target's canary Deployment.
"""

from __future__ import annotations

from typing import Any, Literal

from prodml.deploy.image import server_args
from prodml.deploy.kubernetes import server_container
from prodml.deploy.settings import DeploySettings

__all__ = ["MODES", "inference_services"]

Mode = Literal["serverless", "raw"]
MODES: tuple[Mode, ...] = ("serverless", "raw")


def _isvc(settings: DeploySettings, name: str, mode: Mode, ports: list[dict[str, Any]]) -> dict[str, Any]:
    container = server_container(settings, server_args(settings))
    container["name"] = "kserve-container"  # the name KServe looks for in a custom predictor
    container["ports"] = ports
    for key in ("lifecycle", "volumeMounts"):
        container.pop(key)
    container["volumeMounts"] = [
        {"name": "state", "mountPath": "/app/.prodml"},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
    ]
    if mode == "serverless":  # Knative allows probes only on the one declared port
        container.pop("startupProbe")
        for key in ("livenessProbe", "readinessProbe"):
            probe = container[key]
            if ports[0]["name"] == "h2c":
                probe.pop("httpGet")
                probe["grpc"] = {"port": ports[0]["containerPort"]}
            else:
                probe["httpGet"].pop("port")
    predictor: dict[str, Any] = {
        "minReplicas": settings.replicas,
        "maxReplicas": settings.max_replicas,
        "scaleMetric": "concurrency",
        "scaleTarget": 4,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [
            {"name": "state", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        ],
    }
    if mode == "serverless":
        predictor["canaryTrafficPercent"] = settings.rollout.steps[0]
    annotations = {
        "serving.kserve.io/deploymentMode": "Serverless" if mode == "serverless" else "RawDeployment"
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {**settings.labels, "app.kubernetes.io/component": "server"},
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def inference_services(settings: DeploySettings, mode: Mode = "serverless") -> list[dict[str, Any]]:
    serve = settings.serve
    http = {"name": "http1", "containerPort": serve.port, "protocol": "TCP"}
    grpc = {"name": "h2c", "containerPort": serve.grpc_port, "protocol": "TCP"}
    if mode == "raw":
        return [_isvc(settings, settings.name, mode, [http, grpc])]
    return [
        _isvc(settings, settings.name, mode, [http]),
        _isvc(settings, f"{settings.name}-grpc", mode, [grpc]),
    ]
