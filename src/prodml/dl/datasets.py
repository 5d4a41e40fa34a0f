"""Data that ships here, for the examples and tests: scikit-learn's bundled 8×8 digits as a table.

Example:
    >>> write_digits("data/digits.parquet")  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prodml.core.files import atomic_path
from prodml.core.types import StrPath

__all__ = ["PIXELS", "digits_table", "write_digits"]

PIXELS = [f"p{i:02d}" for i in range(64)]  # row-major: p00..p07 is the top row


def digits_table() -> pa.Table:
    """1,797 digits: ``sample_id``, 64 pixel columns in [0, 16] (float), ``digit`` (int)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    columns = {"sample_id": np.arange(len(y), dtype=np.int64)}
    columns |= {name: X[:, i].astype(np.float64) for i, name in enumerate(PIXELS)}
    columns["digit"] = y.astype(np.int64)
    return pa.table(columns)


def write_digits(path: StrPath) -> None:
    """Write :func:`digits_table` to ``path`` (Parquet), atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(digits_table(), tmp)
