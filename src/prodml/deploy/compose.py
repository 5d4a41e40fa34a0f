"""docker-compose: the whole stack on one machine.

MLflow's tracking server on PostgreSQL with its artifacts in MinIO (S3-compatible), Redis for the
prediction cache, a Kafka broker for the request log, two ``prodml serve`` replicas behind nginx (REST
on 8080, gRPC on 8081), Prometheus with the rendered rules, and Grafana with the dashboard provisioned.
Passwords come from the environment (``.env``); none is written here.
"""

from __future__ import annotations

from typing import Any

from prodml.deploy.files import Files, to_yaml
from prodml.deploy.settings import DeploySettings

__all__ = ["REPLICAS", "compose_files"]

REPLICAS = ("serve-1", "serve-2")
_REQUIRED = "set it in .env (see .env.example)"


def _env(var: str) -> str:
    return f"${{{var}:?{_REQUIRED}}}"


def compose_files(settings: DeploySettings) -> Files:
    serve = settings.serve
    http, grpc = serve.port, serve.grpc_port
    server: dict[str, Any] = {
        "build": {"context": "."},
        "image": settings.image,
        "read_only": True,
        "tmpfs": ["/tmp", "/app/.prodml:uid=10001"],  # noqa: S108 - in the container
        "environment": {
            "PRODML_TRACKING_URI": "http://mlflow:5000",
            "PRODML_SERVE__CACHE__REDIS_URL": "redis://redis:6379/0",
            "PRODML_SERVE__REQUEST_LOG__KAFKA__BOOTSTRAP_SERVERS": "kafka:9092",
        },
        "depends_on": {
            "mlflow": {"condition": "service_started"},
            "redis": {"condition": "service_started"},
            "kafka": {"condition": "service_started"},
        },
        "restart": "unless-stopped",
        "stop_grace_period": "30s",
    }
    pg_url = "postgresql+psycopg2://mlflow:${POSTGRES_PASSWORD}@postgres:5432/mlflow"
    services: dict[str, Any] = {
        "postgres": {
            "image": "postgres:16-alpine",
            "environment": {
                "POSTGRES_USER": "mlflow",
                "POSTGRES_DB": "mlflow",
                "POSTGRES_PASSWORD": _env("POSTGRES_PASSWORD"),
            },
            "volumes": ["postgres:/var/lib/postgresql/data"],
            "healthcheck": {"test": ["CMD", "pg_isready", "-U", "mlflow"], "interval": "5s", "retries": 10},
        },
        "minio": {
            "image": "minio/minio:RELEASE.2025-04-22T22-12-26Z",
            "command": ["server", "/data", "--console-address", ":9001"],
            "environment": {
                "MINIO_ROOT_USER": _env("MINIO_ROOT_USER"),
                "MINIO_ROOT_PASSWORD": _env("MINIO_ROOT_PASSWORD"),
            },
            "volumes": ["minio:/data"],
            "ports": ["9001:9001"],
        },
        "create-bucket": {
            "image": "minio/mc:RELEASE.2025-04-16T18-13-26Z",
            "depends_on": ["minio"],
            "entrypoint": [
                "sh",
                "-c",
                'until mc alias set local http://minio:9000 "$$MINIO_ROOT_USER" "$$MINIO_ROOT_PASSWORD"; '
                "do sleep 1; done; mc mb --ignore-existing local/mlflow",
            ],
            "environment": {
                "MINIO_ROOT_USER": _env("MINIO_ROOT_USER"),
                "MINIO_ROOT_PASSWORD": _env("MINIO_ROOT_PASSWORD"),
            },
        },
        "mlflow": {
            "image": "ghcr.io/mlflow/mlflow:v3.17.2",
            "command": [
                "sh",
                "-c",
                "pip install --no-cache-dir psycopg2-binary==2.9.10 boto3==1.44.8 && mlflow server "
                f"--backend-store-uri {pg_url} --artifacts-destination s3://mlflow "
                "--host 0.0.0.0 --port 5000",
            ],
            "environment": {
                "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
                "AWS_ACCESS_KEY_ID": _env("MINIO_ROOT_USER"),
                "AWS_SECRET_ACCESS_KEY": _env("MINIO_ROOT_PASSWORD"),
            },
            "depends_on": {
                "postgres": {"condition": "service_healthy"},
                "create-bucket": {"condition": "service_completed_successfully"},
            },
            "ports": ["5000:5000"],
        },
        "redis": {
            "image": "redis:7.4-alpine",
            "command": ["redis-server", "--save", "", "--appendonly", "no"],
        },
        "kafka": {
            "image": "apache/kafka:3.9.1",
            "environment": {
                "KAFKA_NODE_ID": "1",
                "KAFKA_PROCESS_ROLES": "broker,controller",
                "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
                "KAFKA_ADVERTISED_LISTENERS": "PLAINTEXT://kafka:9092",
                "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@kafka:9093",
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            },
        },
        **dict.fromkeys(REPLICAS, server),
        "proxy": {
            "image": "nginx:1.27-alpine",
            "volumes": ["./compose/nginx.conf:/etc/nginx/nginx.conf:ro"],
            "ports": [f"{http}:{http}", f"{grpc}:{grpc}"],
            "depends_on": list(REPLICAS),
        },
        "prometheus": {
            "image": "prom/prometheus:v2.53.4",
            "command": ["--config.file=/etc/prometheus/prometheus.yml"],
            "volumes": ["./monitoring:/etc/prometheus:ro"],
            "ports": ["9090:9090"],
        },
        "grafana": {
            "image": "grafana/grafana:11.6.1",
            "environment": {"GF_SECURITY_ADMIN_PASSWORD": _env("GRAFANA_ADMIN_PASSWORD")},
            "volumes": [
                "./compose/grafana:/etc/grafana/provisioning:ro",
                "./monitoring/grafana:/var/lib/grafana/dashboards:ro",
            ],
            "ports": ["3000:3000"],
            "depends_on": ["prometheus"],
        },
    }
    compose = {
        "name": settings.name,
        "services": services,
        "volumes": {"postgres": {}, "minio": {}},
    }
    return {
        "docker-compose.yaml": to_yaml(compose, header="The local stack: docker compose up --build"),
        ".env.example": "".join(
            f"{var}=\n"
            for var in (
                "POSTGRES_PASSWORD",
                "MINIO_ROOT_USER",
                "MINIO_ROOT_PASSWORD",
                "GRAFANA_ADMIN_PASSWORD",
            )
        ),
        "compose/nginx.conf": _nginx(http, grpc),
        "compose/grafana/datasources/prometheus.yml": to_yaml(
            {
                "apiVersion": 1,
                "datasources": [
                    {
                        "name": "Prometheus",
                        "type": "prometheus",
                        "url": "http://prometheus:9090",
                        "isDefault": True,
                    }
                ],
            }
        ),
        "compose/grafana/dashboards/prodml.yml": to_yaml(
            {
                "apiVersion": 1,
                "providers": [
                    {"name": "prodml", "type": "file", "options": {"path": "/var/lib/grafana/dashboards"}}
                ],
            }
        ),
    }


def _nginx(http: int, grpc: int) -> str:
    upstream = "".join(f"        server {name}:{{port}};\n" for name in REPLICAS)
    return f"""\
events {{}}
http {{
    upstream prodml_http {{
{upstream.format(port=http)}    }}
    upstream prodml_grpc {{
{upstream.format(port=grpc)}    }}
    server {{
        listen {http};
        client_max_body_size 8m;
        location / {{
            proxy_pass http://prodml_http;
            proxy_set_header X-Request-Id $request_id;
        }}
    }}
    server {{
        listen {grpc};
        http2 on;
        location / {{
            grpc_pass grpc://prodml_grpc;
        }}
    }}
}}
"""
