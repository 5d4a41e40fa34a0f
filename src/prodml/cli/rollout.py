"""``prodml rollout``: canary a new version, watch it, and promote or roll back."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from prodml.cli._common import console, handle_errors, project_of, tracking_uri
from prodml.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from prodml.core.project import Project
    from prodml.pipeline.retrain import RetrainOutcome
    from prodml.registry.deployment import Deployment, DeploymentStore
    from prodml.rollout.analysis import Checks, Snapshot, Verdict

app = typer.Typer(help="Canary, promote and roll back model versions on every replica.", no_args_is_help=True)

Why = Annotated[str, typer.Option(help="Why: recorded with the event.")]


def _store() -> tuple[Project, DeploymentStore]:
    from prodml.registry.deployment import DeploymentStore
    from prodml.registry.mlflow import Registry, tracking_uri_for

    project = project_of()
    registry = Registry(tracking_uri_for(project, override=tracking_uri()))
    return project, DeploymentStore(registry, project.tracking.registered_model or project.name)


def _scrape(project: Project) -> Callable[[Sequence[str]], Snapshot]:
    """Where rollout metrics come from: Prometheus when ``rollout.prometheus_url`` is set, else the
    replicas' own ``/metrics``."""
    if project.rollout.prometheus_url:
        from prodml.rollout.prometheus import scraper

        return scraper(project.rollout.prometheus_url, project.rollout.prometheus_selector)
    from prodml.rollout.analysis import scrape

    return scrape


def canary_retrained(project: Project, outcome: RetrainOutcome, tracking: str | None) -> RetrainOutcome:
    """Put a retrained version that passed the gate out as a canary with the project's ``rollout:``
    settings (``prodml rollout run`` walks it); when a rollout already holds the deployment it stays
    ``challenger`` and the outcome says why."""
    from dataclasses import replace

    from prodml.registry.deployment import DeploymentStore
    from prodml.registry.mlflow import Registry, tracking_uri_for
    from prodml.rollout.controller import CanaryPlan, start_canary

    if outcome.status != "challenger" or outcome.version is None:
        return outcome
    name = project.tracking.registered_model or project.name
    store = DeploymentStore(Registry(tracking_uri_for(project, override=tracking)), name)
    try:
        start_canary(store, outcome.version, CanaryPlan.of(project), why=f"retrained: {outcome.reason}")
    except ConfigError as exc:
        return replace(outcome, why_not=exc.message)
    return replace(outcome, status="canary")


