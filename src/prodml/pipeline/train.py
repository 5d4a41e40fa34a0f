"""``prodml train``: validate → features → cross-validate → fit → explain → export → register.

Nothing is registered unless every step succeeds: a contract violation, a config error, a failed
conversion or an ONNX/native disagreement stops the run before the registry sees a version.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from prodml.core.errors import ContractViolation
from prodml.core.files import atomic_write_text
from prodml.core.project import Project
from prodml.data.sources import Catalog
from prodml.data.validate import validate_project, write_report
from prodml.export.onnx import check_parity, to_onnx
from prodml.export.package import write_package
from prodml.export.profile import reference_profile
from prodml.export.schema import infer_schema
from prodml.features.build import build_features
from prodml.registry.mlflow import ModelVersion, Registry, Run, tracking_uri_for
from prodml.registry.promotion import METRIC_TAG
from prodml.train.explain import explain
from prodml.train.report import render_report
from prodml.train.trainer import TrainResult, train
from prodml.train.tune import tuned_metric

__all__ = ["TrainingOutcome", "run_training"]

logger = logging.getLogger(__name__)
PARITY_ROWS = 5_000
PACKAGES = (
    "numpy",
    "pandas",
    "scikit-learn",
    "onnx",
    "onnxruntime",
    "skl2onnx",
    "mlflow",
    "lightgbm",
    "xgboost",
)


@dataclass
class TrainingOutcome:
    """What a training run left behind."""

    version: ModelVersion
    tracking_uri: str
    result: TrainResult
    report: Path
    parity: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _card(project: Project, result: TrainResult, mv_name: str, lineage: dict[str, Any]) -> str:
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in result.holdout.items())
    cv = "\n".join(f"| {k} | {mean:.4f} ± {std:.4f} |" for k, (mean, std) in result.cv_summary().items())
    top = "\n".join(f"- {k}: {v:.4f}" for k, v in list(result.importance.items())[:10]) or "- (not computed)"
    return (
        f"# {mv_name}\n\n{project.task} model predicting `{project.target.column}` "
        f"({project.model.estimator}).\n\n"
        f"## Data\n- training rows: {result.rows['train']:,}; holdout rows: {result.rows['holdout']:,}"
        f"{_dropped(result)}\n"
        f"- features ({len(result.features)}): {', '.join(result.features)}\n"
        f"- lineage hash: `{lineage['data']['hash']}`; code commit: `{lineage['code_commit']}`\n\n"
        f"## Holdout metrics\n| metric | value |\n|---|---|\n{metrics}\n\n"
        f"## Cross-validation ({project.validation.strategy}, {project.validation.folds} folds)\n"
        f"| metric | mean ± std |\n|---|---|\n{cv}\n\n## Most important inputs (permutation)\n{top}\n\n"
        f"{_warnings_md(result)}## Intended use and limits\n"
        f"Scores rows shaped like `schema.json`; inputs outside the training "
        f"ranges or with unseen categories are flagged by the server. Drift is measured against "
        f"`profile.json`.\n"
    )


def _dropped(result: TrainResult) -> str:
    n = result.rows.get("unlabelled_dropped", 0)
    return f"; unlabelled rows dropped: {n:,}" if n else ""


def _warnings_md(result: TrainResult) -> str:
    if not result.warnings:
        return ""
    return "## Warnings\n" + "".join(f"- {w}\n" for w in result.warnings) + "\n"


@dataclass
class _Export:
    model: Any
    parity: dict[str, float]
    schema: dict[str, Any]
    profile: dict[str, Any]
    metrics: dict[str, Any]
    cv: dict[str, float]


def run_training(
    project: Project,
    *,
    tracking_uri: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> TrainingOutcome:
    """Run the whole training pipeline for ``project`` and register the result.

    The MLflow run opens once the data is validated and featurised, so tuning trials are its child runs
    and a failure after that point leaves a FAILED run (and no registered version) behind.

    Raises:
        ContractViolation: the data breaks its contract (the validation report says how).
    """
    if project.model.estimator.startswith("torch_"):  # PyTorch models: prodml.pipeline.dl
        from prodml.pipeline.dl import run_torch_training

        outcome = run_torch_training(project, tracking_uri=tracking_uri, on_step=on_step)
        assert outcome is not None  # one process is rank 0
        return outcome
    step = on_step or (lambda _: None)
    timings: dict[str, float] = {}
    catalog = Catalog(project)

    t0 = time.perf_counter()
    step("validate")
    if project.contract:
        report = validate_project(catalog)
        json_path, _ = write_report(report, project.state_dir / "reports", project=project.name)
        if not report.ok:
            raise ContractViolation(
                f"the data breaks its contract ({len(report.violations)} violation(s)); nothing was trained",
                hint=f"see {json_path}, or run 'prodml data validate'",
            )
    timings["validate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    step("features")
    frame, frame_path = build_features(catalog)
    timings["features"] = time.perf_counter() - t0

    registry = Registry(tracking_uri_for(project, override=tracking_uri))
    name = project.tracking.registered_model or project.name
    tune_metric = tuned_metric(project)
    with registry.start_run(project.name, run_name=project.model.estimator) as run:

        def log_trial(number: int, params: dict[str, Any], score: float) -> None:
            with registry.start_run(project.name, run_name=f"trial {number}", parent=run) as child:
                child.log_params(params)
                child.log_metrics({f"cv_{tune_metric}_mean": score})

        t0 = time.perf_counter()
        result = train(project, frame, on_step=step, on_trial=log_trial)
        timings["train"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        step("explain")
        explain(result, project.promotion.metric)
        timings["explain"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        step("export")
        exported = _export(project, result)
        timings["export"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        step("register")
        mv, html = _record(project, registry, run, name, frame.lineage, frame_path, result, exported, timings)
        timings["register"] = time.perf_counter() - t0
    report_path = project.state_dir / "reports" / f"train-{name}-v{mv.version}.html"
    atomic_write_text(report_path, html)
    return TrainingOutcome(mv, registry.tracking_uri, result, report_path, exported.parity, timings)


def _export(project: Project, result: TrainResult) -> _Export:
    """The ONNX graph (checked against the native model on the holdout) and the package's JSON files."""
    model = to_onnx(result.pipeline, result.X_train.head(100), name=project.name)
    parity = check_parity(result.pipeline, model, result.X_holdout.head(PARITY_ROWS))
    schema = infer_schema(
        result.X_train,
        result.categorical,
        task=project.task,
        classes=result.classes,
        target=project.target.column,
        dates=result.dates,
    )
    # dates are profiled as the strings clients send, like categories
    profile = reference_profile(result.X_train, result.categorical + result.dates, result.pred_holdout)
    summary = result.cv_summary()
    cv = {f"cv_{k}_mean": mean for k, (mean, _) in summary.items()} | {
        f"cv_{k}_std": std for k, (_, std) in summary.items()
    }
    metrics = {
        "holdout": result.holdout,
        "cv": result.cv,
        "cv_summary": cv,
        "parity": parity,
        "rows": result.rows,
        "params": result.params,
    }
    return _Export(model, parity, schema, profile, metrics, cv)


