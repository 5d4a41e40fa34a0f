"""Deploy options checked before anything is written: quantities, namespace, the model's memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prodml.core.errors import ConfigError
from prodml.core.project import Project
from prodml.deploy.settings import BASE_MEMORY, deploy_settings, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", 1 << 30),
        ("512Mi", 512 << 20),
        ("2G", 2e9),
        ("500m", 0.5),
        ("2", 2.0),
        ("1.5Gi", 1.5 * (1 << 30)),
    ],
)
def test_quantities(text: str, value: float) -> None:
    assert parse_quantity(text, "--memory") == value


def test_a_bad_quantity_names_the_option(project: Project) -> None:
    with pytest.raises(ConfigError, match=r"--cpu 'two' is not a Kubernetes quantity"):
        deploy_settings(project, cpu="two")


def test_a_bad_namespace_and_replicas_are_refused(project: Project) -> None:
    with pytest.raises(ConfigError, match="not a valid Kubernetes namespace"):
        deploy_settings(project, namespace="Prod_NS")
    with pytest.raises(ConfigError, match="need 1 <= replicas <= max-replicas"):
        deploy_settings(project, replicas=5, max_replicas=3)


def _package(directory: Path, model_bytes: int) -> Path:
    directory.mkdir(parents=True)
    with (directory / "model.onnx").open("wb") as f:
        f.truncate(model_bytes)  # sparse: the size counts, the disk is not used
    (directory / "schema.json").write_text("{}")
    return directory


def test_a_memory_limit_below_the_baked_models_size_is_refused(project: Project, tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg", 600 << 20)
    with pytest.raises(ConfigError) as caught:
        deploy_settings(project, package=package, memory="512Mi")
    message = str(caught.value)
    assert "--memory 512Mi (512 MiB) is below what the server needs" in message
    assert "2 x 600 MiB model" in message
    assert "--memory 1457Mi or more" in message  # 256 base + 2 x (600 MiB + the 2-byte schema), rounded up
    assert deploy_settings(project, package=package, memory="1457Mi").model_bytes == (600 << 20) + 2


def test_the_model_size_comes_from_the_local_cache(project: Project) -> None:
    cache = project.state_dir / "models" / "churn"
    _package(cache / "3", 300 << 20)
    (cache / "refs.json").write_text(json.dumps({"churn@champion": {"version": "3", "digests": {}}}))
    assert deploy_settings(project, memory="1Gi").model_bytes == (300 << 20) + 2
    with pytest.raises(ConfigError, match="2 x 300 MiB model"):
        deploy_settings(project, memory="800Mi")
    # another reference is not in the cache: its size is unknown, only the base is checked
    assert deploy_settings(project, model="churn@challenger", memory="800Mi").model_bytes is None


def test_even_an_unknown_model_needs_the_base_memory(project: Project) -> None:
    with pytest.raises(ConfigError, match=f"= {BASE_MEMORY >> 20} MiB"):
        deploy_settings(project, memory="100Mi")


def test_package_and_model_are_exclusive_and_a_package_needs_its_graph(
    project: Project, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="not both"):
        deploy_settings(project, package=tmp_path, model="churn@champion")
    with pytest.raises(ConfigError, match=r"no model\.onnx there"):
        deploy_settings(project, package=tmp_path)
