"""A small trained churn model and its scoring input, and one Spark session for the batch tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prodml.core.project import Project, load_project
from prodml.data.examples import write_example
from tests.serve.conftest import train_and_promote


@dataclass
class Trained:
    """A project whose champion is registered in its own SQLite store, its verified package and an input
    table (``rows`` rows of feature values with a unique ``customer_id``)."""

    root: Path
    tracking: str
    package: Path
    table: pa.Table

    @property
    def project(self) -> Project:
        return load_project(self.root)

    def write(self, path: Path, rows: int | None = None, **kwargs: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.table if rows is None else self.table.slice(0, rows), path, **kwargs)
        return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from prodml.registry.mlflow import Registry

    root = tmp_path_factory.mktemp("batch-project")
    write_example(root, "churn", customers=300, days=150, seed=5)
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    train_and_promote(root, tracking, max_iter=20)
    registry = Registry(tracking)
    mv = registry.resolve("churn@champion")
    package = registry.load(mv, root / ".prodml" / "models")
    frame = pq.read_table(root / ".prodml/features/training.parquet").drop_columns(
        ["churned", "prediction_ts"]
    )
    rows = 3_000
    picked = frame.take(pa.array(np.random.default_rng(0).integers(0, frame.num_rows, rows)))
    table = picked.set_column(0, "customer_id", pa.array(np.arange(100_000, 100_000 + rows)))
    return Trained(root, tracking, package.path, table)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local[2] Spark session for the whole test session (a session takes ~25 s to start here)."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("prodml-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
