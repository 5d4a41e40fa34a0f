"""``prodml stream``: streaming inference over Kafka with the server's data plane."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from prodml.cli._common import console, handle_errors, project_of, tracking_uri
from prodml.core.errors import ConfigError

app = typer.Typer(help="Streaming inference over Kafka (at-least-once, dead letters, consumer groups).")

_TOPIC_HELP = "Kafka topic"


@app.command("run")
@handle_errors
def run(
    brokers: Annotated[str, typer.Option(help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT].")],
    input_topic: Annotated[str, typer.Option(help="Topic of prediction requests (JSON).")],
    output_topic: Annotated[str, typer.Option(help="Topic of results, keyed by request id.")],
    dlq_topic: Annotated[str, typer.Option(help="Dead-letter topic: bad messages with the reason.")],
    group: Annotated[str, typer.Option(help="Consumer group: workers of one group share the partitions.")],
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Registry reference: NAME@alias, NAME/VERSION or NAME (default: PROJECT@champion)."
        ),
    ] = None,
    package: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Score with a local model package directory instead of the registry."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes in this group.")] = 1,
    max_batch: Annotated[int, typer.Option(min=1, max=100_000, help="Messages per micro-batch.")] = 1000,
    id_field: Annotated[
        str, typer.Option(help="Record field holding the request id (taken out before validation).")
    ] = "request_id",
    exactly_once: Annotated[
        bool, typer.Option(help="One Kafka transaction per batch (results, dead letters and offsets).")
    ] = False,
    kafka_config: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="More librdkafka settings, KEY=VALUE (repeatable): sasl.*, session.timeout.ms…"),
    ] = None,
    metrics_port: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=0, max=65535, help="Serve Prometheus /metrics here (worker i on PORT+i)."),
    ] = None,
    log_requests: Annotated[
        bool,
        typer.Option(help="Log requests and results as the server does (Parquet, or Kafka if configured)."),
    ] = True,
    poll: Annotated[float, typer.Option(help="Seconds between registry checks for a moved alias.")] = 30.0,
) -> None:
    """Consume prediction requests, score them with the served model, produce results; until SIGTERM."""
    from prodml.registry.mlflow import tracking_uri_for  # a path helper; mlflow is not imported
    from prodml.stream import RunOptions, StreamOptions
    from prodml.stream import run as run_stream
    from prodml.stream.kafka import parse_config

    if package is not None and model is not None:
        raise ConfigError(
            "give --model or --package, not both", hint="--package scores with a local directory"
        )
    topics = {"--input-topic": input_topic, "--output-topic": output_topic, "--dlq-topic": dlq_topic}
    if len(set(topics.values())) != 3:
        raise ConfigError("the input, output and dead-letter topics must differ", hint=str(topics))
    project = project_of()
    ref = (
        None
        if package is not None
        else (model or f"{project.tracking.registered_model or project.name}@champion")
    )
    options = RunOptions(
        stream=StreamOptions(
            brokers=brokers,
            input_topic=input_topic,
            output_topic=output_topic,
            dlq_topic=dlq_topic,
            group=group,
            max_batch=max_batch,
            id_field=id_field,
            exactly_once=exactly_once,
            kafka_config=parse_config(kafka_config or []),
        ),
        serve=project.serve,
        ref=ref,
        package_dir=package,
        cache_dir=project.state_dir / "models",
        tracking_uri=None if package is not None else tracking_uri_for(project, override=tracking_uri()),
        log_dir=project.state_dir / "requests" if log_requests else None,
        metrics_port=metrics_port,
        workers=workers,
        poll_s=poll,
    )
    console.print(
        f"streaming {input_topic} → {output_topic} (dead letters: {dlq_topic}) with {ref or package}, "
        f"group {group}, {workers} worker(s){', exactly-once' if exactly_once else ''}"
    )
    run_stream(options)
