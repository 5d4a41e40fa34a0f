"""Training time per estimator, and prediction latency of the ONNX package beside the native model.

    python benchmarks/bench_train.py [--customers 5000] [--days 365]

Every estimator trains on the same churn frame (the demo world's point-in-time features). Latency is
the median of repeated calls on 1 row and on 10,000 rows, with one thread on both sides (as a serving
worker is pinned): the native scikit-learn pipeline (``predict_proba`` on a DataFrame) against the ONNX
graph in ONNX Runtime (the package the server loads).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from prodml.core.project import load_project
from prodml.data.examples import write_example
from prodml.data.sources import Catalog
from prodml.export.onnx import onnx_inputs, to_onnx
from prodml.export.package import ModelPackage
from prodml.features.offline import build_training_frame
from prodml.train.metrics import compute
from prodml.train.pipeline import build_pipeline
from prodml.train.splits import holdout_split
from prodml.train.trainer import prepare

ESTIMATORS = [
    "logistic_regression",
    "random_forest",
    "gradient_boosting",
    "hist_gradient_boosting",
    "lightgbm",
    "xgboost",
]


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--only", default=",".join(ESTIMATORS))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        write_example(Path(tmp), "churn", customers=args.customers, days=args.days, seed=0)
        project = load_project(tmp)
        frame = build_training_frame(Catalog(project))
    X, y, _ = prepare(frame, project)
    split = holdout_split(len(y), 0.2, times=frame.table.column("prediction_ts").to_numpy())
    Xt, yt = X.iloc[split.train], y[split.train]
    Xh, yh = X.iloc[split.test].reset_index(drop=True), y[split.test]
    one, many = Xh.head(1), Xh.head(10_000)
    print(
        f"frame: {len(X):,} rows x {X.shape[1]} features; train {len(Xt):,}, holdout {len(Xh):,}", flush=True
    )

    rows = []
    for name in args.only.split(","):
        p = project.model_copy(
            update={"model": project.model.model_copy(update={"estimator": name, "params": {}})}
        )
        pipe = build_pipeline(p, list(X.columns), frame.categorical)
        start = time.perf_counter()
        pipe.fit(Xt, yt)
        fit_s = time.perf_counter() - start
        auc = compute("binary", ["roc_auc"], yh, pipe.predict_proba(Xh)[:, 1])["roc_auc"]
        model = to_onnx(pipe, Xt.head(100))
        session = ModelPackage(Path(), model.SerializeToString(), {}, {}, {}, {}, "").session(
            intra_op_threads=1
        )
        feeds_one, feeds_many = onnx_inputs(one), onnx_inputs(many)
        with threadpool_limits(1):
            native_1 = median_ms(lambda pipe=pipe: pipe.predict_proba(one), 200)
            native_n = median_ms(lambda pipe=pipe: pipe.predict_proba(many), 10)
        onnx_1 = median_ms(lambda s=session, f=feeds_one: s.run(None, f), 2000)
        onnx_n = median_ms(lambda s=session, f=feeds_many: s.run(None, f), 10)
        rows.append((name, fit_s, auc, native_1, onnx_1, native_n, onnx_n))
        print(f"  {name}: fit {fit_s:.2f} s", flush=True)

    print(
        "\n| estimator | fit (s) | holdout ROC-AUC | native 1 row (ms) | ONNX 1 row (ms) | speed-up "
        "| native 10k rows (ms) | ONNX 10k rows (ms) | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, fit_s, auc, n1, o1, nn, on in rows:
        digits = 0 if n1 >= 10 * o1 else 1  # 101x, but 0.4x rather than "0x"
        print(
            f"| {name} | {fit_s:.2f} | {auc:.4f} | {n1:.3f} | {o1:.3f} | {n1 / o1:.{digits}f}x "
            f"| {nn:.1f} | {on:.1f} | {nn / on:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
