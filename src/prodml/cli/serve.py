"""``prodml serve``: the inference server (OIP v2, KServe v1, MLflow scoring, /predict)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from prodml.cli._common import admin_token, console, handle_errors, project_of, tracking_uri
from prodml.core.errors import ConfigError, MissingDependency
from prodml.core.project import Serve


@handle_errors
def serve(
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Registry reference: NAME@alias, NAME/VERSION or NAME (default: PROJECT@champion)."
        ),
    ] = None,
    package: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Serve a local model package directory instead of the registry."),
    ] = None,
    host: Annotated[Optional[str], typer.Option(help="Bind address (default: serve.host).")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="HTTP port (default: serve.port).")] = None,  # noqa: UP045
    grpc_port: Annotated[
        Optional[int], typer.Option(help="gRPC port, 0 to disable (default: serve.grpc_port).")  # noqa: UP045
    ] = None,
    admin_port: Annotated[Optional[int], typer.Option(help="Admin port (default: serve.admin_port).")] = None,  # noqa: UP045
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: serve.workers).")] = None,  # noqa: UP045
    poll: Annotated[float, typer.Option(help="Seconds between registry checks for a moved alias.")] = 30.0,
    tls_cert: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="PEM certificate: serve HTTPS and gRPC over TLS (with --tls-key). Default: off."),
    ] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="PEM private key for --tls-cert.")] = None,  # noqa: UP045
    cors_origin: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="An origin browsers may call from ('*' for any); repeatable. Default: no CORS."),
    ] = None,
    read_timeout: Annotated[
        float, typer.Option(help="Seconds a client may take to send a request's head, and again its body.")
    ] = 10.0,
    max_connections: Annotated[
        int, typer.Option(help="Open connections per worker; more are refused.")
    ] = 1000,
    log_requests: Annotated[
        bool,
        typer.Option(
            help="Log requests and responses: Parquet parts, or Kafka if serve.request_log.kafka is set."
        ),
    ] = True,
    drift: Annotated[
        bool,
        typer.Option(help="Keep a live drift sketch of the traffic: prodml_drift_* gauges on /metrics."),
    ] = True,
) -> None:
    """Serve the champion model with ONNX Runtime until SIGTERM, then drain and exit 0.

    Set PRODML_API_KEY to require it (X-API-Key) on the inference routes.
    """
    from prodml.registry.mlflow import tracking_uri_for  # only a path helper; mlflow is not imported

    # Before prometheus_client loads: several workers share one fresh directory (one view of all of them);
    # one worker keeps values in memory. An inherited directory would sum this server with others' files.
    for inherited in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        os.environ.pop(inherited, None)
    if (workers or project_of().serve.workers) > 1:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prodml-metrics-")
    try:  # the serve extra: say so plainly when it is missing
        import onnxruntime  # noqa: F401
        import orjson  # noqa: F401
        import uvicorn  # noqa: F401

        from prodml.serve.online import online_options
        from prodml.serve.server import ServeOptions, run
    except ImportError as exc:
        raise MissingDependency(exc.name or "uvicorn", "serve") from None

    project = project_of()
    given = {"host": host, "port": port, "grpc_port": grpc_port, "admin_port": admin_port, "workers": workers}
    updates = {k: v for k, v in given.items() if v is not None}
    try:  # the fields' own checks apply to the options too
        settings = Serve.model_validate({**project.serve.model_dump(), **updates})
    except ValidationError as exc:
        err = exc.errors()[0]
        option = "--" + str(err["loc"][0]).replace("_", "-")
        raise ConfigError(
            f"{option} {err['input']!r}: {err['msg']}", hint="see prodml serve --help"
        ) from None
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("give --tls-cert and --tls-key together", hint="both are PEM files")
    if package is not None and model is not None:
        raise ConfigError("give --model or --package, not both", hint="--package serves a local directory")
    ref = (
        None
        if package is not None
        else (model or f"{project.tracking.registered_model or project.name}@champion")
    )
    options = ServeOptions(
        serve=settings,
        ref=ref,
        package_dir=package,
        cache_dir=project.state_dir / "models",
        tracking_uri=None if package is not None else tracking_uri_for(project, override=tracking_uri()),
        log_dir=project.state_dir / "requests" if log_requests else None,
        admin_token=admin_token(),
        poll_s=poll,
        api_key=os.environ.get("PRODML_API_KEY") or None,
        read_timeout_s=read_timeout,
        max_connections=max_connections,
        cors_origins=tuple(cors_origin or ()),
        tls=(tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None,
        monitor=project.monitor if drift else None,
        online=online_options(project),
    )
    scheme = "https" if options.tls else "http"
    run(
        options,
        on_listening=lambda: console.print(  # once the ports are ours: a taken one is an error (exit 7)
            f"serving {ref or package} on {scheme}://{settings.host}:{settings.port}, "
            f"gRPC {settings.grpc_port or 'off'} "
            f"({settings.workers} worker(s)); admin on {settings.admin_host}:{settings.admin_port}"
            + ("" if options.admin_token else " disabled (set PRODML_ADMIN_TOKEN)")
        ),
    )
