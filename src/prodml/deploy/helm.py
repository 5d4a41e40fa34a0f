"""A Helm chart holding the Kubernetes target's objects, with values for what a team changes per
environment: image, replicas, resources, model reference, Redis and Kafka endpoints.

The templates are the rendered manifests with those fields replaced by ``{{ .Values.… }}``, so the chart
cannot drift from ``--target k8s``. No Helm binary is installable here, so :func:`template` renders a
chart the way ``helm template`` does for the small subset of the template language the chart uses
(value lookups, ``quote``, ``if`` … ``end`` around whole lines, ``.Release.Namespace``, string
literals, which escape the braces of Prometheus' alert templates) and refuses
anything else; tests validate its output like the plain manifests.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from prodml import __version__
from prodml.core.errors import ConfigError
from prodml.deploy.credentials import has_password
from prodml.deploy.files import Files, to_yaml
from prodml.deploy.kubernetes import config_data, manifests
from prodml.deploy.settings import DeploySettings

__all__ = ["chart_files", "template", "values"]

_NS = "__NAMESPACE__"
# a field replaced by a value: __S_path__ becomes a quoted string, __N_path__ a number
_SENTINEL = re.compile(r"'?__([SN])_([a-zA-Z.]+)__'?")
_CONDITIONAL = {  # ConfigMap variables present only when the value is set
    "PRODML_SERVE__CACHE__REDIS_URL": "redis.url",
    "PRODML_SERVE__REQUEST_LOG__KAFKA__BOOTSTRAP_SERVERS": "kafka.bootstrapServers",
}


def values(settings: DeploySettings) -> dict[str, Any]:
    serve = settings.serve
    kafka = serve.request_log.kafka
    redis = serve.cache.redis_url or ""
    return {
        "image": settings.image,
        "replicas": settings.replicas,
        "maxReplicas": settings.max_replicas,
        "resources": {"cpu": settings.cpu, "memory": settings.memory},
        "model": {"ref": settings.model_ref},
        # a URL with a password is the Secret's (redis-url), never a value
        "redis": {"url": "" if has_password(redis) else redis},
        "kafka": {"bootstrapServers": kafka.bootstrap_servers if kafka else ""},
    }


def chart_files(settings: DeploySettings) -> Files:
    """``helm/<name>/``: Chart.yaml, values.yaml, .helmignore and one template per object."""
    sentinels: dict[str, Any] = {
        "namespace": _NS,
        "image": "__S_image__",
        "replicas": "__N_replicas__",
        "max_replicas": "__N_maxReplicas__",
        "cpu": "__S_resources.cpu__",
        "memory": "__S_resources.memory__",
        "model_ref": "__S_model.ref__" if settings.package is None else "",
    }
    marked = dataclasses.replace(settings, **sentinels)
    root = f"helm/{settings.name}"
    files: Files = {
        f"{root}/Chart.yaml": to_yaml(
            {
                "apiVersion": "v2",
                "name": settings.name,
                "description": f"prodml inference service for {settings.project.name}",
                "type": "application",
                "version": __version__,
                "appVersion": __version__,
            }
        ),
        f"{root}/values.yaml": to_yaml(values(settings), header="Defaults; override with --set or -f."),
        f"{root}/.helmignore": ".git/\n*.tmp\n",
    }
    for obj in manifests(marked):
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "Namespace":
            continue  # the release's namespace: helm install --namespace NS --create-namespace
        if kind == "Deployment":
            obj["spec"]["template"]["metadata"].pop("annotations")  # the config hash of the defaults only
        if kind == "ConfigMap":
            obj["data"] = {k: v for k, v in config_data(settings).items() if k not in _CONDITIONAL}
        text = _SENTINEL.sub(_field, _escape(to_yaml(obj))).replace(_NS, "{{ .Release.Namespace }}")
        if kind == "ConfigMap":
            text += "".join(
                f"  {{{{- if .Values.{key} }}}}\n  {var}: {{{{ .Values.{key} | quote }}}}\n  {{{{- end }}}}\n"
                for var, key in _CONDITIONAL.items()
            )
        files[f"{root}/templates/{kind.lower()}-{name}.yaml"] = text
    return files


def _escape(text: str) -> str:
    """Braces that are not Helm's (Prometheus' alert templates) as Helm string literals."""
    if "{{" not in text:
        return text
    text = text.replace("{{", "\0L").replace("}}", "\0R")
    return text.replace("\0L", '{{ "{{" }}').replace("\0R", '{{ "}}" }}')


def _field(match: re.Match[str]) -> str:
    kind, path = match.groups()
    return f"{{{{ .Values.{path} | quote }}}}" if kind == "S" else f"{{{{ .Values.{path} }}}}"


# --- rendering, as `helm template` does for this subset ------------------------------------------

_EXPR = re.compile(r'\{\{-?\s*("(?:[^"\\]|\\.)*"|.*?)\s*-?\}\}')
_IF = re.compile(r"^\s*\{\{-\s*if\s+\.Values\.([a-zA-Z.]+)\s*\}\}\s*$")
_END = re.compile(r"^\s*\{\{-\s*end\s*\}\}\s*$")


def _lookup(tree: dict[str, Any], path: str, where: str) -> Any:
    node: Any = tree
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{where}: .Values.{path} is not set", hint="add it to values.yaml or --set it")
        node = node[key]
    return node


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def template(chart: Path, overrides: dict[str, Any] | None = None, namespace: str = "default") -> list[Any]:
    """Render ``chart``'s templates with its values (and ``overrides``); return the objects, in file order."""
    tree = _merge(yaml.safe_load((chart / "values.yaml").read_text()) or {}, overrides or {})
    objects: list[Any] = []
    for path in sorted((chart / "templates").glob("*.yaml")):
        where = path.name
        lines: list[str] = []
        keep = [True]
        for line in path.read_text().splitlines():
            if m := _IF.match(line):
                keep.append(keep[-1] and bool(_lookup(tree, m.group(1), where)))
                continue
            if _END.match(line):
                keep.pop()
                continue
            if keep[-1]:
                lines.append(_EXPR.sub(_evaluator(tree, namespace, where), line))
        objects.extend(doc for doc in yaml.safe_load_all("\n".join(lines)) if doc)
    return objects


def _evaluator(tree: dict[str, Any], namespace: str, where: str) -> Callable[[re.Match[str]], str]:
    return lambda m: _eval(m.group(1), tree, namespace, where)


def _eval(expr: str, tree: dict[str, Any], namespace: str, where: str) -> str:
    if expr == ".Release.Namespace":
        return namespace
    if expr.startswith('"'):
        return str(json.loads(expr))  # a string literal: "{{" escapes Prometheus' braces
    m = re.fullmatch(r"\.Values\.([a-zA-Z.]+)(\s*\|\s*quote)?", expr)
    if m is None:
        raise ConfigError(f"{where}: '{{{{ {expr} }}}}' is outside the template subset prodml renders")
    value = _lookup(tree, m.group(1), where)
    if m.group(2):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)
