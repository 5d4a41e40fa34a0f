"""Batch scoring, Parquet in → Parquet out, one run over the same input and model:

    python benchmarks/bench_batch.py [--rows 1000000] [--customers 1000] [--skip-spark]

1. prodml local   ``prodml.batch.score`` (pyarrow + the server's Validator and Runtime on every core);
2. prodml spark   the same job on Spark ``local[2]`` (``mapInArrow``, one ONNX Runtime session per worker);
3. spark_udf      ``mlflow.pyfunc.spark_udf`` over the scikit-learn pipeline logged as an MLflow pyfunc
                  (``predict_proba``), on the same Spark session;
4. pandas+sklearn a plain loop: record batches → pandas → ``predict_proba`` → ParquetWriter;
5. ceiling        the ONNX graph alone (as the server front-loads it) on both cores over rows already
                  validated in memory: no reading, validation or writing.

Rows/s are end to end from the call to the written output (the Spark session is started before its
runs and its start reported apart). The model is the churn template's (HistGradientBoosting, 200
iterations) trained on the demo world; the input is its feature frame resampled to ``--rows`` rows with
unique ids, in row groups of 65,536 rows (so Spark splits it across both cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prodml.core.project import load_project
from prodml.data.examples import write_example
from prodml.export.package import load_package


def prepare(work: Path, rows: int, customers: int) -> tuple[Path, Any, Path, list[str]]:
    """Train the churn model; return its package directory, the scikit-learn pipeline, the input file
    and the feature columns."""
    from prodml.pipeline.train import run_training
    from prodml.registry.mlflow import Registry

    project_dir = work / "project"
    write_example(project_dir, "churn", customers=customers, days=200, seed=1)
    project = load_project(project_dir)
    tracking = f"sqlite:///{project_dir / 'mlflow.db'}"
    outcome = run_training(project, tracking_uri=tracking)
    registry = Registry(tracking)
    package = registry.load(outcome.version, work / "cache").path
    frame = pq.read_table(project_dir / ".prodml/features/training.parquet")
    features = list(outcome.result.features)
    picked = frame.select(features).take(pa.array(np.random.default_rng(0).integers(0, frame.num_rows, rows)))
    table = picked.add_column(0, "customer_id", pa.array(np.arange(rows, dtype=np.int64)))
    source = work / "input.parquet"
    pq.write_table(table, source, row_group_size=65_536)
    return package, outcome.result.pipeline, source, features


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ceiling(package_dir: Path, source: Path, workers: int) -> float:
    """Seconds for the model call alone over every row, batches validated beforehand, on ``workers``
    threads of one-thread sessions (the best of that and one session with ``workers`` threads)."""
    from prodml.serve.runtime import Runtime
    from prodml.serve.validation import Validator

    package = load_package(package_dir, None)
    validator = Validator(package.schema, max_rows=65_536)
    names = [c["name"] for c in package.schema["inputs"]]
    feeds = [
        validator.feeds({n: b.column(n).to_numpy(zero_copy_only=False) for n in names})[0]
        for b in pq.ParquetFile(source).iter_batches(batch_size=65_536, columns=names)
    ]
    runtime = Runtime(package)
    with ThreadPoolExecutor(workers) as pool:
        threads = timed(lambda: list(pool.map(runtime.run, feeds)))
    wide = Runtime(package, lone_threads=workers)
    one = timed(lambda: [wide.run(f, lone=True) for f in feeds])
    return min(threads, one)


def pandas_loop(pipeline: Any, source: Path, features: list[str], out: Path) -> None:
    writer = None
    for batch in pq.ParquetFile(source).iter_batches(batch_size=65_536):
        frame = batch.to_pandas()
        proba = pipeline.predict_proba(frame[features])
        table = pa.table({"customer_id": frame["customer_id"].to_numpy(), "probability_1": proba[:, 1]})
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def spark_udf(spark: Any, pipeline: Any, source: Path, features: list[str], out: Path, work: Path) -> float:
    """Log the pipeline as an MLflow pyfunc (not timed), then time spark_udf scoring → Parquet."""
    import mlflow
    import mlflow.sklearn
    from pyspark.sql import functions as F

    mlflow.set_tracking_uri(f"sqlite:///{work / 'udf.db'}")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            serialization_format="cloudpickle",
            pyfunc_predict_fn="predict_proba",
            pip_requirements=["scikit-learn", "pandas"],
        )
    udf = mlflow.pyfunc.spark_udf(spark, info.model_uri, result_type="array<double>", env_manager="local")

    def run() -> None:
        frame = spark.read.parquet(str(source))
        # integer columns with nulls reach pandas as nullable Int64, which the pipeline refuses: as doubles
        numeric = {f.name for f in frame.schema.fields if f.dataType.typeName() in ("long", "integer")}
        args = [F.col(c).cast("double").alias(c) if c in numeric else F.col(c) for c in features]
        scored = frame.select("customer_id", udf(F.struct(*args)).getItem(1).alias("probability_1"))
        scored.write.mode("overwrite").parquet(str(out))

    return timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--skip-spark", action="store_true")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    print(f"training the churn model and writing {args.rows:,} input rows under {work} ...", flush=True)
    package, pipeline, source, features = prepare(work, args.rows, args.customers)
    results: dict[str, float] = {}

    from prodml.batch import score

    def run(name: str, fn: Any) -> None:
        """Time one run; a failing baseline is reported and the others still run."""
        try:
            results[name] = fn()
            print(f"{name}: {results[name]:.2f} s", flush=True)
        except Exception as exc:
            print(f"{name}: FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)

    run(
        "prodml local",
        lambda: timed(
            lambda: score(str(source), str(work / "out-local"), package=package, id_column="customer_id")
        ),
    )
    run(
        "pandas + scikit-learn loop",
        lambda: timed(lambda: pandas_loop(pipeline, source, features, work / "o.pq")),
    )
    run("ceiling: ONNX graph alone", lambda: ceiling(package, source, cores))
    spark_start = None
    if not args.skip_spark:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # spark_udf unpickles the pipeline we just logged (benchmark only); prodml's registry turned that
        # off for this process, and Spark's Python workers inherit the environment the session starts with
        os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
        from prodml.batch.spark import spark_session

        spark_start = timed(lambda: spark_session("local[2]").range(1).count())
        spark = spark_session("local[2]")
        spark.sparkContext.setLogLevel("ERROR")
        run(
            "prodml spark local[2]",
            lambda: timed(
                lambda: score(
                    str(source),
                    str(work / "out-spark"),
                    package=package,
                    engine="spark",
                    id_column="customer_id",
                )
            ),
        )
        run(
            "mlflow.pyfunc.spark_udf",
            lambda: spark_udf(spark, pipeline, source, features, work / "udf", work),
        )
        spark.stop()

    udf = results.get("mlflow.pyfunc.spark_udf")
    top = results.get("ceiling: ONNX graph alone")
    print(f"\n{args.rows:,} rows, Parquet in → Parquet out, {cores} cores")
    print("| run | seconds | rows/s | × spark_udf | share of ceiling |")
    print("|---|---:|---:|---:|---:|")
    for name, s in results.items():
        ratio = f"{udf / s:.1f}×" if udf else "-"
        share = f"{top / s:.0%}" if top else "-"
        print(f"| {name} | {s:.2f} | {args.rows / s:,.0f} | {ratio} | {share} |")
    if spark_start is not None:
        print(f"\nSpark session start (not in the rows above): {spark_start:.1f} s")


if __name__ == "__main__":
    main()
