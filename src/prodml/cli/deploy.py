"""``prodml deploy``: render the files that run the project in production, and check them offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from prodml.cli._common import console, handle_errors, project_of
from prodml.core.errors import ConfigError

app = typer.Typer(help="Render and check deployment files: image, Kubernetes, KServe, Helm, compose.")


@app.command()
@handle_errors
def render(
    target: Annotated[str, typer.Option(help="k8s, kserve, helm or compose.")],
    out: Annotated[Path, typer.Option(help="Directory to write into (created if missing).")],
    image: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Image reference the manifests run (default: prodml/NAME:VERSION)."),
    ] = None,
    namespace: Annotated[Optional[str], typer.Option(help="Kubernetes namespace (default: NAME).")] = None,  # noqa: UP045
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Registry reference the server follows (default: NAME@champion)."),
    ] = None,
    package: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Bake this local model package into the image (digest-checked at start)."),
    ] = None,
    replicas: Annotated[int, typer.Option(help="Replicas (the autoscaler's minimum).")] = 2,
    max_replicas: Annotated[int, typer.Option(help="The autoscaler's maximum.")] = 10,
    cpu: Annotated[str, typer.Option(help="CPU per replica (request = limit), e.g. 500m, 2.")] = "1",
    memory: Annotated[str, typer.Option(help="Memory per replica (request = limit), e.g. 1Gi.")] = "1Gi",
    stream: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Also run the Kafka stream worker: INPUT,OUTPUT,DEAD_LETTERS topics (k8s, helm)."),
    ] = None,
    stream_brokers: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Kafka brokers of the stream worker (default: serve.request_log.kafka's)."),
    ] = None,
) -> None:
    """Write the serving image, manifests, monitoring, CI workflow and Terraform for TARGET into OUT."""
    from prodml.deploy import TARGETS, deploy_settings
    from prodml.deploy import render as write

    if target not in TARGETS:  # before the model's size is looked up: the cheaper mistake first
        raise ConfigError(f"unknown deploy target {target!r}", hint=f"use one of: {', '.join(TARGETS)}")
    settings = deploy_settings(
        project_of(),
        image=image,
        namespace=namespace,
        model=model,
        package=package,
        replicas=replicas,
        max_replicas=max_replicas,
        cpu=cpu,
        memory=memory,
        stream=stream,
        stream_brokers=stream_brokers,
    )
    written = write(settings, target, out)
    size = (
        f"{settings.model_bytes / (1 << 20):.1f} MiB model checked against --memory {memory}"
        if settings.model_bytes is not None
        else "model size unknown here (not baked in, not in the local cache): --memory not checked against it"
    )
    console.print(f"[green]✓[/] {len(written)} files for {target} in {out} ({size})", soft_wrap=True)


@app.command()
@handle_errors
def validate(
    out: Annotated[Path, typer.Argument(help="A directory written by 'prodml deploy render'.")],
) -> None:
    """Check rendered files offline: Kubernetes and CRD schemas, compose, workflow, hadolint, promtool."""
    from prodml.deploy.validate import validate_dir

    if not out.is_dir():
        raise ConfigError(f"{out} is not a directory", hint="run 'prodml deploy render --out DIR' first")
    problems, checked = validate_dir(out)
    for line in checked:
        console.print(f"  checked {line}", soft_wrap=True)
    if problems:
        for where, message in problems:
            console.print(f"[red]✗[/] {where}: {message}", soft_wrap=True)
        raise ConfigError(f"{len(problems)} problem(s) in {out}", hint="fix the settings and render again")
    console.print(f"[green]✓[/] {out}: no problems", soft_wrap=True)
