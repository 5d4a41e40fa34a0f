"""A small trained, registered and promoted churn model, shared by the serving tests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from prodml.core.project import load_project
from prodml.data.examples import write_example
from tests.conftest import edit_project


@dataclass
class Served:
    """A project whose champion is registered in its own SQLite tracking store."""

    root: Path
    tracking: str
    rows: list[dict[str, object]]

    @property
    def env(self) -> dict[str, str]:
        return {"PRODML_TRACKING_URI": self.tracking, "PRODML_ADMIN_TOKEN": "test-token-0123456789"}


def train_and_promote(root: Path, tracking: str, *, max_iter: int) -> str:
    from prodml.pipeline.train import run_training
    from prodml.registry.mlflow import Registry
    from prodml.registry.promotion import promote

    edit_project(root, model__params={"max_iter": max_iter}, validation__folds=2, promotion__min=0.5)
    project = load_project(root)
    outcome = run_training(project, tracking_uri=tracking)
    promote(Registry(tracking), project.promotion, outcome.version.name, outcome.version.version)
    return outcome.version.version


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    root = tmp_path_factory.mktemp("served")
    write_example(root, "churn", customers=500, days=200, seed=11)
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    train_and_promote(root, tracking, max_iter=30)
    frame = pq.read_table(root / ".prodml/features/training.parquet")
    keep = [c for c in frame.column_names if c not in ("customer_id", "prediction_ts", "churned")]
    return Served(root, tracking, frame.select(keep).slice(0, 200).to_pylist())


@pytest.fixture
def project_copy(served: Served, tmp_path: Path) -> Served:
    """A private copy of the served project (its own registry file and model cache)."""
    target = tmp_path / "project"
    shutil.copytree(served.root, target, ignore=shutil.ignore_patterns("requests"))
    tracking = f"sqlite:///{target / 'mlflow.db'}"
    # the registered source paths point into the original's artifact store, which stays intact
    return Served(target, tracking, served.rows)
