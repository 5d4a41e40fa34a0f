"""``prodml monitor``: drift reports, checks (optionally retraining on a breach), alert rules."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from prodml.cli._common import console, handle_errors, project_of, tracking_uri
from prodml.core.errors import ConfigError

if TYPE_CHECKING:
    from prodml.core.project import Project
    from prodml.export.drift import Thresholds
    from prodml.monitor.summary import Summary

app = typer.Typer(help="Watch drift, data quality and performance; alert and retrain.", no_args_is_help=True)


SourceOpt = Annotated[
    str,
    typer.Option(
        "--source",
        "-s",
        help="requests (the server's log, Parquet or Kafka), kafka, log:DIR, source:NAME (a project source)"
        " or a Parquet/CSV path.",
    ),
]
WindowOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--window",
        "-w",
        help="Window: a duration (7d, 12h, 30m) or rows (5000); default monitor.window_rows.",
    ),
]
ModelOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--model", help="Reference profile of NAME@alias or NAME/VERSION (default: PROJECT@champion)."
    ),
]
PackageOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option("--package", help="Use a local model package directory's profile.json instead."),
]
ThresholdOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--threshold",
        "-t",
        help="Override a threshold: psi=0.3 (all features) or age:ks=0.15 (one); 'none' turns it off.",
    ),
]


def _thresholds(project: Project, overrides: list[str] | None) -> Thresholds:
    from prodml.export.drift import Thresholds

    fields = {
        "psi",
        "ks",
        "js",
        "wasserstein_std",
        "null_rate_increase",
        "out_of_range",
        "unseen",
        "min_rows",
    }
    declared = Thresholds.from_settings(project.monitor)  # prodml.yaml's monitor:, then the options
    base: dict[str, Any] = {f: getattr(declared, f) for f in fields}
    per_feature: dict[str, dict[str, Any]] = {k: dict(v) for k, v in declared.per_feature.items()}
    for item in overrides or []:
        target, _, value = item.partition("=")
        feature, _, stat = target.rpartition(":")
        if not value or stat not in fields:
            raise ConfigError(
                f"--threshold {item!r} is not STAT=VALUE or FEATURE:STAT=VALUE",
                hint=f"STAT is one of {', '.join(sorted(fields))}, e.g. --threshold age:psi=0.3",
            )
        try:
            parsed: Any = (
                None if value.lower() == "none" else (int(value) if stat == "min_rows" else float(value))
            )
        except ValueError:
            raise ConfigError(
                f"--threshold {item!r}: {value!r} is not a number", hint="e.g. psi=0.25"
            ) from None
        (per_feature.setdefault(feature, {}) if feature else base)[stat] = parsed
    return Thresholds(**base, per_feature=per_feature)


def _reference(
    project: Project, model: str | None, package: Path | None
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(label, profile.json, schema.json) of the monitored model: a local package, the local cache of the
    promoted model, or the registry."""
    from prodml.export.package import load_package

    if package is not None:
        loaded = load_package(package, None)
        return str(package), loaded.profile, loaded.schema
    ref = model or f"{project.tracking.registered_model or project.name}@champion"
    from prodml.export.cache import PackageCache
    from prodml.registry.mlflow import parse_ref

    name = parse_ref(ref)[0]
    cached = PackageCache(project.state_dir / "models").load(name, ref)
    if cached is not None:
        version, pkg = cached
        return f"{name} v{version}", pkg.profile, pkg.schema
    from prodml.registry.mlflow import Registry, tracking_uri_for

    registry = Registry(tracking_uri_for(project, override=tracking_uri()))
    mv = registry.resolve(ref)
    pkg = registry.load(mv, project.state_dir / "models")
    return f"{mv.name} v{mv.version}", pkg.profile, pkg.schema


def _summarize(
    source: str, window: str | None, model: str | None, package: Path | None, threshold: list[str] | None
) -> tuple[Project, Summary]:
    from prodml.monitor.sources import load
    from prodml.monitor.summary import summarize

    project = project_of()
    label, profile, schema = _reference(project, model, package)
    frame = load(source, project)
    summary = summarize(
        profile,
        frame,
        every=window or project.monitor.window_rows,
        thresholds=_thresholds(project, threshold),
        task=project.task,
        metrics=project.computed_metrics,
        model=label,
        source=source,
        threshold=float(schema.get("threshold", 0.5) or 0.5),
    )
    return project, summary


