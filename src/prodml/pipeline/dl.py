"""``prodml train`` for torch estimators: validate → features → fit (one process or DDP) → export → register.

The counterpart of :mod:`prodml.pipeline.train` (which hands ``torch_*`` estimators here) for tabular
projects: the MLP on churn, the CNN on pixel columns. The declared transforms, imputation and scaling
are fitted with scikit-learn and converted by skl2onnx; the network is exported by ``torch.onnx``; the two
are joined into one graph whose inputs are the project's columns, so the package is the same kind as a
tabular one (``schema.json`` from the same :func:`infer_schema`) and today's server, batch and stream
score it unchanged. Parity is checked against the native preprocessing + torch eager on the holdout.

Validation: no K-fold (a network per fold is too dear); ``model.params.val_fraction`` of the training
part is held back for early stopping, and its scores stand in the report's one "fold" column. The
holdout is split exactly as for the tabular estimators.

Under ``torchrun`` (``prodml train --nproc N``, or ``python -m prodml.pipeline.dl``) every rank trains
and only rank 0 opens the MLflow run, logs each epoch, exports and registers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodml.core.errors import ContractViolation, MissingDependency, ProdmlError
from prodml.core.files import atomic_write_text
from prodml.core.project import Project, load_project
from prodml.data.sources import Catalog
from prodml.data.validate import validate_project, write_report
from prodml.dl.params import parse_params
from prodml.export.onnx import check_parity, to_onnx
from prodml.export.package import write_package
from prodml.export.profile import reference_profile
from prodml.export.schema import infer_schema
from prodml.features.build import build_features
from prodml.pipeline.train import PARITY_ROWS, TrainingOutcome, _git_commit, _versions
from prodml.registry.mlflow import Registry, Run, tracking_uri_for
from prodml.registry.promotion import METRIC_TAG
from prodml.train import metrics as m
from prodml.train.report import render_report
from prodml.train.splits import holdout_split
from prodml.train.trainer import TrainResult, prepare

__all__ = ["run_torch_training"]

logger = logging.getLogger(__name__)
TORCH_PACKAGES = ("torch", "onnxscript", "safetensors")


class _Native:
    """Preprocessing + network as one ``predict_proba`` / ``predict``, for the parity check."""

    def __init__(self, preprocess: Any, module: Any, task: str) -> None:
        self.preprocess, self.module, self.task = preprocess, module, task

    def _out(self, X: pd.DataFrame) -> np.ndarray:
        import torch

        with torch.no_grad():
            z = torch.from_numpy(np.asarray(self.preprocess.transform(X), dtype=np.float32))
            logits = self.module(z)
            out = logits.reshape(-1) if self.task == "regression" else logits.softmax(-1)
        return np.asarray(out.numpy(), dtype=np.float64)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self._out(X)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._out(X)


def _preprocessor(project: Project, columns: list[str], categorical: list[str]) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from prodml.features.transforms import build_preprocessor

    return Pipeline(
        [
            ("features", build_preprocessor(project.features, columns, categorical=categorical)),
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
        ]
    )


def _scores(native: _Native, X: pd.DataFrame, task: str) -> np.ndarray:
    out = native.predict_proba(X)
    return out[:, 1] if task == "binary" else out


def _validate(project: Project, catalog: Catalog, rank: int) -> None:
    if not project.contract:
        return
    report = validate_project(catalog)
    if rank == 0:
        write_report(report, project.state_dir / "reports", project=project.name)
    if not report.ok:
        raise ContractViolation(
            f"the data breaks its contract ({len(report.violations)} violation(s)); nothing was trained",
            hint="see the validation report under .prodml/reports, or run 'prodml data validate'",
        )


def run_torch_training(
    project: Project,
    *,
    tracking_uri: str | None = None,
    on_step: Callable[[str], None] | None = None,
    resume: Path | None = None,
) -> TrainingOutcome | None:
    """Train the project's torch model, export it with its preprocessing, register the package.

    Returns the outcome on rank 0 (the only rank of a plain run), ``None`` on the other DDP ranks.

    Raises:
        ConfigError: ``model.params`` or the task do not fit (the key path is named).
        ContractViolation: the data breaks its contract.
        ExportError: the ONNX graph disagrees with preprocessing + torch eager.
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingDependency("torch", "torch") from exc

    from prodml.dl.checkpoint import load_weights
    from prodml.dl.distributed import init_from_env, shutdown
    from prodml.dl.modules import build_module
    from prodml.dl.trainer import Trainer

    step = on_step or (lambda _: None)
    params = parse_params(project.model.estimator, project.model.params)
    world, rank = init_from_env()
    timings: dict[str, float] = {}
    catalog = Catalog(project)
    t0 = time.perf_counter()
    step("validate")
    _validate(project, catalog, rank)
    timings["validate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    step("features")
    frame, frame_path = build_features(catalog)
    timings["features"] = time.perf_counter() - t0

    task = project.task
    names = project.metrics or m.default_metrics(task)
    m.check_metrics(task, names)
    X, y, classes = prepare(frame, project)
    times = frame.table.column(project.target.timestamp).to_numpy() if project.target.timestamp else None
    v = project.validation
    split = holdout_split(len(y), v.holdout, times=times, y=y, stratify=task != "regression", seed=v.seed)
    Xt, yt = X.iloc[split.train].reset_index(drop=True), y[split.train]
    Xh, yh = (X.iloc[split.test].reset_index(drop=True), y[split.test]) if len(split.test) else (Xt, yt)
    preprocess = _preprocessor(project, list(X.columns), list(frame.categorical)).fit(Xt)
    Z = np.asarray(preprocess.transform(Xt), dtype=np.float32)
    order = np.random.default_rng(params.seed).permutation(len(yt))
    n_val = round(len(yt) * params.val_fraction)
    fit_rows, val_rows = np.sort(order[n_val:]), np.sort(order[:n_val])
    objective = "regression" if task == "regression" else "classification"
    y_tensor = torch.from_numpy(yt.astype(np.float32) if task == "regression" else yt)

    def subset(rows: np.ndarray) -> Any:
        return torch.utils.data.TensorDataset(torch.from_numpy(Z[rows]), y_tensor[rows])

    torch.manual_seed(params.seed)
    outputs = 1 if task == "regression" else len(classes or [])
    module = build_module(project.model.estimator, params, inputs=Z.shape[1], outputs=outputs)
    if params.init_from:
        loaded = load_weights((project.root / params.init_from).resolve(), module, strict=False)
        logger.info("initialised %d tensors from %s", len(loaded), params.init_from)

    registry = Registry(tracking_uri_for(project, override=tracking_uri)) if rank == 0 else None
    name = project.tracking.registered_model or project.name
    with _maybe_run(registry, project, rank) as run:

        def on_epoch(record: dict[str, float]) -> None:
            epoch = int(record["epoch"])
            step(f"epoch {epoch}/{params.epochs}: loss {record['train_loss']:.4f}")
            if run is not None:
                run.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)

        def on_batch(epoch: int, batch: int, batches: int) -> None:
            step(f"epoch {epoch + 1}/{params.epochs} batch {batch}/{batches}")

        t0 = time.perf_counter()
        trainer = Trainer(
            module,
            params,
            task=objective,  # type: ignore[arg-type]
            checkpoint_dir=project.state_dir / "checkpoints" / name,
            on_epoch=on_epoch,
            on_batch=on_batch,
        )
        history = trainer.fit(subset(fit_rows), subset(val_rows) if n_val else None, resume=resume)
        timings["train"] = time.perf_counter() - t0
        if rank != 0 or run is None or registry is None:
            shutdown()
            return None

        native = _Native(preprocess, module.eval(), task)
        pred = _scores(native, Xh, task)
        holdout = m.compute(task, names, yh, pred)
        val_X = Xt.iloc[val_rows] if n_val else Xt
        val_scores = m.compute(task, names, yt[val_rows] if n_val else yt, _scores(native, val_X, task))
        result = TrainResult(
            pipeline=native,
            task=task,
            features=list(X.columns),
            categorical=list(frame.categorical),
            classes=classes,
            metric_names=names,
            cv={k: [val] for k, val in val_scores.items()},
            holdout=holdout,
            X_train=Xt,
            X_holdout=Xh,
            y_holdout=yh,
            pred_holdout=pred,
            rows={"train": len(fit_rows), "holdout": len(split.test), "folds": 1},
            params=params.model_dump(mode="json"),
        )

        t0 = time.perf_counter()
        step("export")
        model, parity = _export(project, preprocess, module, native, Z, Xt, Xh)
        timings["export"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        step("register")
        mv, html = _record(
            project,
            registry,
            run,
            name,
            frame.lineage,
            frame_path,
            result,
            model,
            parity,
            history,
            timings,
            world,
        )
        timings["register"] = time.perf_counter() - t0
    shutdown()
    report_path = project.state_dir / "reports" / f"train-{name}-v{mv.version}.html"
    atomic_write_text(report_path, html)
    return TrainingOutcome(mv, registry.tracking_uri, result, report_path, parity, timings)


@contextlib.contextmanager
def _maybe_run(registry: Registry | None, project: Project, rank: int) -> Iterator[Run | None]:
    if registry is None or rank != 0:
        yield None
        return
    with registry.start_run(project.name, run_name=project.model.estimator) as run:
        yield run


def _export(
    project: Project,
    preprocess: Any,
    module: Any,
    native: _Native,
    Z: np.ndarray,
    Xt: pd.DataFrame,
    Xh: pd.DataFrame,
) -> tuple[Any, dict[str, float]]:
    import torch

    from prodml.export.torch import compose, export_module

    network = export_module(module, {"x": torch.from_numpy(Z[:2])}, task=project.task)
    model = compose(to_onnx(preprocess, Xt.head(100), name=project.name), network)
    parity = check_parity(native, model, Xh.head(PARITY_ROWS))
    return model, parity


def _curves(history: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prodml.train.report import _png

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = history.curve("epoch")
    for key in ("train_loss", "val_loss"):
        if history.curve(key):
            loss_ax.plot(epochs, history.curve(key), marker=".", label=key)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend()
    if history.curve("val_accuracy"):
        acc_ax.plot(epochs, history.curve("val_accuracy"), marker=".", color="tab:green")
    acc_ax.set(xlabel="epoch", title="validation accuracy")
    rows = "".join(
        f"<tr><td>{int(e['epoch'])}</td>"
        + "".join(
            f"<td class='n'>{e.get(k, float('nan')):.4f}</td>" for k in ("train_loss", "val_loss", "lr")
        )
        + f"<td class='n'>{e['samples_per_s']:,.0f}</td></tr>"
        for e in history.epochs
    )
    table = (
        "<table><tr><th>epoch</th><th>train loss</th><th>val loss</th><th>lr</th><th>samples/s</th></tr>"
        f"{rows}</table>"
    )
    return f"<h2>Training curves</h2><div class='plots'>{_png(fig)}</div>{table}"


def _record(
    project: Project,
    registry: Registry,
    run: Run,
    name: str,
    frame_lineage: dict[str, Any],
    frame_path: Path,
    result: TrainResult,
    model: Any,
    parity: dict[str, float],
    history: Any,
    timings: dict[str, float],
    processes: int,
) -> tuple[Any, str]:
    """Log the run, render the report with its curves, write and register the package."""
    from prodml.dl.checkpoint import WEIGHTS

    packages = _versions()
    for extra in TORCH_PACKAGES:
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            packages[extra] = version(extra)
    lineage: dict[str, Any] = {
        "data": frame_lineage | {"frame": str(frame_path)},
        "code_commit": _git_commit(project.root),
        "packages": packages,
        "model": project.model.model_dump(mode="json") | {"params": result.params},
        "validation": {"holdout": project.validation.holdout, "val_fraction": result.params["val_fraction"]},
        "training": {
            "epochs": len(history.epochs),
            "best_epoch": history.best_epoch,
            "early": history.stopped_early,
            "processes": processes,
        },
        "run_id": run.run_id,
        "tracking_uri": registry.tracking_uri,
    }
    run.log_params(
        {"estimator": project.model.estimator, "task": project.task}
        | {f"param.{k}": v for k, v in result.params.items()}
        | {"rows.train": result.rows["train"], "rows.holdout": result.rows["holdout"], "processes": processes}
    )
    run.log_metrics(
        {f"holdout_{k}": v for k, v in result.holdout.items()}
        | {f"val_{k}": v[0] for k, v in result.cv.items()}
        | {"parity_max_abs_diff": parity["max_abs_diff"]}
        | timings
    )
    run.set_tags({"prodml.lineage.hash": frame_lineage["hash"], "prodml.task": project.task})
    html = render_report(
        result,
        title=f"{project.name}: {project.model.estimator}",
        facts={
            "run id": run.run_id,
            "lineage hash": frame_lineage["hash"][:16],
            "rows (train / validation / holdout)": (
                f"{result.rows['train']:,} / {len(result.X_train) - result.rows['train']:,} / "
                f"{result.rows['holdout']:,}"
            ),
            "fold column": "the early-stopping validation split (torch estimators skip K-fold)",
            "epochs (best)": f"{len(history.epochs)} ({history.best_epoch or len(history.epochs)})",
            "parity max |diff|": f"{parity['max_abs_diff']:.2e}",
            "parameters": json.dumps(result.params, default=str),
        },
    )
    html = html.replace("</body>", _curves(history) + "</body>")
    metrics = {"holdout": result.holdout, "validation": result.cv, "parity": parity, "rows": result.rows}
    metrics |= {"params": result.params, "history": history.epochs}
    card = (
        f"# {name}\n\n{project.task} model predicting `{project.target.column}` ({project.model.estimator}, "
        f"PyTorch → ONNX).\n\n## Holdout metrics\n| metric | value |\n|---|---|\n"
        + "\n".join(f"| {k} | {v:.4f} |" for k, v in result.holdout.items())
        + f"\n\n## Training\n{len(history.epochs)} epochs; {result.rows['train']:,} training rows; inputs: "
        f"{len(result.features)} columns, preprocessed inside the graph.\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        (tmp_dir / "report.html").write_text(html, encoding="utf-8")
        run.log_artifact(tmp_dir / "report.html")
        checkpoint = project.state_dir / "checkpoints" / name / WEIGHTS
        if checkpoint.is_file():
            run.log_artifact(checkpoint, "checkpoint")
        digests = write_package(
            tmp_dir / "package",
            model=model,
            schema=infer_schema(
                result.X_train,
                result.categorical,
                task=project.task,
                classes=result.classes,
                target=project.target.column,
            ),
            profile=reference_profile(result.X_train, result.categorical, result.pred_holdout),
            metrics=metrics,
            lineage=lineage,
            card=card,
        )
        tags: dict[str, Any] = {METRIC_TAG + k: v for k, v in result.holdout.items() if np.isfinite(v)}
        tags |= {
            "prodml.lineage.hash": frame_lineage["hash"],
            "prodml.task": project.task,
            "prodml.estimator": project.model.estimator,
        }
        mv = registry.register(name, run, tmp_dir / "package", digests, tags)
    return mv, html


def main(argv: list[str] | None = None) -> int:
    """``python -m prodml.pipeline.dl --project DIR``: the entry ``torchrun`` runs on every rank."""
    parser = argparse.ArgumentParser(prog="python -m prodml.pipeline.dl", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=None, help="prodml.yaml or its directory")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--resume", default=None, help="a checkpoint directory to continue from")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        project = load_project(args.project)
        outcome = run_torch_training(
            project, tracking_uri=args.tracking_uri, resume=Path(args.resume) if args.resume else None
        )
    except ProdmlError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    if outcome is not None:
        mv = outcome.version
        summary = ", ".join(f"{k} {v:.4f}" for k, v in outcome.result.holdout.items())
        sys.stdout.write(f"registered {mv.name} version {mv.version}: holdout {summary}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
