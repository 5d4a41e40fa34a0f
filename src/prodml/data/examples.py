"""Example projects written by ``prodml init``: a commented ``prodml.yaml`` and its data."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prodml.core.errors import ConfigError
from prodml.core.files import atomic_path, atomic_write_text
from prodml.data.simulate import simulate, write_world

__all__ = ["EXAMPLES", "Example", "write_example"]

Example = Literal["churn", "breast-cancer", "diabetes"]
EXAMPLES: tuple[Example, ...] = ("churn", "breast-cancer", "diabetes")


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _sklearn_table(example: Example) -> tuple[str, pa.Table]:
    from sklearn import datasets

    if example == "breast-cancer":
        bunch = datasets.load_breast_cancer()
        # scikit-learn codes malignant as 0; the positive class of a screening model is malignant.
        target_name, target = "malignant", (bunch.target == 0).astype(np.int64)
        entity, stem = "sample_id", "breast_cancer"
    else:
        bunch = datasets.load_diabetes(scaled=False)
        target_name, target = "progression", bunch.target.astype(np.float64)
        entity, stem = "patient_id", "diabetes"
    cols: dict[str, pa.Array] = {entity: pa.array(np.arange(1, len(target) + 1, dtype=np.int64))}
    for i, name in enumerate(bunch.feature_names):
        cols[_snake(name)] = pa.array(bunch.data[:, i].astype(np.float64))
    cols[target_name] = pa.array(target)
    return stem, pa.table(cols)


def write_example(
    directory: Path,
    example: Example = "churn",
    *,
    customers: int = 5_000,
    days: int = 365,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write ``prodml.yaml`` and ``data/`` for ``example`` into ``directory``; return the project file.

    Raises:
        ConfigError: the example is unknown, or a project file exists there and ``force`` is false.
    """
    if example not in EXAMPLES:
        raise ConfigError(f"unknown example '{example}'", hint=f"choose one of: {', '.join(EXAMPLES)}")
    project_file = directory / "prodml.yaml"
    if project_file.exists() and not force:
        raise ConfigError(
            f"{project_file} already exists",
            hint="choose another directory, or pass --force to overwrite it",
        )
    data = directory / "data"
    if example == "churn":
        write_world(simulate(customers, days, seed), data)
    else:
        stem, table = _sklearn_table(example)
        data.mkdir(parents=True, exist_ok=True)
        with atomic_path(data / f"{stem}.parquet") as tmp:
            pq.write_table(table, tmp)
    template = resources.files("prodml") / "templates" / f"{example}.yaml"
    atomic_write_text(project_file, template.read_text(encoding="utf-8"))
    gitignore = directory / ".gitignore"
    if not gitignore.exists():
        atomic_write_text(gitignore, "# prodml's local state: tracking store, features, caches\n.prodml/\n")
    return project_file