def _print(summary: Summary) -> None:
    from prodml.export.drift import PREDICTION

    current = summary.current
    table = Table(
        title=f"{summary.model}: newest window {current.label} ({current.rows:,} rows)", title_justify="left"
    )
    for col in ("feature", "status", "PSI", "KS", "JS", "nulls", "out of range", "unseen", "breaks"):
        table.add_column(col, justify="left" if col in ("feature", "status", "breaks") else "right")

    def f(x: float) -> str:
        return "–" if x != x else f"{x:.3f}"

    for s in sorted(
        current.scores,
        key=lambda s: (s.status != "drift", s.feature != PREDICTION, -(s.psi if s.psi == s.psi else 0)),
    ):
        style = {"drift": "bold red", "ok": "green", "insufficient": "yellow"}[s.status]
        table.add_row(
            "prediction" if s.feature == PREDICTION else s.feature,
            f"[{style}]{s.status}[/]",
            f(s.psi),
            f(s.ks),
            f(s.js),
            f(s.null_rate),
            f(s.out_of_range),
            f(s.unseen),
            ", ".join(s.breaches),
        )
    console.print(table)


@app.command()
@handle_errors
def report(
    source: SourceOpt = "requests",
    window: WindowOpt = None,
    model: ModelOpt = None,
    package: PackageOpt = None,
    threshold: ThresholdOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Directory for monitor.html and monitor.json.")] = None,  # noqa: UP045
) -> None:
    """Write an HTML report with plots and a JSON summary of drift and performance per window."""
    from prodml.monitor.report import write_report

    project, summary = _summarize(source, window, model, package, threshold)
    html, js = write_report(summary, out or project.state_dir / "reports")
    _print(summary)
    console.print(f"report: {html}\nsummary: {js}")


@app.command()
@handle_errors
def check(
    source: SourceOpt = "requests",
    window: WindowOpt = None,
    model: ModelOpt = None,
    package: PackageOpt = None,
    threshold: ThresholdOpt = None,
    on_breach: Annotated[
        Optional[str], typer.Option(help="What to do on a breach: 'retrain' (train, gate, canary).")  # noqa: UP045
    ] = None,
    cooldown: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="No retraining again within this long (e.g. 24h, 7d); default monitor.cooldown."),
    ] = None,
    canary: Annotated[
        bool, typer.Option(help="Canary a retrained version that passes the gate (rollout: settings).")
    ] = True,
) -> None:
    """Exit 12 when the newest window breaks a threshold (0 otherwise); --on-breach retrain retrains."""
    from prodml.monitor.windows import parse_every

    if on_breach not in (None, "retrain"):
        raise ConfigError(f"--on-breach {on_breach!r} is not an action", hint="use --on-breach retrain")
    cooldown = cooldown or project_of().monitor.cooldown
    kind, cooldown_s = parse_every(cooldown)
    if kind != "time":
        raise ConfigError(f"--cooldown {cooldown!r} is not a duration", hint="e.g. --cooldown 24h")
    project, summary = _summarize(source, window, model, package, threshold)
    _print(summary)
    if not summary.breached:
        console.print("[green]✓[/] no threshold breached")
        return
    what = ", ".join(s.feature for s in summary.breaches)
    if on_breach == "retrain":
        from prodml.pipeline.retrain import retrain

        outcome = retrain(
            project,
            reason=f"drift in {what}",
            cooldown_s=cooldown_s,
            tracking_uri=tracking_uri(),
        )
        if canary:
            from prodml.cli.rollout import canary_retrained

            outcome = canary_retrained(project, outcome, tracking_uri())
        elif outcome.status == "challenger":
            outcome = replace(outcome, why_not="--no-canary")
        console.print(f"retrain: {outcome.describe()}")
    from prodml.monitor.summary import DriftBreach

    raise DriftBreach(
        f"{len(summary.breaches)} feature(s) breached their thresholds in window "
        f"{summary.current.label}: {what}",
        hint="prodml monitor report shows the distributions; --on-breach retrain retrains",
    )


@app.command()
@handle_errors
def rules(
    out: Annotated[Optional[Path], typer.Option(help="Directory for the rules and the dashboard.")] = None,  # noqa: UP045
    threshold: ThresholdOpt = None,
) -> None:
    """Write Prometheus alert rules and a Grafana dashboard for the server's drift gauges."""
    import json

    from prodml.core.files import atomic_write_text
    from prodml.monitor.alerts import dashboard, render_rules

    project = project_of()
    t = _thresholds(project, threshold)
    directory = out or project.state_dir / "monitor"
    rules_path, board_path = directory / "prodml-drift-rules.yml", directory / "grafana-drift.json"
    atomic_write_text(rules_path, render_rules(t, model=project.name))
    atomic_write_text(board_path, json.dumps(dashboard(t, model=project.name), indent=2))
    console.print(f"alert rules: {rules_path}\nGrafana dashboard: {board_path}")
