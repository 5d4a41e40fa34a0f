"""Kubernetes objects for each component prodml runs, as plain dicts.

A component is one function ``(settings) -> list[object]``; :data:`COMPONENTS` lists them in the order
they are written. The server is the main one: ConfigMap (the project's ``serve`` settings
as ``PRODML_SERVE__*`` variables), Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget,
NetworkPolicy, ServiceMonitor, and its alerts as a PrometheusRule; its canary is a second Deployment
behind the same Service, idle until a canary starts. The stream worker (``--stream``) is one more
function; the rollout controller will be another.

Secrets are referenced, never rendered: every secret value comes from the Secret named by
:func:`secret_name` (Terraform's module creates it, or ``kubectl create secret``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from prodml.deploy.credentials import has_password
from prodml.deploy.image import STATE_DIR, UID, server_args
from prodml.deploy.observability import rules
from prodml.deploy.settings import DeploySettings

__all__ = [
    "COMPONENTS",
    "SECRET_KEYS",
    "config_data",
    "config_map",
    "manifests",
    "namespace",
    "secret_name",
    "server_container",
]

Obj = dict[str, Any]
Component = Callable[[DeploySettings], list[Obj]]

# environment variable → key in the Secret; optional ones may be absent from it
SECRET_KEYS: dict[str, tuple[str, bool]] = {
    "PRODML_TRACKING_URI": ("tracking-uri", False),
    # wins over the ConfigMap's value, which never holds a password (see credentials.scrub)
    "PRODML_SERVE__CACHE__REDIS_URL": ("redis-url", True),
    "PRODML_ADMIN_TOKEN": ("admin-token", True),
    "AWS_ACCESS_KEY_ID": ("aws-access-key-id", True),
    "AWS_SECRET_ACCESS_KEY": ("aws-secret-access-key", True),
}
DRAIN_S = 5  # preStop: endpoints stop sending new requests before SIGTERM starts the server's drain
INFLIGHT_TARGET = "4"  # requests in flight per pod the HPA aims at (prodml_inflight_requests)


def secret_name(settings: DeploySettings) -> str:
    return f"{settings.name}-secrets"


def config_data(settings: DeploySettings) -> dict[str, str]:
    """The project's ``serve`` settings as ``PRODML_SERVE__*`` variables (read by load_project)."""
    dumped = settings.serve.model_dump(mode="json")
    dumped["host"] = "0.0.0.0"  # noqa: S104 - a pod listens on its own address
    kafka = (dumped.get("request_log") or {}).get("kafka")
    if kafka:
        kafka.pop("config", None)  # librdkafka settings may hold credentials: pass them as secrets
    out: dict[str, str] = {"PRODML_LOG_JSON": "true"}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}__{key.upper()}", value)
        elif isinstance(node, str):
            if not has_password(node):  # a URL with a password comes from the Secret alone
                out[prefix] = node
        elif node is not None:
            out[prefix] = json.dumps(node)

    walk("PRODML_SERVE", dumped)
    return out


def _meta(settings: DeploySettings, name: str, component: str) -> Obj:
    return {
        "name": name,
        "namespace": settings.namespace,
        "labels": {**settings.labels, "app.kubernetes.io/component": component},
    }


def _selector(settings: DeploySettings, track: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/name": settings.name, "app.kubernetes.io/component": "server"}
    return {**out, "prodml.io/track": track} if track else out


def server_container(settings: DeploySettings, args: list[str]) -> Obj:
    """The server container: probes on the OIP health routes, limits, drain and a locked-down context."""
    serve = settings.serve
    env = [
        {
            "name": var,
            "valueFrom": {"secretKeyRef": {"name": secret_name(settings), "key": key, "optional": optional}},
        }
        for var, (key, optional) in SECRET_KEYS.items()
        if settings.package is None or var != "PRODML_TRACKING_URI"
    ]
    return {
        "name": "server",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "ports": [
            {"name": "http", "containerPort": serve.port, "protocol": "TCP"},
            {"name": "grpc", "containerPort": serve.grpc_port, "protocol": "TCP"},
        ],
        "envFrom": [{"configMapRef": {"name": f"{settings.name}-serve"}}],
        "env": env,
        "resources": {
            "requests": {"cpu": settings.cpu, "memory": settings.memory},
            "limits": {"cpu": settings.cpu, "memory": settings.memory},
        },
        "startupProbe": _probe(serve.port, "/v2/health/live", period=2, failures=30),
        "livenessProbe": _probe(serve.port, "/v2/health/live", period=10, failures=3),
        "readinessProbe": _probe(serve.port, "/v2/health/ready", period=2, failures=1),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_S}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}, {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    }


def _probe(port: int, path: str, *, period: int, failures: int) -> Obj:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _deployment(settings: DeploySettings, name: str, track: str, replicas: int, args: list[str]) -> Obj:
    config_hash = hashlib.sha256(json.dumps(config_data(settings), sort_keys=True).encode()).hexdigest()
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": _selector(settings, track)},
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(settings, name, "server"),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(settings, track)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": {**settings.labels, **_selector(settings, track)},
                    "annotations": {"prodml.io/config-sha256": config_hash},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    # the preStop sleep, the server's drain, and a margin
                    "terminationGracePeriodSeconds": DRAIN_S + 25,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": UID,
                        "runAsGroup": UID,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": spread,
                    "containers": [server_container(settings, args)],
                    "volumes": [
                        {"name": "state", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    ],
                },
            },
        },
    }