def parse_seconds(text: str, option: str) -> float:
    """``30s``, ``2m``, ``500ms`` or a plain number of seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not found or float(found.group(1)) <= 0:
        raise ConfigError(f"{option} {text!r} is not a duration", hint="write e.g. 30s, 2m, 500ms")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[found.group(2) or "s"]
    return float(found.group(1)) * scale


def parse_rate(text: str, option: str) -> float:
    """``1%`` or ``0.01``: a share in [0, 1]."""
    try:
        value = float(text.strip().removesuffix("%")) / (100 if text.strip().endswith("%") else 1)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise ConfigError(f"{option} {text!r} is not a share", hint="write e.g. 1% or 0.01")
    return value


def parse_steps(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(
            f"--steps {text!r} is not a list of percents", hint="e.g. --steps 5,25,50,100"
        ) from None


def _spec_table(spec: Deployment, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("variant", "version", "role", "weight"):
        table.add_column(col)
    for v in spec.variants:
        table.add_row(v.name, v.version, v.role, f"{v.weight:g}%")
    return table


@app.command()
@handle_errors
def status() -> None:
    """The deployment in force: variants, weights, and the rollout in progress."""
    _, store = _store()
    spec = store.current()
    stored = store.read() is not None
    console.print(_spec_table(spec, f"{store.name} — revision {spec.revision if stored else '(implicit)'}"))
    if spec.rollout:
        r = spec.rollout
        step = f" step {int(r['step']) + 1} of {len(spec.analysis.get('steps', []))}" if "step" in r else ""
        console.print(
            f"rollout: {r.get('kind')} of version {r.get('version')}: [bold]{r.get('status')}[/]{step}, "
            f"{r.get('failures', 0)} failed check(s) in a row"
        )
    if spec.stickiness.field or spec.stickiness.header:
        key = spec.stickiness.field or spec.stickiness.header
        console.print(f"stickiness: {'field' if spec.stickiness.field else 'header'} {key}")


@app.command()
@handle_errors
def history(limit: Annotated[int, typer.Option(help="Show the last N events.")] = 50) -> None:
    """Every change of the deployment: when, who, what, why and the evidence."""
    import json

    _, store = _store()
    table = Table(title=f"{store.name} — deployment history", title_justify="left")
    for col in ("#", "when (UTC)", "who", "action", "why", "evidence"):
        table.add_column(col, overflow="fold")
    for e in store.events()[-limit:]:
        when = datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(e.n), when, e.who, e.action, e.why, json.dumps(e.evidence)[:400])
    console.print(table)


def _print_window(spec: Deployment, verdict: Verdict) -> None:
    c = verdict.evidence.get("canary", {})
    p = verdict.evidence.get("primary", {})
    mark = "[green]pass[/]" if verdict.passed else "[red]fail[/]"
    console.print(
        f"window: {mark} canary v{c.get('version')} {c.get('requests')} req, errors {c.get('error_rate')}, "
        f"p99 {c.get('p99_ms')} ms | primary v{p.get('version')} {p.get('requests')} req"
        + (f", PSI {verdict.evidence['prediction_psi']}" if "prediction_psi" in verdict.evidence else "")
        + ("" if verdict.passed else " — " + "; ".join(verdict.reasons))
    )


def _run(project: Project, store: DeploymentStore) -> None:
    from prodml.rollout.controller import Controller
    from prodml.rollout.log import labelled_log

    final = Controller(
        store,
        scrape_metrics=_scrape(project),
        on_window=_print_window,
        labelled_log=lambda: labelled_log(project),
    ).run()
    if final is None or final.rollout is None:
        console.print("no rollout in progress")
        return
    if final.active:  # an A/B test without a guardrail
        console.print(f"A/B test of version {final.rollout.get('version')} has no guardrail to watch")
        return
    outcome = final.rollout.get("status")
    color = "green" if outcome == "promoted" else "yellow"
    console.print(
        f"[{color}]{outcome}[/]: version {final.primary.version} takes every request "
        f"(revision {final.revision})"
    )
    if outcome != "promoted":
        raise typer.Exit(12)


@app.command()
@handle_errors
def canary(
    version: Annotated[str, typer.Argument(help="The registered version to canary.")],
    steps: Annotated[Optional[str], typer.Option(help="Canary weights in percent, e.g. 5,25,50,100.")] = None,  # noqa: UP045
    interval: Annotated[Optional[str], typer.Option(help="Analysis window, e.g. 30s.")] = None,  # noqa: UP045
    max_error_rate: Annotated[Optional[str], typer.Option(help="Most canary server errors, e.g. 1%.")] = None,  # noqa: UP045
    max_p99_ms: Annotated[Optional[float], typer.Option(help="Most canary p99 latency (ms).")] = None,  # noqa: UP045
    max_prediction_shift: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="Most PSI of canary vs primary prediction scores per window."),
    ] = None,
    min_requests: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Canary requests a window needs to pass."),
    ] = None,
    max_metric_drop: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="Most the canary's task metric may trail the primary's once labels exist."),
    ] = None,
    failures: Annotated[Optional[int], typer.Option(help="Failed windows in a row that roll back.")] = None,  # noqa: UP045
    replica: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="A replica's base URL (repeatable; default: rollout.replicas, else serve's)."),
    ] = None,
    admin: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="A replica's admin base URL, told to reload after each change (repeatable)."),
    ] = None,
    why: Why = "canary",
    wait: Annotated[bool, typer.Option(help="Run the controller here until the rollout ends.")] = True,
    require_shadow: Annotated[
        bool, typer.Option(help="Refuse unless VERSION runs as the shadow and its report passes the checks.")
    ] = False,
) -> None:
    """Start a canary of VERSION and (with --wait, the default) run it to promotion or rollback.

    Exit 0 when promoted, 12 when rolled back or aborted.
    """
    from dataclasses import replace

    from prodml.rollout.controller import CanaryPlan, start_canary

    project, store = _store()
    if min_requests is not None and min_requests < 1:
        raise ConfigError(f"--min-requests {min_requests}: give at least 1", hint="too few never pass")
    if failures is not None and failures < 1:
        raise ConfigError(f"--failures {failures}: give at least 1", hint="e.g. --failures 3")
    base = CanaryPlan.of(project)
    given: dict[str, Any] = {
        "max_error_rate": parse_rate(max_error_rate, "--max-error-rate") if max_error_rate else None,
        "max_p99_ms": max_p99_ms,
        "max_prediction_shift": max_prediction_shift,
        "min_requests": min_requests,
        "max_metric_drop": max_metric_drop,
    }
    checks = replace(base.checks, **{k: v for k, v in given.items() if v is not None})
    plan = CanaryPlan(
        steps=parse_steps(steps) if steps else base.steps,
        interval_s=parse_seconds(interval, "--interval") if interval else base.interval_s,
        checks=checks,
        failures=failures or base.failures,
        replicas=tuple(replica) if replica else base.replicas,
        admin_urls=tuple(admin) if admin else base.admin_urls,
    )
    if require_shadow:
        _check_shadow(project, store, version, plan.replicas, checks)
    spec = start_canary(store, version, plan, why=why)
    console.print(_spec_table(spec, f"{store.name} — canary of version {version} (revision {spec.revision})"))
    if wait:
        _run(project, store)


def _check_shadow(
    project: Project, store: DeploymentStore, version: str, replicas: tuple[str, ...], checks: Checks
) -> None:
    from prodml.rollout.analysis import shadow_report
    from prodml.rollout.gate import shadow_problems

    spec = store.current()
    mirrored = spec.role("shadow")
    if mirrored is None or mirrored.version != version:
        raise ConfigError(
            f"--require-shadow: version {version} is not the shadow",
            hint=f"shadow it first: prodml rollout shadow {version}, then prodml rollout shadow-report",
        )
    report = shadow_report(_scrape(project)(replicas), shadow=version, primary=spec.primary.version)
    problems = shadow_problems(report, checks)
    if problems:
        raise ConfigError(
            f"--require-shadow: the shadow of version {version} does not pass: {'; '.join(problems)}",
            hint="let it take more traffic, or fix it; see prodml rollout shadow-report",
        )


@app.command()
@handle_errors
def run() -> None:
    """Run the controller for the rollout in progress (resumes from the stored spec and its events)."""
    project, store = _store()
    _run(project, store)


@app.command()
@handle_errors
def pause(why: Why = "paused by hand") -> None:
    """Hold the rollout at its current weights; no step is taken until resume."""
    from prodml.rollout.controller import set_paused

    _, store = _store()
    spec = set_paused(store, True, why=why)
    console.print(f"paused at revision {spec.revision}")


@app.command()
@handle_errors
def resume(why: Why = "resumed by hand") -> None:
    """Continue a paused rollout (the controller, `prodml rollout run`, takes the next windows)."""
    from prodml.rollout.controller import set_paused

    _, store = _store()
    spec = set_paused(store, False, why=why)
    console.print(f"running at revision {spec.revision}")


@app.command()
@handle_errors
def abort(why: Why = "aborted by hand") -> None:
    """End the rollout in progress (a canary, or an A/B test: arm a stays): the primary takes every
    request again."""
    from prodml.rollout.controller import abort as run_abort

    _, store = _store()
    spec = run_abort(store, why=why)
    console.print(f"aborted: version {spec.primary.version} takes every request (revision {spec.revision})")


@app.command()
@handle_errors
def promote(why: Why = "promoted by hand") -> None:
    """Promote the canary (or arm b of an A/B test) now: it becomes the primary and 'champion'; the
    old one 'previous'."""
    from prodml.rollout.controller import promote as run_promote

    _, store = _store()
    spec = run_promote(store, why=why)
    console.print(
        f"[green]promoted[/]: version {spec.primary.version} is champion (revision {spec.revision})"
    )


@app.command()
@handle_errors
def rollback(why: Why = "rolled back by hand") -> None:
    """Back to safety in one command: end the rollout in progress, or return to 'previous'."""
    from prodml.rollout.controller import rollback as run_rollback

    _, store = _store()
    spec = run_rollback(store, why=why)
    console.print(
        f"rolled back: version {spec.primary.version} takes every request (revision {spec.revision})"
    )


@app.command()
@handle_errors
def shadow(
    version: Annotated[Optional[str], typer.Argument(help="The version to mirror requests to.")] = None,  # noqa: UP045
    sample: Annotated[str, typer.Option(help="The share of requests mirrored, e.g. 100% or 10%.")] = "100%",
    stop: Annotated[bool, typer.Option(help="Stop shadowing.")] = False,
    admin: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="A replica's admin base URL, told to reload (repeatable)."),
    ] = None,
    why: Why = "shadow",
) -> None:
    """Mirror requests to VERSION off the response path (or --stop); clients only ever see the primary."""
    from prodml.rollout.controller import set_shadow

    project, store = _store()
    if (version is None) != stop:
        raise ConfigError(
            "give a VERSION to shadow, or --stop", hint="e.g. prodml rollout shadow 4 --sample 10%"
        )
    share = parse_rate(sample, "--sample") * 100
    if version is not None and share <= 0:
        raise ConfigError(f"--sample {sample!r}: mirror more than 0%", hint="e.g. --sample 10%")
    spec = set_shadow(store, version, sample=share, why=why, admin_urls=admin or project.rollout.admin_urls)
    console.print(_spec_table(spec, f"{store.name} — revision {spec.revision}"))


@app.command()
@handle_errors
def ab(
    version: Annotated[str, typer.Argument(help="The version tested against the primary (arm b).")],
    split: Annotated[float, typer.Option(help="Percent of requests (keys) sent to VERSION.")] = 50.0,
    key: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="The request field that keeps a key on one arm, e.g. customer_id."),
    ] = None,
    header: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Or the request header that does (e.g. x-user)."),
    ] = None,
    admin: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="A replica's admin base URL, told to reload (repeatable)."),
    ] = None,
    why: Why = "A/B test",
) -> None:
    """Split requests between the primary (arm a) and VERSION (arm b), sticky by --key or --header."""
    from prodml.rollout.abtest import start_ab
    from prodml.rollout.controller import CanaryPlan

    project, store = _store()
    spec = start_ab(
        store,
        version,
        split=split,
        field=key,
        header=header,
        why=why,
        admin_urls=admin or project.rollout.admin_urls,
        guardrail=CanaryPlan.of(project),
    )
    console.print(_spec_table(spec, f"{store.name} — revision {spec.revision}"))
    console.print(
        "end it with 'prodml rollout promote' (b wins) or 'abort' (a stays); 'prodml rollout run' "
        "watches its guardrail (arm b's error rate and p99, rollout: settings)"
    )


@app.command("ab-report")
@handle_errors
def ab_report(
    metric: Annotated[
        str, typer.Option(help="accuracy (z-test), error (Welch t) or auc (bootstrap).")
    ] = "accuracy",
    effect: Annotated[float, typer.Option(help="The smallest difference worth detecting (absolute).")] = 0.02,
    alpha: Annotated[float, typer.Option(help="Significance level (two-sided).")] = 0.05,
    power: Annotated[float, typer.Option(help="Power for the sample size still needed.")] = 0.8,
) -> None:
    """Arm b against arm a on the request log joined with feedback labels: metric per arm with its
    interval, the test, rows still needed, and a recommendation."""
    from prodml.rollout.abtest import ab_report as report_of
    from prodml.rollout.log import labelled_log

    project, store = _store()
    spec = store.current()
    arm = spec.role("arm")
    if arm is None:
        raise ConfigError(f"'{store.name}' has no A/B test", hint="start one: prodml rollout ab VERSION")
    report = report_of(
        labelled_log(project),
        spec.primary.name,
        arm.name,
        metric=metric,
        effect=effect,
        alpha=alpha,
        power=power,
    )
    table = Table(title=f"{store.name} — A/B: {metric} ({report['test']})")
    for col in ("arm", "labelled", metric, "95% interval"):
        table.add_column(col)
    for name, r in report["arms"].items():
        table.add_row(name, str(r["labelled"]), f"{r['value']:.4f}", f"[{r['low']:.4f}, {r['high']:.4f}]")
    console.print(table)
    console.print(
        f"b − a = {report['difference']:+.4f} [{report['low']:+.4f}, {report['high']:+.4f}], "
        f"p = {report['p_value']:.4g}; rows per arm needed for {effect}: {report['needed_per_arm']}"
    )
    console.print(f"recommendation: {report['recommendation']}")


@app.command("shadow-report")
@handle_errors
def shadow_report(
    replica: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="A replica's base URL (repeatable; default: rollout.replicas, else serve's)."),
    ] = None,
) -> None:
    """The shadow against the primary, over all replicas: agreement, prediction shift, errors, latency,
    drops."""
    from prodml.rollout.analysis import shadow_report as report_of
    from prodml.rollout.controller import CanaryPlan

    project, store = _store()
    spec = store.current()
    mirrored = spec.role("shadow")
    if mirrored is None:
        raise ConfigError(f"'{store.name}' has no shadow", hint="start one: prodml rollout shadow VERSION")
    urls = replica or CanaryPlan.of(project).replicas
    report = report_of(_scrape(project)(urls), shadow=mirrored.version, primary=spec.primary.version)
    table = Table(title=f"{store.name} — shadow v{mirrored.version} vs primary v{spec.primary.version}")
    for col in ("", "requests", "server errors", "p99 ms"):
        table.add_column(col)
    for role in ("primary", "shadow"):
        r = report[role]
        table.add_row(
            f"{role} v{r['version']}", str(r["requests"]), str(r["server_errors"]), str(r["p99_ms"])
        )
    console.print(table)
    console.print(
        f"agreement {report['agreement']}, PSI {report.get('prediction_psi')}, "
        f"KS {report.get('prediction_ks')}, dropped {report['dropped']}"
        + (f"; unreachable: {', '.join(report['missing'])}" if report["missing"] else "")
    )


@app.command("set")
@handle_errors
def set_spec(
    spec_file: Annotated[Path, typer.Argument(help="The spec (JSON or YAML): variants, stickiness.")],
    why: Why = "set by hand",
    admin: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Change it through this replica's admin port (PRODML_ADMIN_TOKEN): applied at once."
        ),
    ] = None,
) -> None:
    """Replace the deployment: every variant's version, weight and role, and the stickiness key.

    The spec is written to the registry (every replica picks it up at its next check; those in
    rollout.admin_urls are told at once), or through --admin, a replica's admin port, which writes it and
    applies it on that replica before it answers.
    """
    import os

    import httpx
    import yaml

    from prodml.core.errors import Unavailable
    from prodml.registry.deployment import parse_spec, who
    from prodml.rollout.controller import notify

    project, store = _store()
    try:
        raw = yaml.safe_load(spec_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read the spec {spec_file}: {exc}", hint="give a JSON or YAML file"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{spec_file} is not a spec object", hint='e.g. {"variants": [{"name": ...}]}')
    spec = parse_spec(json.dumps(raw), where=str(spec_file))  # validated where it is written
    stored = store.read()
    if stored is not None and stored.active:
        raise ConfigError(
            "a rollout is in progress; nothing was changed",
            hint="let it finish, or end it first: prodml rollout abort",
        )
    base = None if stored is None else stored.revision
    if admin:
        token = os.environ.get("PRODML_ADMIN_TOKEN", "")
        body = {**raw, "why": why, "who": who(), "revision": base}
        try:
            answer = httpx.post(
                f"{admin.rstrip('/')}/admin/deployment",
                json=body,
                headers={"authorization": f"Bearer {token}"},
                timeout=60,
            )
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the admin port {admin} did not answer: {exc}", hint="is the server up?"
            ) from None
        if answer.status_code != 200:
            hint = (
                "set PRODML_ADMIN_TOKEN to the server's token"
                if answer.status_code == 401
                else "nothing was changed"
            )
            raise ConfigError(
                f"the admin port {admin} refused the spec: {answer.json().get('error')}", hint=hint
            )
        revision = answer.json()["revision"]
    else:
        revision = store.write(spec, action="set", why=why, expect_revision=base).revision
        notify(project.rollout.admin_urls)
    console.print(_spec_table(store.current(), f"{store.name} — revision {revision}"))
