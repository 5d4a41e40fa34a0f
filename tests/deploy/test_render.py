"""Every target renders, validates offline, renders identically twice, and catches what it should."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from typer.testing import CliRunner

from prodml.cli.main import app
from prodml.core.errors import ConfigError
from prodml.core.project import Project, load_project
from prodml.deploy import TARGETS, DeploySettings, deploy_settings, render, render_files
from prodml.deploy.helm import template
from prodml.deploy.kserve import inference_services
from prodml.deploy.kubernetes import SECRET_KEYS, config_data, manifests
from prodml.deploy.validate import check_object, validate_dir


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", list(TARGETS))
def test_each_target_validates_and_renders_identically_twice(
    settings: DeploySettings, tmp_path: Path, target: str
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    render(settings, target, first)
    render(settings, target, second)
    assert _tree(first) == _tree(second)
    problems, checked = validate_dir(first)
    assert problems == []
    assert any("hadolint" in c for c in checked)
    assert any("github-workflow schema" in c for c in checked)
    assert any("promtool check rules" in c for c in checked)
    expected = {"k8s": "kubernetes/", "kserve": "kserve/", "helm": "helm template", "compose": "compose-spec"}
    assert any(expected[target] in c for c in checked), checked


def test_an_unknown_target_is_a_config_error(settings: DeploySettings) -> None:
    with pytest.raises(ConfigError, match="unknown deploy target 'swarm'") as caught:
        render_files(settings, "swarm")
    assert caught.value.exit_code == 2
    assert "k8s, kserve, helm, compose" in str(caught.value)


def _kind(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


def test_validation_catches_broken_objects(settings: DeploySettings) -> None:
    """Negative controls: the checks reject what a cluster would reject."""
    objs = manifests(settings)
    deployment = _kind(objs, "Deployment", "churn")
    assert check_object(deployment) == []
    deployment["spec"]["replicas"] = "two"
    assert check_object(deployment)
    service = _kind(objs, "Service")
    service["spec"]["prots"] = service["spec"].pop("ports")  # a typo, refused by strict validation
    assert check_object(service)
    isvc = inference_services(settings)[0]
    assert check_object(isvc) == []
    isvc["spec"]["predictor"]["canaryTrafficPercentage"] = 10
    assert any("canaryTrafficPercentage" in p for p in check_object(isvc))
    monitor = _kind(objs, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "often"
    assert check_object(monitor)


def test_the_configmap_is_the_projects_serve_settings(project: Project, settings: DeploySettings) -> None:
    """The ConfigMap's variables, read back by load_project, give the project's serve settings."""
    seen = load_project(project.root / "prodml.yaml", environ=config_data(settings)).serve
    assert seen.model_dump() == {**project.serve.model_dump(), "host": "0.0.0.0"}  # noqa: S104


def test_the_deployment_probes_drains_and_runs_locked_down(settings: DeploySettings) -> None:
    objs = manifests(settings)
    pod = _kind(objs, "Deployment", "churn")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["args"] == ["--model", "churn@champion"]
    # secrets are references only; every one is a key the Terraform module writes
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]}
    assert refs == {key for key, _ in SECRET_KEYS.values()}
    assert not any(o["kind"] == "Secret" for o in objs)
    ports = {p["name"]: p["port"] for p in _kind(objs, "Service")["spec"]["ports"]}
    assert ports == {"http": settings.serve.port, "grpc": settings.serve.grpc_port}
    hpa = _kind(objs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in hpa] == ["Resource", "Pods"]
    canary = _kind(objs, "Deployment", "churn-canary")["spec"]
    assert canary["replicas"] == 0
    assert canary["template"]["spec"]["containers"][0]["args"] == ["--model", "churn@challenger"]


def test_kserve_maps_the_rollout_and_declares_the_ports(project: Project) -> None:
    settings = deploy_settings(
        project.model_copy(update={"rollout": project.rollout.model_copy(update={"steps": [5, 50, 100]})})
    )
    rest, grpc = inference_services(settings, "serverless")
    assert rest["spec"]["predictor"]["canaryTrafficPercent"] == 5
    assert [p["name"] for p in rest["spec"]["predictor"]["containers"][0]["ports"]] == ["http1"]
    assert [p["name"] for p in grpc["spec"]["predictor"]["containers"][0]["ports"]] == ["h2c"]
    assert grpc["spec"]["predictor"]["containers"][0]["readinessProbe"]["grpc"] == {"port": 8081}
    (raw,) = inference_services(settings, "raw")
    assert [p["name"] for p in raw["spec"]["predictor"]["containers"][0]["ports"]] == ["http1", "h2c"]
    assert "canaryTrafficPercent" not in raw["spec"]["predictor"]


def test_the_helm_chart_takes_its_values(settings: DeploySettings, tmp_path: Path) -> None:
    render(settings, "helm", tmp_path)
    chart = tmp_path / "helm/churn"
    defaults = template(chart, namespace="prod")
    plain = [o for o in manifests(settings) if o["kind"] != "Namespace"]
    assert len(defaults) == len(plain)
    config = _kind(defaults, "ConfigMap")["data"]
    assert "PRODML_SERVE__CACHE__REDIS_URL" not in config
    assert {o["metadata"]["namespace"] for o in defaults} == {"prod"}
    changed = template(
        chart,
        {
            "image": "r.example.com/churn:2",
            "replicas": 4,
            "resources": {"memory": "2Gi"},
            "model": {"ref": "churn/7"},
            "redis": {"url": "redis://cache:6379/0"},
            "kafka": {"bootstrapServers": "kafka:9092"},
        },
    )
    deployment = _kind(changed, "Deployment", "churn")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 4
    assert _kind(changed, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 4
    assert container["image"] == "r.example.com/churn:2"
    assert container["args"] == ["--model", "churn/7"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    config = _kind(changed, "ConfigMap")["data"]
    assert config["PRODML_SERVE__CACHE__REDIS_URL"] == "redis://cache:6379/0"
    assert config["PRODML_SERVE__REQUEST_LOG__KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    for obj in changed:
        assert check_object(obj) == []


def test_a_baked_package_is_digest_checked_at_start(project: Project, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "model.onnx").write_bytes(b"graph")
    (package / "schema.json").write_text("{}")
    settings = deploy_settings(project, package=package)
    out = tmp_path / "out"
    render(settings, "k8s", out)
    assert (out / "model/model.onnx").read_bytes() == b"graph"
    listed = dict(line.split("  ")[::-1] for line in (out / "model.sha256").read_text().splitlines())
    assert listed == {
        "/app/model/model.onnx": hashlib.sha256(b"graph").hexdigest(),
        "/app/model/schema.json": hashlib.sha256(b"{}").hexdigest(),
    }
    dockerfile = (out / "Dockerfile").read_text()
    assert (
        "sha256sum --check --quiet /app/model.sha256 && exec prodml serve --package /app/model" in dockerfile
    )
    assert "mlflow" not in dockerfile.split("FROM")[1]  # only the serving extra when nothing is fetched
    assert validate_dir(out)[0] == []
    assert not any(o["metadata"]["name"] == "churn-canary" for o in manifests(settings))


def _unquote(text: str) -> str:
    return text.strip('"')


def test_terraform_writes_the_secret_the_manifests_read_and_no_value(settings: DeploySettings) -> None:
    files = render_files(settings, "k8s")
    main = hcl2.loads(files["terraform/main.tf"])
    resources = {_unquote(kind): body for r in main["resource"] for kind, body in r.items()}
    secret = resources["kubernetes_secret_v1"]['"prodml"']
    data = secret["data"]  # merge({...}, optional redis-url): one expression of variables, no value
    assert data.startswith("${merge(")
    for key, _ in SECRET_KEYS.values():
        assert f'"{key}"' in data or f'\\"{key}\\"' in data, (key, data)
    assert "var.redis_url" in data and "var.admin_token" in data
    variables = [
        {_unquote(k): body for k, body in v.items()}
        for v in hcl2.loads(files["terraform/variables.tf"])["variable"]
    ]
    sensitive = {name for v in variables for name, body in v.items() if body.get("sensitive")}
    assert {
        "db_password",
        "admin_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "redis_url",
    } <= sensitive
    # no sensitive default but the empty "not set" of the optional Redis URL
    assert all(
        body.get("default") in (None, '""')
        for v in variables
        for name, body in v.items()
        if name in sensitive
    )


def test_compose_has_the_whole_stack(settings: DeploySettings) -> None:
    files = render_files(settings, "compose")
    services = yaml.safe_load(files["docker-compose.yaml"])["services"]
    assert {
        "postgres",
        "minio",
        "mlflow",
        "redis",
        "kafka",
        "serve-1",
        "serve-2",
        "proxy",
        "prometheus",
        "grafana",
    } <= set(services)
    assert "serve-1:8080" in files["compose/nginx.conf"] and "serve-2:8081" in files["compose/nginx.conf"]
    assert '"serve-1:8080"' in files["monitoring/targets/prodml.json"]
    assert services["serve-1"]["read_only"] is True
    assert "POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]


def test_the_cli_renders_and_validates(churn_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    done = runner.invoke(
        app, ["--project", str(churn_dir), "deploy", "render", "--target", "kserve", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert (out / "kserve/inferenceservice.yaml").is_file()
    checked = runner.invoke(app, ["deploy", "validate", str(out)])
    assert checked.exit_code == 0, checked.output
    assert "no problems" in checked.output
    bad = runner.invoke(
        app, ["--project", str(churn_dir), "deploy", "render", "--target", "nomad", "--out", str(out)]
    )
    assert bad.exit_code == 2
    assert "unknown deploy target 'nomad'" in bad.output
    small = runner.invoke(
        app,
        [
            "--project",
            str(churn_dir),
            "deploy",
            "render",
            "--target",
            "k8s",
            "--out",
            str(out),
            "--memory",
            "64Mi",
        ],
    )
    assert small.exit_code == 2
    assert "is below what the server needs" in small.output
    assert "Traceback" not in bad.output + small.output
    (out / "kserve/inferenceservice.yaml").write_text(
        (out / "kserve/inferenceservice.yaml").read_text().replace("minReplicas", "minReplica")
    )
    broken = runner.invoke(app, ["deploy", "validate", str(out)])
    assert broken.exit_code == 2
    assert "minReplica" in broken.output


def test_compose_references_are_resolved(settings: DeploySettings, tmp_path: Path) -> None:
    render(settings, "compose", tmp_path)
    path = tmp_path / "docker-compose.yaml"
    compose = yaml.safe_load(path.read_text())
    compose["services"]["grafana"]["depends_on"] = ["prometheus", "promethues"]
    compose["services"]["postgres"]["volumes"] = ["pgdata:/var/lib/postgresql/data"]
    (tmp_path / "compose/nginx.conf").unlink()
    path.write_text(yaml.safe_dump(compose))
    problems = [message for where, message in validate_dir(tmp_path)[0] if where == "docker-compose.yaml"]
    assert any("no service 'promethues'" in m for m in problems), problems
    assert any("named volume 'pgdata' is not declared" in m for m in problems), problems
    assert any("./compose/nginx.conf is not in" in m for m in problems), problems


def test_the_baked_entrypoint_refuses_a_tampered_model(project: Project, tmp_path: Path) -> None:
    """The image's entrypoint, run here with /app mapped to the build context: it starts the server only
    when every digest matches."""
    import json
    import subprocess

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "model.onnx").write_bytes(b"graph")
    (package / "schema.json").write_text("{}")
    out = tmp_path / "context"
    render(deploy_settings(project, package=package), "k8s", out)
    entry = next(
        line for line in (out / "Dockerfile").read_text().splitlines() if line.startswith("ENTRYPOINT")
    )
    command = json.loads(entry.removeprefix("ENTRYPOINT "))
    assert command[:2] == ["/bin/sh", "-c"]
    script = command[2].replace("exec prodml serve", "echo started").replace("/app/", f"{out}/")
    (out / "model.sha256").write_text((out / "model.sha256").read_text().replace("/app/", f"{out}/"))

    def start() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", script, "--"], capture_output=True, text=True, timeout=30, check=False
        )

    ok = start()
    assert ok.returncode == 0 and ok.stdout.startswith("started --package"), ok.stderr
    (out / "model/model.onnx").write_bytes(b"grapH")
    tampered = start()
    assert tampered.returncode != 0
    assert "started" not in tampered.stdout
    assert "model.onnx: FAILED" in tampered.stdout + tampered.stderr


def test_the_stream_worker_is_one_more_component(project: Project, tmp_path: Path) -> None:
    settings = deploy_settings(project, stream="requests,results,dead", stream_brokers="kafka:9092")
    objs = manifests(settings)
    worker = _kind(objs, "Deployment", "churn-stream")
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["prodml", "stream", "run"]
    assert container["args"][:2] == ["--brokers", "kafka:9092"]
    assert "--group" in container["args"] and "churn-stream" in container["args"]
    assert worker["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "stream"
    service = _kind(objs, "Service")
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "server"  # no traffic to workers
    render(settings, "helm", tmp_path)
    assert validate_dir(tmp_path)[0] == []
    assert "churn-stream" in {o["metadata"]["name"] for o in template(tmp_path / "helm/churn")}
    assert not any(o["metadata"]["name"] == "churn-stream" for o in manifests(deploy_settings(project)))


def test_bad_stream_settings_are_refused(project: Project) -> None:
    with pytest.raises(ConfigError, match="three different Kafka topics"):
        deploy_settings(project, stream="requests,requests,dead", stream_brokers="kafka:9092")
    with pytest.raises(ConfigError, match="--stream needs the Kafka brokers"):
        deploy_settings(project, stream="requests,results,dead")


def test_the_rendered_arguments_are_ones_the_commands_accept(project: Project) -> None:
    """Each container's command line parses against the real CLI (``--help`` stops it before it runs)."""
    settings = deploy_settings(project, stream="requests,results,dead", stream_brokers="kafka:9092")
    runner = CliRunner()
    for obj in manifests(settings):
        if obj["kind"] != "Deployment":
            continue
        container = obj["spec"]["template"]["spec"]["containers"][0]
        command = container.get("command", ["prodml", "serve"])[1:]  # the image's entrypoint is prodml serve
        done = runner.invoke(app, [*command, *container["args"], "--help"])
        assert done.exit_code == 0, (obj["metadata"]["name"], done.output)
        bad = runner.invoke(app, [*command, *container["args"], "--no-such-option", "--help"])
        assert bad.exit_code == 2


