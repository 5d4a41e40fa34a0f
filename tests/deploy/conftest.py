"""Projects to render: the churn example (no model), and the trained, promoted one the serving tests use."""

from __future__ import annotations

from pathlib import Path

import pytest

from prodml.core.project import Project, load_project
from prodml.deploy import DeploySettings, deploy_settings
from tests.serve.conftest import served  # noqa: F401 - the trained project, shared as a fixture here


@pytest.fixture
def project(churn_dir: Path) -> Project:
    return load_project(churn_dir)


@pytest.fixture
def settings(project: Project) -> DeploySettings:
    return deploy_settings(project, image="registry.example.com/churn:1.0")
