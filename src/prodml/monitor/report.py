"""The monitoring report: one self-contained HTML page (inline SVG plots, no external script or font)
and the JSON summary beside it.

Plots: the prediction's distribution and each feature's, reference vs the newest window; drift scores
(PSI) per window; performance per window and model version with 95% intervals. Tables: every statistic
of every feature in the newest window, with the thresholds it breaks.
"""

from __future__ import annotations

import io
import json
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from prodml.core.files import atomic_write_text
from prodml.export.drift import PREDICTION, FeatureScore
from prodml.monitor.summary import Summary

__all__ = ["render_html", "write_report"]

_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1150px;color:#1f2328}
table{border-collapse:collapse;margin:.6rem 0}th,td{border-bottom:1px solid #d0d7de;padding:.25rem .5rem;
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}.plots{display:flex;flex-wrap:wrap;
gap:1rem}figure.plot{margin:0;border:1px solid #d0d7de;width:440px}figure.plot svg{width:100%;height:auto}
.drift{color:#b42318;font-weight:600}.ok{color:#1a7f37}.insufficient{color:#9a6700}"""
_STATS = ("psi", "ks", "js", "wasserstein", "chi2_pvalue", "null_rate", "out_of_range", "unseen")


def _svg(fig: Any, name: str, *, wide: bool = False) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and doctype: the SVG sits inline in HTML
    style = " style='width:900px'" if wide else ""
    return f"<figure class='plot' data-plot='{escape(name)}'{style}>{svg}</figure>"


def _figure(width: float = 5.0, height: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _label(i: int, f: int) -> str:
    return "<min" if i == 0 else (">max" if i == f + 1 else f"q{i}")


def _histogram(summary: Summary, score: FeatureScore) -> str | None:
    """Reference vs current shares over the feature's deciles (numeric) or categories."""
    ref, counts = summary.reference, summary.current.counts
    if counts is None:
        return None
    if score.kind == "numeric":
        i = ref.numeric.index(score.feature)
        f = ref.edges[i].size + 1
        groups = ref.coarse[i, : f + 2]
        r = np.bincount(groups, weights=ref.counts[i, : f + 2], minlength=ref.n_coarse)
        c = np.bincount(groups, weights=counts.counts[i, : f + 2], minlength=ref.n_coarse)
        used = int(groups.max()) + 1
        r, c = r[:used], c[:used]
        labels = [f"d{j + 1}" for j in range(used)]
    else:
        i = ref.categorical.index(score.feature)
        k = len(ref.categories[i])
        r = np.append(ref.cat_counts[i, :k], ref.cat_counts[i, -1])
        c = np.append(counts.cat_counts[i, :k], counts.cat_counts[i, -1])
        labels = [*ref.categories[i], "(other)"]
    r = r / max(r.sum(), 1)
    c = c / max(c.sum(), 1)
    fig = _figure()
    ax = fig.subplots()
    x = np.arange(len(labels))
    ax.bar(x - 0.2, r, 0.4, label="reference", color="#8c959f")
    ax.bar(
        x + 0.2,
        c,
        0.4,
        label=f"current ({summary.current.label})",
        color="#cf222e" if score.status == "drift" else "#0969da",
    )
    ax.set_xticks(x, labels, rotation=45 if len(labels) > 8 else 0, fontsize=7)
    name = "prediction" if score.feature == PREDICTION else score.feature
    ax.set(
        title=f"{name}: PSI {score.psi:.3f}" + (f", KS {score.ks:.3f}" if score.kind == "numeric" else ""),
        ylabel="share",
    )
    ax.legend(fontsize=7)
    return _svg(fig, f"hist-{score.feature}")


def _over_time(summary: Summary) -> str | None:
    if len(summary.windows) < 2:
        return None
    fig = _figure(9, 3.6)
    ax = fig.subplots()
    x = np.arange(len(summary.windows))
    features = [s.feature for s in summary.windows[-1].scores]
    ranked = sorted(features, key=lambda f: -max(_psi(w.scores, f) for w in summary.windows))[:8]
    for feature in ranked:
        ax.plot(
            x,
            [_psi(w.scores, feature) for w in summary.windows],
            marker="o",
            ms=3,
            label="prediction" if feature == PREDICTION else feature,
        )
    if summary.thresholds.psi is not None:
        ax.axhline(summary.thresholds.psi, ls="--", color="#cf222e", lw=1, label="threshold")
    ax.set_xticks(x, [w.label for w in summary.windows], rotation=30, fontsize=7)
    ax.set(title="PSI per window (top features)", ylabel="PSI")
    ax.legend(fontsize=7, ncol=3)
    return _svg(fig, "drift-over-time", wide=True)


def _psi(scores: list[FeatureScore], feature: str) -> float:
    value = next((s.psi for s in scores if s.feature == feature and s.status != "insufficient"), math.nan)
    return value if math.isfinite(value) else 0.0


def _performance(summary: Summary) -> list[str]:
    out = []
    metrics = sorted({p.metric for p in summary.performance})
    windows = [w.label for w in summary.windows]
    for metric in metrics:
        points = [p for p in summary.performance if p.metric == metric]
        fig = _figure()
        ax = fig.subplots()
        for version in sorted({p.version for p in points}):
            mine = [p for p in points if p.version == version]
            x = [windows.index(p.window) for p in mine]
            y = np.array([p.value for p in mine])
            err = np.array([[p.value - p.low for p in mine], [p.high - p.value for p in mine]])
            ax.errorbar(
                x, y, yerr=np.nan_to_num(np.abs(err)), marker="o", ms=3, capsize=3, label=f"v{version}"
            )
        ax.set_xticks(range(len(windows)), windows, rotation=30, fontsize=7)
        ax.set(title=f"{metric} per window (95% bootstrap interval)", ylabel=metric)
        ax.legend(fontsize=7)
        out.append(_svg(fig, f"performance-{metric}"))
    return out


def _fmt(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.4g}"


def _table(scores: list[FeatureScore]) -> str:
    head = "".join(f"<th>{k}</th>" for k in ("feature", "kind", "rows", "status", *_STATS, "breaks"))
    rows = []
    for s in scores:
        name = "prediction" if s.feature == PREDICTION else s.feature
        cells = "".join(f"<td class='n'>{_fmt(getattr(s, k))}</td>" for k in _STATS)
        rows.append(
            f"<tr data-feature='{escape(s.feature)}'><td>{escape(name)}</td><td>{s.kind}</td>"
            f"<td class='n'>{s.rows:,}</td><td class='{s.status}'>{s.status}</td>{cells}"
            f"<td>{escape(', '.join(s.breaches))}</td></tr>"
        )
    return f"<table class='scores'><tr>{head}</tr>{''.join(rows)}</table>"


def render_html(summary: Summary) -> str:
    """The report page for ``summary``."""
    current = summary.current
    ordered = sorted(
        current.scores, key=lambda s: (s.feature != PREDICTION, s.status != "drift", -_nz(s.psi))
    )
    hists = [h for s in ordered if (h := _histogram(summary, s)) is not None]
    over_time = _over_time(summary)
    perf = _performance(summary)
    verdict = (
        f"<p class='drift' id='verdict'>BREACH: {len(summary.breaches)} feature(s) drifted — "
        + escape(
            ", ".join(
                ("prediction" if s.feature == PREDICTION else s.feature) + f" ({', '.join(s.breaches)})"
                for s in summary.breaches
            )
        )
        + "</p>"
        if summary.breached
        else "<p class='ok' id='verdict'>No threshold breached in the newest window.</p>"
    )
    missing = (
        f"<p>Features in the profile, not in the rows (not scored): {escape(', '.join(summary.missing))}</p>"
        if summary.missing
        else ""
    )
    perf_html = (
        f"<h2>Performance on delayed labels</h2><div class='plots'>{''.join(perf)}</div>"
        if perf
        else "<h2>Performance on delayed labels</h2><p>No window has enough labelled rows yet.</p>"
    )
    windows = "".join(
        f"<tr><td>{escape(w.label)}</td><td class='n'>{w.rows:,}</td>"
        f"<td>{escape(', '.join(s.feature for s in w.breaches)) or '–'}</td></tr>"
        for w in summary.windows
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>prodml monitor: {escape(summary.model)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Monitoring report: {escape(summary.model)}</h1>"
        f"<p>source <code>{escape(summary.source)}</code>, windows of <code>{escape(summary.every)}</code>, "
        f"newest window {escape(current.label)} ({current.rows:,} rows)</p>{verdict}{missing}"
        f"<h2>Newest window: reference vs current</h2><div class='plots'>{''.join(hists)}</div>"
        f"<h2>Drift over time</h2>{over_time or '<p>One window only.</p>'}"
        f"<table><tr><th>window</th><th>rows</th><th>drifted</th></tr>{windows}</table>"
        f"{perf_html}<h2>Every statistic, newest window</h2>{_table(ordered)}</body></html>"
    )


def _nz(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def write_report(summary: Summary, directory: Path, name: str = "monitor") -> tuple[Path, Path]:
    """Write ``<name>.html`` and ``<name>.json`` into ``directory`` (atomically); returns both paths."""
    html_path, json_path = directory / f"{name}.html", directory / f"{name}.json"
    atomic_write_text(json_path, json.dumps(summary.as_dict(), indent=2, default=str))
    atomic_write_text(html_path, render_html(summary))
    return html_path, json_path
