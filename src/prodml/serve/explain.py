"""Per-request explanations for KServe v1 ``:explain``: Shapley values estimated by permutation sampling.

The explainer needs nothing but the ONNX graph and the reference profile — no SHAP library, no training
code on the serving path. For each row, ``permutations`` random feature orders walk from a baseline row
(training means and most frequent categories, from ``profile.json``) to the row itself, one feature at a
time; a feature's value is its average change of the prediction. All steps of all permutations run as one
batch through ONNX Runtime, and the values add up exactly to prediction − baseline prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prodml.serve.model import LoadedModel
from prodml.serve.validation import NUMBERS, STRINGS, bad_field

__all__ = ["MAX_ROWS", "explain_rows"]

MAX_ROWS = 10


def _baseline(model: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    """The reference row: training means for numbers, the most frequent category for strings."""
    features = model.package.profile.get("features", {})
    numbers = []
    for name in model.validator.numeric_names:
        mean = features.get(name, {}).get("mean")
        numbers.append(0.0 if mean is None else mean)
    strings = []
    for name in model.validator.string_names:
        freqs: dict[str, float] = features.get(name, {}).get("frequencies") or {"": 1.0}
        strings.append(max(freqs.items(), key=lambda kv: kv[1])[0])
    return np.asarray(numbers, np.float32), np.asarray(strings, dtype=object)


def _score(model: LoadedModel, outputs: list[np.ndarray]) -> np.ndarray:
    if model.runtime.task in ("binary", "multiclass"):
        proba = outputs[1]
        return proba[:, -1] if model.runtime.task == "binary" else proba.max(axis=1)
    return outputs[0].reshape(-1)


def explain_rows(
    model: LoadedModel, feeds: dict[str, np.ndarray], rows: int, *, permutations: int = 16, seed: int = 0
) -> list[dict[str, Any]]:
    """Shapley-value estimates for each row of validated ``feeds`` (at most :data:`MAX_ROWS` rows)."""
    if rows > MAX_ROWS:
        raise bad_field("instances", f"explain takes at most {MAX_ROWS} instances, {rows} given")
    numeric, strings = model.validator.numeric_names, model.validator.string_names
    names = numeric + strings
    k, n = len(numeric), len(names)
    if model.explain_baseline is None:  # the same for every request to this version: built once
        model.explain_baseline = _baseline(model)
    base_num, base_str = model.explain_baseline
    rng = np.random.default_rng(seed)
    out = []
    for r in range(rows):
        orders = np.array([rng.permutation(n) for _ in range(permutations)])
        # step s of permutation p: the first s features of its order take the row's values
        steps = np.zeros((permutations, n + 1, n), dtype=bool)
        for s in range(1, n + 1):
            steps[np.arange(permutations)[:, None], s, orders[:, :s]] = True
        take = steps.reshape(-1, n)
        batch: dict[str, np.ndarray] = {}
        if k:
            batch[NUMBERS] = np.where(take[:, :k], feeds[NUMBERS][r], base_num).astype(np.float32)
        if n > k:
            batch[STRINGS] = np.where(take[:, k:], feeds[STRINGS][r], base_str).astype(object)
        scores = _score(model, model.runtime.run(batch)).reshape(permutations, n + 1)
        deltas = np.diff(scores, axis=1)  # (p, n): change when the s-th feature of the order switched
        phi = np.zeros(n)
        for p in range(permutations):
            phi[orders[p]] += deltas[p]
        phi /= permutations
        out.append(
            {
                "base_value": float(scores[0, 0]),
                "prediction": float(scores[0, -1]),
                "shap_values": dict(zip(names, phi.round(6).tolist(), strict=True)),
            }
        )
    return out