def _record(
    project: Project,
    registry: Registry,
    run: Run,
    name: str,
    frame_lineage: dict[str, Any],
    frame_path: Path,
    result: TrainResult,
    exported: _Export,
    timings: dict[str, float],
) -> tuple[ModelVersion, str]:
    """Log the run (params, per-fold metrics, lineage, report, contract) and register the package."""
    lineage: dict[str, Any] = {
        "data": frame_lineage | {"frame": str(frame_path)},
        "code_commit": _git_commit(project.root),
        "packages": _versions(),
        "model": project.model.model_dump(mode="json") | {"params": result.params},
        "validation": project.validation.model_dump(mode="json"),
        "run_id": run.run_id,
        "tracking_uri": registry.tracking_uri,
    }
    run.log_params(
        {
            "estimator": project.model.estimator,
            "task": project.task,
            **{f"param.{k}": v for k, v in result.params.items()},
            **{f"validation.{k}": v for k, v in project.validation.model_dump().items()},
            "features": len(result.features),
            "rows.train": result.rows["train"],
            "rows.holdout": result.rows["holdout"],
        }
    )
    for i in range(len(next(iter(result.cv.values())))):
        run.log_metrics({f"cv_{k}": v[i] for k, v in result.cv.items()}, step=i)
    run.log_metrics(
        exported.cv
        | {f"holdout_{k}": v for k, v in result.holdout.items()}
        | {"parity_max_abs_diff": exported.parity["max_abs_diff"]}
        | timings
    )
    run.set_tags(
        {
            "prodml.lineage.hash": frame_lineage["hash"],
            "prodml.code_commit": lineage["code_commit"],
            "prodml.packages": json.dumps(lineage["packages"]),
            "prodml.task": project.task,
        }
    )
    html = render_report(
        result,
        title=f"{project.name}: {project.model.estimator}",
        facts={
            "run id": run.run_id,
            "lineage hash": frame_lineage["hash"][:16],
            "rows (train / holdout)": f"{result.rows['train']:,} / {result.rows['holdout']:,}"
            + _dropped(result),
            **({"warnings": " | ".join(result.warnings)} if result.warnings else {}),
            "parity max |diff|": f"{exported.parity['max_abs_diff']:.2e}",
            "code commit": lineage["code_commit"][:12],
            "parameters": json.dumps(result.params, default=str),
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        (tmp_dir / "report.html").write_text(html, encoding="utf-8")
        contract = {k: v.model_dump(mode="json", exclude_none=True) for k, v in project.contract.items()}
        (tmp_dir / "contract.yaml").write_text(yaml.safe_dump(contract), encoding="utf-8")
        run.log_artifact(tmp_dir / "report.html")
        run.log_artifact(tmp_dir / "contract.yaml")
        digests = write_package(
            tmp_dir / "package",
            model=exported.model,
            schema=exported.schema,
            profile=exported.profile,
            metrics=exported.metrics,
            lineage=lineage,
            card=_card(project, result, name, lineage),
        )
        tags: dict[str, Any] = {METRIC_TAG + k: v for k, v in result.holdout.items() if np.isfinite(v)}
        tags |= {
            "prodml.lineage.hash": frame_lineage["hash"],
            "prodml.task": project.task,
            "prodml.estimator": project.model.estimator,
        }
        mv = registry.register(name, run, tmp_dir / "package", digests, tags)
    return mv, html
