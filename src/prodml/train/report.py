"""The training report: one self-contained HTML page with tables and plots (PNG, base64-embedded).

Binary: ROC and PR curves, calibration, confusion matrix. Multiclass: confusion matrix. Regression:
predicted vs actual and residuals. All tasks: CV folds, holdout metrics, permutation importance and the
SHAP summary.
"""

from __future__ import annotations

import base64
import io
import logging
from html import escape
from typing import Any

import numpy as np

from prodml.train.trainer import TrainResult

__all__ = ["render_report"]

logger = logging.getLogger(__name__)

_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2328}
table{border-collapse:collapse;margin:.6rem 0}th,td{border-bottom:1px solid #d0d7de;padding:.3rem .6rem;
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}.plots{display:flex;flex-wrap:wrap;
gap:1rem}.plots img{width:480px;border:1px solid #d0d7de}"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _plots(result: TrainResult) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn import metrics as skm
    from sklearn.calibration import calibration_curve

    y, p = result.y_holdout, result.pred_holdout
    out = []
    if result.task == "binary":
        fig, ax = plt.subplots(figsize=(5, 4))
        fpr, tpr, _ = skm.roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"AUC {skm.roc_auc_score(y, p):.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set(title="ROC (holdout)", xlabel="false positive rate", ylabel="true positive rate")
        ax.legend()
        out.append(_png(fig))
        fig, ax = plt.subplots(figsize=(5, 4))
        prec, rec, _ = skm.precision_recall_curve(y, p)
        ax.plot(rec, prec, label=f"AP {skm.average_precision_score(y, p):.3f}")
        ax.axhline(float(np.mean(y)), ls="--", color="grey", label="base rate")
        ax.set(title="Precision-recall (holdout)", xlabel="recall", ylabel="precision")
        ax.legend()
        out.append(_png(fig))
        fig, ax = plt.subplots(figsize=(5, 4))
        frac, mean = calibration_curve(y, p, n_bins=10, strategy="quantile")
        ax.plot(mean, frac, "o-")
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.set(title="Calibration (holdout)", xlabel="predicted probability", ylabel="observed rate")
        out.append(_png(fig))
    if result.task in ("binary", "multiclass"):
        labels = (p >= 0.5).astype(int) if result.task == "binary" else np.asarray(p).argmax(axis=1)
        fig, ax = plt.subplots(figsize=(5, 4))
        skm.ConfusionMatrixDisplay.from_predictions(
            y, labels, display_labels=[str(c) for c in result.classes or []], ax=ax, colorbar=False
        )
        ax.set_title("Confusion matrix (holdout, threshold 0.5)")
        out.append(_png(fig))
    else:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4))
        a1.scatter(y, p, s=6, alpha=0.5)
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        a1.plot([lo, hi], [lo, hi], "--", color="grey")
        a1.set(title="Predicted vs actual (holdout)", xlabel="actual", ylabel="predicted")
        a2.scatter(p, y - p, s=6, alpha=0.5)
        a2.axhline(0, color="grey", ls="--")
        a2.set(title="Residuals", xlabel="predicted", ylabel="actual − predicted")
        out.append(_png(fig))
    if result.importance:
        top = list(result.importance.items())[:20][::-1]
        fig, ax = plt.subplots(figsize=(5, 0.3 * len(top) + 1))
        ax.barh([k for k, _ in top], [v for _, v in top])
        ax.set(title="Permutation importance (holdout)", xlabel="metric drop when shuffled")
        out.append(_png(fig))
    if result.shap:
        try:
            out.append(_shap_plot(result))
        except Exception as exc:
            logger.warning("SHAP summary plot failed: %s", exc)
    return out


def _shap_plot(result: TrainResult) -> str:
    import warnings

    import matplotlib.pyplot as plt
    import shap

    with warnings.catch_warnings():
        # shap 0.51 seeds NumPy's global RNG for its jitter, which NumPy 2.4 flags as a FutureWarning
        warnings.simplefilter("ignore", FutureWarning)
        shap.summary_plot(
            result.shap["values"],
            result.shap["data"],
            feature_names=result.shap["features"],
            show=False,
            max_display=15,
            plot_size=(6, 5),
        )
    fig = plt.gcf()
    fig.suptitle(f"SHAP summary ({result.shap['explainer']})")
    return _png(fig)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class=n>{v:.4f}</td>" if isinstance(v, float) else f"<td>{escape(str(v))}</td>" for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report(result: TrainResult, *, title: str, facts: dict[str, Any]) -> str:
    """The HTML report of one training run; ``facts`` are shown as a key/value table on top."""
    summary = result.cv_summary()
    cv_rows = [[k, summary[k][0], summary[k][1], *result.cv[k]] for k in result.cv]
    cv_headers = [
        "metric",
        "mean",
        "std",
        *(f"fold {i + 1}" for i in range(len(next(iter(result.cv.values()))))),
    ]
    plots = "".join(_plots(result))
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)}</title><style>{_CSS}</style>"
        f"</head><body><h1>{escape(title)}</h1>"
        + _table(["", ""], [[k, v] for k, v in facts.items()])
        + "<h2>Holdout</h2>"
        + _table(["metric", "value"], [[k, v] for k, v in result.holdout.items()])
        + "<h2>Cross-validation</h2>"
        + _table(cv_headers, cv_rows)
        + f"<h2>Plots</h2><div class=plots>{plots}</div>"
        + "</body></html>"
    )
