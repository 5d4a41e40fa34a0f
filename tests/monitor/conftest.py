"""A monitored world: a reference profile, a model package holding it, and real request logs written by
the server's own :class:`~prodml.serve.reqlog.RequestLog` (clean or drifted traffic, with feedback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from prodml.export.profile import reference_profile
from prodml.serve.reqlog import RequestLog
from prodml.serve.validation import NUMBERS, STRINGS
from tests.conftest import write_project

NUMERIC = ("age", "fee", "sessions_30d")
STRING = ("plan", "country")
LAYOUT = (NUMERIC, STRING)
DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01 UTC


def world(rng: np.random.Generator, n: int, drift: float = 0.0) -> pd.DataFrame:
    """Customers; ``drift`` shifts ages up, sessions down and moves customers to the enterprise plan."""
    plan_p = [0.6 - 0.3 * drift, 0.3, 0.1 + 0.3 * drift]
    return pd.DataFrame(
        {
            "age": rng.normal(40 + 8 * drift, 12, n).clip(18, 90).round(),
            "fee": rng.choice([9.99, 29.99, 99.0], n, p=[0.6, 0.3, 0.1]),
            "sessions_30d": rng.poisson(20 * (1 - 0.5 * drift), n).astype(float),
            "plan": rng.choice(["basic", "pro", "enterprise"], n, p=plan_p),
            "country": rng.choice(["US", "DE", "GB", "FR"], n),
        }
    )


def score(frame: pd.DataFrame) -> np.ndarray:
    """A fixed 'model': churn probability falls with sessions."""
    z = 1.5 - 0.12 * frame["sessions_30d"].to_numpy() + 0.01 * (frame["age"].to_numpy() - 40)
    return 1 / (1 + np.exp(-z))


@pytest.fixture(scope="session")
def profile() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    train = world(rng, 20_000)
    return reference_profile(train, list(STRING), score(train))


def write_package_dir(directory: Path, profile: dict[str, Any]) -> Path:
    """A package directory (the graph bytes are not read by monitoring)."""
    directory.mkdir(parents=True, exist_ok=True)
    inputs = [{"name": c, "dtype": "float"} for c in NUMERIC] + [
        {"name": c, "dtype": "string"} for c in STRING
    ]
    files = {
        "schema.json": {"inputs": inputs, "outputs": ["label", "probabilities"], "threshold": 0.5},
        "profile.json": profile,
        "metrics.json": {},
        "lineage.json": {},
    }
    for name, doc in files.items():
        (directory / name).write_text(json.dumps(doc))
    (directory / "model.onnx").write_bytes(b"not read")
    (directory / "model_card.md").write_text("# test\n")
    return directory


def log_traffic(
    log_dir: Path,
    frame: pd.DataFrame,
    *,
    start: float,
    seconds_per_request: float,
    rows_per_request: int = 10,
    version: str = "1",
    labels: np.ndarray | None = None,
    tag: str = "r",
) -> None:
    """Send ``frame`` through the server's request log in requests of ``rows_per_request`` rows."""
    log = RequestLog(log_dir)
    numbers = frame[list(NUMERIC)].to_numpy(np.float32)
    strings = frame[list(STRING)].to_numpy(object)
    p = score(frame).astype(np.float32)
    probabilities = np.stack([1 - p, p], axis=1)
    for k, i in enumerate(range(0, len(frame), rows_per_request)):
        rows = slice(i, i + rows_per_request)
        request_id = f"{tag}{k}"
        log.record(
            request_id,
            "churn",
            version,
            {NUMBERS: numbers[rows], STRINGS: strings[rows]},
            [(p[rows] > 0.5).astype(np.int64), probabilities[rows]],
            start + k * seconds_per_request,
            LAYOUT,
        )
        if labels is not None:
            log.feedback(request_id, float(labels[i]), start + k * seconds_per_request + DAY)
        if log.pending > 20_000:
            log.flush()
    log.flush()


MINIMAL = """
name: churn
entity: id
sources:
  t: {path: data/t.parquet}
target: {source: t, column: y}
monitor: {window_rows: 2000}
"""


@pytest.fixture
def project_dir(tmp_path: Path, profile: dict[str, Any]) -> Path:
    """A project with a package (``package/``) and a week of clean then a week of drifted traffic."""
    write_project(tmp_path, MINIMAL)
    write_package_dir(tmp_path / "package", profile)
    return tmp_path
