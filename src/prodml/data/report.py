"""The validation report as a self-contained HTML page (no external assets)."""

from __future__ import annotations

from html import escape

from prodml.data.contracts import ValidationReport

__all__ = ["render_validation_html"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2328}
h1{font-size:1.5rem}.ok{color:#1a7f37}.bad{color:#cf222e}
table{border-collapse:collapse;width:100%;margin:1rem 0}th,td{border-bottom:1px solid #d0d7de;
padding:.35rem .6rem;text-align:left;vertical-align:top}th{background:#f6f8fa}
td.n{text-align:right;font-variant-numeric:tabular-nums}code{background:#f6f8fa;padding:0 .25rem}
.bar{background:#cf222e;height:.6rem;display:inline-block;border-radius:2px}
"""


def render_validation_html(report: ValidationReport, *, project: str) -> str:
    """One HTML page: a verdict, rows per table, and each violation with a bar for its share of rows."""
    status = (
        '<p class="ok">All contracts hold.</p>'
        if report.ok
        else f'<p class="bad">{len(report.violations)} violation(s).</p>'
    )
    tables = "".join(
        f"<tr><td>{escape(t)}</td><td class=n>{n:,}</td>"
        f"<td class=n>{sum(1 for v in report.violations if v.table == t)}</td></tr>"
        for t, n in report.rows.items()
    )
    rows = []
    for v in report.violations:
        share = v.count / max(report.rows.get(v.table, 1), 1)
        sample = ", ".join(escape(str(s)) for s in v.sample)
        rows.append(
            f"<tr><td>{escape(v.table)}</td><td><code>{escape(v.column or '')}</code></td>"
            f"<td>{escape(v.rule)}</td><td class=n>{v.count:,}</td>"
            f"<td><span class=bar style='width:{max(2, int(120 * min(share, 1)))}px'></span> "
            f"{share:.2%}</td><td>{escape(v.detail)}</td><td>{sample}</td></tr>"
        )
    violations = (
        "<h2>Violations</h2><table><tr><th>table</th><th>column</th><th>rule</th><th>rows</th>"
        "<th>share</th><th>what to do</th><th>sample row ids</th></tr>" + "".join(rows) + "</table>"
        if rows
        else ""
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>Validation — {escape(project)}"
        f"</title><style>{_CSS}</style></head><body><h1>Data validation — {escape(project)}</h1>"
        f"{status}<p>As of {escape(report.as_of)}, checked in {report.seconds:.3f} s.</p>"
        f"<table><tr><th>table</th><th>rows</th><th>violations</th></tr>{tables}</table>"
        f"{violations}</body></html>"
    )
