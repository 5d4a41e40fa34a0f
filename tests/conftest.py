"""Shared fixtures: small projects on disk, the demo world, real servers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from prodml.core.project import Project, load_project
from prodml.data.examples import write_example
from tests.servers import postgres_server, s3_server


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Undo what a test sets in ``os.environ``: ``prodml serve --workers N`` in-process, and importing
    MLflow's client, which loads Feast's plugin, which sets PROMETHEUS_MULTIPROC_DIR for every server the
    suite starts afterwards (their metrics would be summed with earlier servers' files)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def churn_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The churn example written once per session (small world); copy it before changing it."""
    directory = tmp_path_factory.mktemp("churn-template")
    write_example(directory, "churn", customers=400, days=200, seed=3)
    return directory


@pytest.fixture
def churn_dir(churn_template: Path, tmp_path: Path) -> Path:
    """A private copy of the churn example project."""
    target = tmp_path / "churn"
    shutil.copytree(churn_template, target)
    return target


@pytest.fixture
def churn_project(churn_dir: Path) -> Project:
    return load_project(churn_dir)


def write_project(directory: Path, text: str, tables: dict[str, pa.Table] | None = None) -> Path:
    """Write ``prodml.yaml`` (and Parquet tables under data/) for a hand-made test project."""
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prodml.yaml").write_text(text)
    for name, table in (tables or {}).items():
        (directory / "data").mkdir(exist_ok=True)
        pq.write_table(table, directory / "data" / f"{name}.parquet")
    return directory / "prodml.yaml"


def edit_project(project_dir: Path, **changes: object) -> None:
    """Change keys of ``prodml.yaml``: ``model__params={...}`` sets ``model.params``."""
    import yaml

    path = project_dir / "prodml.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A real PostgreSQL server for the whole test session."""
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server) for the whole test session."""
    with s3_server() as url:
        yield url