def test_the_alerts_go_to_the_operator_as_a_prometheus_rule(settings: DeploySettings, tmp_path: Path) -> None:
    render(settings, "helm", tmp_path)
    rules = yaml.safe_load((tmp_path / "monitoring/rules.yml").read_text())
    rule = _kind(manifests(settings), "PrometheusRule")
    assert rule["spec"] == rules
    # through the chart too: Prometheus' own {{ $labels }} templates survive Helm's
    assert _kind(template(tmp_path / "helm/churn"), "PrometheusRule")["spec"] == rules
    rule["spec"]["groups"][0]["rules"][1]["for"] = 5
    assert check_object(rule)


def test_the_public_api() -> None:
    import prodml.deploy

    assert sorted(prodml.deploy.__all__) == [
        "DeploySettings",
        "TARGETS",
        "deploy_settings",
        "render",
        "render_files",
    ]
    assert list(TARGETS) == ["k8s", "kserve", "helm", "compose"]


def test_passwords_in_the_project_file_are_never_rendered(churn_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import edit_project

    edit_project(
        churn_dir,
        serve__cache__redis_url="redis://:s3cret-redis@cache:6379/0",
        tracking__uri="postgresql+psycopg://mlflow:s3cret-db@db:5432/mlflow",
        serve__request_log__kafka={"bootstrap_servers": "k:9092", "config": {"sasl.password": "s3cret-sasl"}},
    )
    settings = deploy_settings(load_project(churn_dir))
    for target in TARGETS:
        out = tmp_path / target
        render(settings, target, out)
        for path in out.rglob("*"):
            if path.is_file():
                assert "s3cret" not in path.read_text(errors="replace"), path
    config = _kind(manifests(settings), "ConfigMap")["data"]
    assert "PRODML_SERVE__CACHE__REDIS_URL" not in config  # the pod reads it from the Secret
    env = _kind(manifests(settings), "Deployment", "churn")["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    assert {
        "name": "PRODML_SERVE__CACHE__REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "churn-secrets", "key": "redis-url", "optional": True}},
    } in env
    image_project = (tmp_path / "k8s/prodml.yaml").read_text()
    assert "postgresql+psycopg://mlflow@db:5432/mlflow" in image_project  # the user kept, the password cut


@pytest.mark.parametrize("target", ["k8s", "kserve", "helm"])
def test_every_reference_resolves(settings: DeploySettings, tmp_path: Path, target: str) -> None:
    """ConfigMaps the pods read are rendered with them; the Secret they read is the one Terraform writes;
    the Service, HPA, PDB and ServiceMonitor select the server's pods."""
    render(settings, target, tmp_path)
    if target == "helm":
        objs = template(tmp_path / "helm/churn")
    else:
        objs = [
            d
            for p in sorted(tmp_path.rglob("*.yaml"))
            if "kube" in str(p) or "kserve" in str(p)
            for d in yaml.safe_load_all(p.read_text())
            if d
        ]
    config_maps = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
    containers = [
        c
        for o in objs
        for c in (
            o["spec"]["template"]["spec"]["containers"] if o["kind"] == "Deployment"
            else o["spec"]["predictor"]["containers"] if o["kind"] == "InferenceService"
            else []
        )
    ]  # fmt: skip
    assert containers
    terraform = (tmp_path / "terraform/main.tf").read_text()
    for container in containers:
        for source in container["envFrom"]:
            assert source["configMapRef"]["name"] in config_maps
        for env in container["env"]:
            assert f'name      = "{env["valueFrom"]["secretKeyRef"]["name"]}"' in terraform
    if target != "kserve":
        pods = [o["spec"]["template"]["metadata"]["labels"] for o in objs if o["kind"] == "Deployment"]

        def selects(selector: dict[str, str]) -> int:
            return sum(all(labels.get(k) == v for k, v in selector.items()) for labels in pods)

        assert selects(_kind(objs, "Service")["spec"]["selector"]) == 2  # stable and canary
        assert selects(_kind(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]) == 1
        service_labels = _kind(objs, "Service")["metadata"]["labels"]
        monitor = _kind(objs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
        assert all(service_labels.get(k) == v for k, v in monitor.items())
        assert _kind(objs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "churn"
