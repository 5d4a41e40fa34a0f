"""The serving image: a multi-stage Dockerfile, its ``.dockerignore`` and the build context's files.

The build stage installs ``prodml[serve,kafka]`` (plus the MLflow client when the model comes from the
registry) into a virtual environment; the final stage copies only that environment, runs as uid 10001
and writes nothing outside ``/app/.prodml`` and ``/tmp``, so it runs with a read-only root filesystem.

A baked-in package is copied to ``/app/model`` with a ``model.sha256`` list; the entrypoint checks every
digest before the server starts and refuses to start on a mismatch. Otherwise the server fetches the
model from the registry at start and verifies its recorded digests before loading it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from prodml import __version__
from prodml.deploy.credentials import scrub
from prodml.deploy.files import Files
from prodml.deploy.settings import DeploySettings

__all__ = ["PYTHON_IMAGE", "UID", "image_files", "package_files", "server_args"]

PYTHON_IMAGE = "python:3.11.14-slim-bookworm"
UID = 10001
STATE_DIR = "/app/.prodml"
MLFLOW_CLIENT = "mlflow-skinny==3.17.2"


def server_args(settings: DeploySettings) -> list[str]:
    """Arguments to the image's entrypoint (``prodml serve``)."""
    return [] if settings.package is not None else ["--model", settings.model_ref]


def package_files(settings: DeploySettings) -> list[tuple[str, Path]]:
    """The baked-in package's files, as (path in the build context, source)."""
    if settings.package is None:
        return []
    return [(f"model/{p.name}", p) for p in sorted(settings.package.iterdir()) if p.is_file()]


def _digests(settings: DeploySettings) -> str:
    lines = [
        f"{hashlib.sha256(source.read_bytes()).hexdigest()}  /app/{rel}"
        for rel, source in package_files(settings)
    ]
    return "\n".join(lines) + "\n"


def image_files(settings: DeploySettings) -> Files:
    """``Dockerfile``, ``.dockerignore``, the project file and (baked) the digest list."""
    project_file = scrub((settings.project.root / "prodml.yaml").read_text(encoding="utf-8"))
    files: Files = {
        "Dockerfile": dockerfile(settings),
        ".dockerignore": "*\n!prodml.yaml\n!wheels/\n!model/\n!model.sha256\n",
        "prodml.yaml": project_file,
        "wheels/README.md": (
            "Put a prodml wheel here to build the image from this checkout "
            "(`pip wheel --no-deps -w wheels /path/to/prodml`);\n"
            f"left empty, the build installs prodml {__version__} from the package index.\n"
        ),
    }
    if settings.package is not None:
        files["model.sha256"] = _digests(settings)
    return files


def dockerfile(settings: DeploySettings) -> str:
    serve = settings.serve
    baked = settings.package is not None
    # kafka: the request log's producer and the stream worker, which runs from the same image
    requirements = f'"prodml[serve,kafka]=={__version__}"' + (
        "" if baked else f' "{MLFLOW_CLIENT}" "boto3==1.44.8"'
    )
    if baked:
        copy_model = "COPY model/ /app/model/\nCOPY model.sha256 /app/model.sha256\n"
        entrypoint = (
            'ENTRYPOINT ["/bin/sh", "-c", "sha256sum --check --quiet /app/model.sha256 '
            '&& exec prodml serve --package /app/model \\"$@\\"", "--"]\nCMD []\n'
        )
    else:
        copy_model = ""
        entrypoint = f'ENTRYPOINT ["prodml", "serve"]\nCMD ["--model", "{settings.model_ref}"]\n'
    ready = f"http://127.0.0.1:{serve.port}/v2/health/ready"
    healthcheck = f'["python", "-c", "import urllib.request; urllib.request.urlopen(\'{ready}\', timeout=2)"]'
    return f"""\
# syntax=docker/dockerfile:1
# The serving image of {settings.project.name}, rendered by `prodml deploy render`.
# Build: docker build -t {settings.image} .
# Run:   docker run --read-only --tmpfs /tmp --tmpfs {STATE_DIR}:uid={UID} \\
#          -p {serve.port}:{serve.port} {settings.image}

FROM {PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY wheels/ wheels/
RUN python -m venv /opt/prodml \\
    && /opt/prodml/bin/pip install --no-cache-dir --find-links wheels {requirements}

FROM {PYTHON_IMAGE}
ENV PATH=/opt/prodml/bin:$PATH \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PRODML_PROJECT=/app/prodml.yaml \\
    PRODML_LOG_JSON=true \\
    PRODML_SERVE__HOST=0.0.0.0 \\
    MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false
RUN groupadd --system --gid {UID} prodml \\
    && useradd --system --uid {UID} --gid prodml --no-create-home --shell /usr/sbin/nologin prodml \\
    && mkdir -p {STATE_DIR} \\
    && chown {UID}:{UID} {STATE_DIR}
COPY --from=build /opt/prodml /opt/prodml
WORKDIR /app
COPY prodml.yaml /app/prodml.yaml
{copy_model}USER {UID}:{UID}
EXPOSE {serve.port} {serve.grpc_port}
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \\
    CMD {healthcheck}
STOPSIGNAL SIGTERM
{entrypoint}"""
