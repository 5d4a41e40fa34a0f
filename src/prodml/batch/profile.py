"""The batch's input profile, in ``profile.json``'s format, for the monitor to compare with the reference.

Computed on a systematic sample (every k-th row, at most ``SAMPLE_ROWS`` rows) of the model's input
columns and of the predictions, with the functions that built the package's reference profile
(:mod:`prodml.export.profile`), so the two are comparable bin for bin.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from prodml.batch.inputs import Input
from prodml.export.profile import categorical_profile, numeric_profile

__all__ = ["SAMPLE_ROWS", "batch_profile"]

SAMPLE_ROWS = 100_000


def _sample(batches: Any, rows: int | None, cap: int) -> pa.Table | None:
    stride = max(1, -(-rows // cap)) if rows else 1
    taken: list[pa.RecordBatch] = []
    seen = kept = 0
    for batch in batches:
        offset = (-seen) % stride
        picked = batch.take(pa.array(np.arange(offset, batch.num_rows, stride, dtype=np.int64)))
        seen += batch.num_rows
        taken.append(picked)
        kept += picked.num_rows
        if kept >= cap:
            break
    return pa.Table.from_batches(taken) if taken else None


def batch_profile(
    source: Input,
    model_schema: dict[str, Any],
    output: tuple[pafs.FileSystem, list[str], str] | None,
    prediction: str | None,
    *,
    cap: int = SAMPLE_ROWS,
) -> dict[str, Any]:
    """Profile the model's input columns of ``source`` and the ``prediction`` column of the output files
    (``output``: filesystem, files, format), each on at most ``cap`` rows spread over the whole input."""
    names = [c["name"] for c in model_schema["inputs"]]
    strings = {c["name"] for c in model_schema["inputs"] if c["dtype"] == "string"}
    total = source.count_rows()
    table = _sample(
        source.dataset.to_batches(columns=names, batch_readahead=1, fragment_readahead=1), total, cap
    )
    features: dict[str, Any] = {}
    if table is not None:
        for name in names:
            column = table.column(name)
            if name in strings:
                features[name] = categorical_profile(column.to_pandas())
            else:
                values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
                features[name] = numeric_profile(values)
    profile: dict[str, Any] = {
        "rows": total,
        "sampled_rows": table.num_rows if table else 0,
        "features": features,
    }
    if output is not None and prediction is not None and output[1]:
        fs, files, fmt = output
        data = ds.dataset(files, filesystem=fs, format=ds.CsvFileFormat() if fmt == "csv" else fmt)
        scored = _sample(data.to_batches(columns=[prediction]), int(data.count_rows()), cap)
        if scored is not None:
            values = scored.column(prediction).cast(pa.float64()).to_numpy(zero_copy_only=False)
            profile["prediction"] = numeric_profile(values)
    return profile
