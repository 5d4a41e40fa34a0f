"""Rebuild the JSON schemas vendored under ``src/prodml/deploy/schemas`` (run by hand, not by pytest).

    python tests/deploy/vendor_schemas.py KSERVE_CRD.yaml SERVICEMONITOR_CRD.yaml GITHUB_WORKFLOW.json \
        COMPOSE_SPEC.json PROMETHEUSRULE_CRD.yaml

Sources: kserve/kserve ``config/crd/full/serving.kserve.io_inferenceservices.yaml`` (commit aaac4e29,
after v0.20.0-rc0), prometheus-operator ``example/prometheus-operator-crd/
monitoring.coreos.com_servicemonitors.yaml`` and ``…_prometheusrules.yaml`` (v0.93.0, commit 6adcebc5),
SchemaStore ``src/schemas/json/github-workflow.json`` (commit 3b6446ad), compose-spec
``schema/compose-spec.json`` (commit 170098ba).

A CRD's OpenAPI schema is trimmed to what validation of prodml's files needs: ``status`` is dropped,
``metadata`` is any object, and under the InferenceService's predictor the large per-framework sections
(sklearn, xgboost, ..., workerSpec, volumes) become "any value". Every object that declares its
properties is closed (``additionalProperties: false``), as ``kubectl --validate=strict`` treats unknown
fields, so a misspelt key fails validation instead of being pruned silently.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parents[2] / "src/prodml/deploy/schemas"
# predictor sections prodml never renders: the per-framework specs and the multi-node worker
ANY = (
    "huggingface",
    "lightgbm",
    "model",
    "onnx",
    "paddle",
    "pmml",
    "pytorch",
    "sklearn",
    "tensorflow",
    "triton",
    "xgboost",
    "workerSpec",
    "initContainers",
    "volumes",
    "affinity",
)


def close(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: close(v) for k, v in node.items() if k != "description"}
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [close(v) for v in node]
    return node


def crd_schema(path: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load(Path(path).read_text())
    found = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema: dict[str, Any] = found["schema"]["openAPIV3Schema"]
    schema["properties"].pop("status", None)
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def main(kserve: str, servicemonitor: str, workflow: str, compose: str, prometheusrule: str) -> None:
    isvc = crd_schema(kserve, "v1beta1")
    predictor = isvc["properties"]["spec"]["properties"]["predictor"]
    for key in ANY:
        predictor["properties"][key] = {}
    for key in ("transformer", "explainer", "canary"):
        isvc["properties"]["spec"]["properties"][key] = {"type": "object"}
    schemas = {
        "kserve-inferenceservice-v1beta1.json": close(isvc),
        "servicemonitor-v1.json": close(crd_schema(servicemonitor, "v1")),
        "github-workflow.json": json.loads(Path(workflow).read_text()),
        "compose-spec.json": json.loads(Path(compose).read_text()),
        "prometheusrule-v1.json": close(crd_schema(prometheusrule, "v1")),
    }
    for name, schema in schemas.items():
        (OUT / name).write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:6])