def config_map(settings: DeploySettings) -> Obj:
    """``NAME-serve``: the server's settings, read by every pod that runs prodml (envFrom)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(settings, f"{settings.name}-serve", "server"),
        "data": config_data(settings),
    }


def namespace(settings: DeploySettings) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": settings.namespace, "labels": {"app.kubernetes.io/part-of": "prodml"}},
    }


def server(settings: DeploySettings) -> list[Obj]:
    """The inference server: config, workload, network, scaling, disruption budget and scraping."""
    name, serve = settings.name, settings.serve
    return [
        config_map(settings),
        _deployment(settings, name, "stable", settings.replicas, server_args(settings)),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(settings, name, "server"),
            "spec": {
                "type": "ClusterIP",
                "selector": _selector(settings),
                "ports": [
                    {"name": "http", "port": serve.port, "targetPort": "http", "protocol": "TCP"},
                    {
                        "name": "grpc",
                        "port": serve.grpc_port,
                        "targetPort": "grpc",
                        "protocol": "TCP",
                        "appProtocol": "kubernetes.io/h2c",
                    },
                ],
            },
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(settings, name, "server"),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": settings.replicas,
                "maxReplicas": settings.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70},
                        },
                    },
                    {  # served by a Prometheus adapter from the server's /metrics
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "prodml_inflight_requests"},
                            "target": {"type": "AverageValue", "averageValue": INFLIGHT_TARGET},
                        },
                    },
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(settings, name, "server"),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(settings, "stable")}},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(settings, name, "server"),
            "spec": {  # only the inference ports; the admin port stays on the pod's loopback
                "podSelector": {"matchLabels": _selector(settings)},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"ports": [{"port": "http", "protocol": "TCP"}, {"port": "grpc", "protocol": "TCP"}]}
                ],
            },
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": _meta(settings, name, "server"),
            "spec": {
                "selector": {"matchLabels": {**settings.labels, "app.kubernetes.io/component": "server"}},
                "namespaceSelector": {"matchNames": [settings.namespace]},
                "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
            },
        },
    ]


STREAM_METRICS_PORT = 9100


def stream_worker(settings: DeploySettings) -> list[Obj]:
    """The Kafka stream worker (``prodml stream run``) on the same image and model reference; replicas
    share the input topic's partitions through one consumer group. Rendered with ``--stream``."""
    stream = settings.stream
    if stream is None:
        return []
    name = f"{settings.name}-stream"
    args = [
        "--brokers", stream.brokers,
        "--input-topic", stream.input_topic,
        "--output-topic", stream.output_topic,
        "--dlq-topic", stream.dlq_topic,
        "--group", name,
        "--metrics-port", str(STREAM_METRICS_PORT),
        *server_args(settings),
    ]  # fmt: skip
    deployment = _deployment(settings, name, "stream", settings.replicas, args)
    deployment["metadata"]["labels"]["app.kubernetes.io/component"] = "stream"
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    container.update(name="stream", command=["prodml", "stream", "run"], ports=[])
    # its /metrics listens on the pod's loopback only (prodml stream run has no host option yet): probe
    # it from inside; Prometheus cannot scrape it until the worker can bind another address
    alive = f"http://127.0.0.1:{STREAM_METRICS_PORT}/metrics"
    probe = ["python", "-c", f"import urllib.request; urllib.request.urlopen('{alive}', timeout=2)"]
    container["livenessProbe"] = {"exec": {"command": probe}, "periodSeconds": 10, "failureThreshold": 3}
    container["startupProbe"] = {"exec": {"command": probe}, "periodSeconds": 2, "failureThreshold": 60}
    for key in ("readinessProbe", "lifecycle", "ports"):
        container.pop(key)
    pod["metadata"]["labels"]["app.kubernetes.io/component"] = "stream"
    deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "stream"
    for spread in pod["spec"]["topologySpreadConstraints"]:
        spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] = "stream"
    return [deployment]


def canary(settings: DeploySettings) -> list[Obj]:
    """A Deployment serving ``NAME@challenger`` behind the server's Service, at 0 replicas until a
    canary starts (``kubectl scale --replicas=1``; prodml's rollout controller walks it from there)."""
    if settings.package is not None:
        return []  # a baked image has no registry alias to follow
    ref = f"{settings.registered_model}@challenger"
    return [_deployment(settings, f"{settings.name}-canary", "canary", 0, ["--model", ref])]


def alerts(settings: DeploySettings) -> list[Obj]:
    """The alert rules of ``monitoring/rules.yml`` as a PrometheusRule, for the Prometheus Operator."""
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": _meta(settings, settings.name, "server"),
            "spec": rules(settings),
        }
    ]


COMPONENTS: list[Component] = [server, alerts, canary, stream_worker]


def manifests(settings: DeploySettings) -> list[Obj]:
    """Every component's objects, in order; the Namespace first."""
    return [namespace(settings)] + [obj for component in COMPONENTS for obj in component(settings)]
