"""MLflow tracking and Model Registry: the only module of prodml that imports mlflow.

Embedded default: ``sqlite:///<project>/.prodml/mlflow.db`` with artifacts under ``.prodml/mlartifacts``.
Scale profile: any MLflow tracking URI (a server backed by PostgreSQL + S3, or a database URI).

Registry calls time out within 5 s and do not retry for minutes (MLflow's defaults do); MLflow never
unpickles anything for prodml (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``): a registered version's
source is a directory of plain files, the model package.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prodml.core.errors import ConfigError, NotFound, ProdmlError, Unavailable
from prodml.core.project import Project
from prodml.export.cache import PackageCache
from prodml.export.package import FILES, ModelPackage, TamperedArtifact, load_package, safe_join

__all__ = ["DIGEST_TAG", "ModelVersion", "Registry", "RegistryError", "Run", "parse_ref", "tracking_uri_for"]

logger = logging.getLogger(__name__)

DIGEST_TAG = "prodml.sha256."
PACKAGE_PATH = "package"

_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "GIT_PYTHON_REFRESH": "quiet",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow installs its own handler at import and logs set-up chatter ("Creating initial MLflow
    # database tables...") at INFO through it, past the CLI's logging set-up: warnings only, unless asked.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


class RegistryError(ProdmlError):
    """The registry refused a request (other than not-found or unreachable)."""

    exit_code = 10
    http_status = 502
    grpc_code = "INTERNAL"


def _mlflow() -> Any:
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    import mlflow

    return mlflow


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    """Turn MLflow and network failures into prodml errors, once, here."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except ProdmlError:
        raise
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        message = str(exc).splitlines()[0][:300]
        if code == "RESOURCE_DOES_NOT_EXIST" or "not found" in message.lower():
            raise NotFound(f"{what}: {message}", hint="'prodml models list' shows what exists") from exc
        if code in ("TEMPORARILY_UNAVAILABLE", "ENDPOINT_NOT_FOUND") or "Max retries" in message:
            raise Unavailable(
                f"{what}: the registry did not answer: {message}",
                hint="check the tracking URI and that the server is up",
            ) from exc
        raise RegistryError(f"{what}: {message}") from exc
    except (OSError, TimeoutError) as exc:
        raise Unavailable(
            f"{what}: the registry did not answer: {exc}",
            hint="check the tracking URI and that the server is up",
        ) from exc


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME@alias`` → (name, alias, None); ``NAME/3`` → (name, None, "3"); ``NAME`` → (name, None, None)."""
    ref = ref.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        if not version.isdigit():
            raise ConfigError(
                f"model reference {ref!r}: version {version!r} is not a number",
                hint="write NAME@alias, NAME/VERSION or NAME",
            )
        return name, None, version
    return ref, None, None


@dataclass
class ModelVersion:
    """One registered version, with its aliases, tags and recorded digests."""

    name: str
    version: str
    run_id: str | None
    source: str
    aliases: list[str]
    tags: dict[str, str]
    created_ms: int

    @property
    def digests(self) -> dict[str, str]:
        return {k.removeprefix(DIGEST_TAG): v for k, v in self.tags.items() if k.startswith(DIGEST_TAG)}


@dataclass
class Run:
    """An open MLflow run: log parameters, metrics, tags and artifacts to it."""

    client: Any
    run_id: str
    artifact_uri: str
    _params: dict[str, str] = field(default_factory=dict)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k)[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], *, step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i : i + 500])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


class Registry:
    """Tracking and Model Registry on one MLflow URI.

    Args:
        tracking_uri: an MLflow tracking URI (``sqlite:///…``, ``postgresql+psycopg://…``, ``http://…``).
        artifact_root: where new experiments store artifacts (default: the server's choice, or
            ``mlartifacts`` beside a SQLite file).
    """

    def __init__(self, tracking_uri: str, *, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        if artifact_root is None and tracking_uri.startswith("sqlite:///"):
            artifact_root = (
                Path(tracking_uri.removeprefix("sqlite:///")).parent.joinpath("mlartifacts").as_uri()
            )
        self.artifact_root = artifact_root
        mlflow = _mlflow()
        with _translate("connecting to the tracking store"):
            self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # --- tracking ---------------------------------------------------------------------------------

    def _experiment_id(self, name: str) -> str:
        with _translate(f"experiment '{name}'"):
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                return str(experiment.experiment_id)
            return str(self.client.create_experiment(name, artifact_location=self.artifact_root))

    @contextlib.contextmanager
    def start_run(
        self, experiment: str, *, run_name: str | None = None, parent: Run | None = None
    ) -> Iterator[Run]:
        """Open a run (a child of ``parent`` if given); it ends FINISHED, or FAILED if the block raises."""
        tags = {"mlflow.parentRunId": parent.run_id} if parent is not None else None
        with _translate("starting a run"):
            info = self.client.create_run(self._experiment_id(experiment), run_name=run_name, tags=tags).info
        run = Run(self.client, info.run_id, info.artifact_uri)
        try:
            with _translate("logging to the run"):
                yield run
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.set_terminated(run.run_id, "FAILED")
            raise
        with _translate("ending the run"):
            self.client.set_terminated(run.run_id, "FINISHED")

    # --- registry ---------------------------------------------------------------------------------

    def register(
        self, name: str, run: Run, package_dir: Path, digests: dict[str, str], tags: dict[str, Any]
    ) -> ModelVersion:
        """Upload a package to the run and register it as a new version of ``name``."""
        with _translate(f"registering a version of '{name}'"):
            run.log_artifact(package_dir, PACKAGE_PATH)
            try:
                self.client.get_registered_model(name)
            except Exception:
                with contextlib.suppress(Exception):
                    self.client.create_registered_model(name)
            all_tags = {
                **{k: str(v) for k, v in tags.items()},
                **{DIGEST_TAG + f: d for f, d in digests.items()},
            }
            mv = self.client.create_model_version(
                name, f"{run.artifact_uri}/{PACKAGE_PATH}", run_id=run.run_id, tags=all_tags
            )
            return self.get(name, str(mv.version))

    def get(self, name: str, version: str) -> ModelVersion:
        with _translate(f"model '{name}' version {version}"):
            mv = self.client.get_model_version(name, version)
        return self._wrap(mv)

    def _wrap(self, mv: Any) -> ModelVersion:
        return ModelVersion(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            source=mv.source,
            aliases=sorted(mv.aliases or []),
            tags=dict(mv.tags or {}),
            created_ms=int(mv.creation_timestamp or 0),
        )

    def resolve(self, ref: str) -> ModelVersion:
        """The version a reference names: ``NAME@alias``, ``NAME/VERSION`` or ``NAME`` (the latest)."""
        name, alias, version = parse_ref(ref)
        if alias is not None:
            with _translate(f"alias '{alias}' of model '{name}'"):
                return self._wrap(self.client.get_model_version_by_alias(name, alias))
        if version is not None:
            return self.get(name, version)
        versions = self.versions(name)
        if not versions:
            raise NotFound(f"model '{name}' has no versions", hint="run 'prodml train' first")
        return versions[0]

    def versions(self, name: str) -> list[ModelVersion]:
        """All versions of ``name``, newest first, with their aliases.

        MLflow's version search leaves ``aliases`` empty; they are read from the registered model.
        """
        with _translate(f"model '{name}'"):
            found = self.client.search_model_versions(f"name = '{name}'")
            aliases = self.client.get_registered_model(name).aliases if found else {}
        by_version: dict[str, list[str]] = {}
        for alias, version in (aliases or {}).items():
            by_version.setdefault(str(version), []).append(alias)
        wrapped = [self._wrap(mv) for mv in found]
        for v in wrapped:
            v.aliases = sorted(set(v.aliases) | set(by_version.get(v.version, [])))
        return sorted(wrapped, key=lambda v: -int(v.version))

    def models(self) -> list[str]:
        with _translate("listing models"):
            return sorted(m.name for m in self.client.search_registered_models())

    def set_alias(self, name: str, alias: str, version: str) -> None:
        with _translate(f"setting alias '{alias}' of '{name}'"):
            self.client.set_registered_model_alias(name, alias, version)

    def alias_version(self, name: str, alias: str) -> ModelVersion | None:
        """The version holding ``alias``, or None when no version holds it."""
        try:
            return self.resolve(f"{name}@{alias}")
        except NotFound:
            return None

    def cache_ref(self, ref: str, cache: Path) -> ModelVersion:
        """Resolve ``ref``, put its verified package in the local cache and record the reference there,
        so a server on this machine starts on it without waiting for the registry."""
        mv = self.resolve(ref)
        self.load(mv, cache)
        PackageCache(cache).remember(mv.name, ref.removeprefix("models:/"), mv.version, mv.digests)
        return mv

    def model_tags(self, name: str) -> dict[str, str]:
        """The tags of registered model ``name`` (where the deployment spec and its events live)."""
        with _translate(f"model '{name}'"):
            return dict(self.client.get_registered_model(name).tags or {})

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        with _translate(f"tagging model '{name}'"):
            self.client.set_registered_model_tag(name, key, value)

    def set_version_tags(self, name: str, version: str, tags: dict[str, Any]) -> None:
        with _translate(f"tagging '{name}' version {version}"):
            for key, value in tags.items():
                self.client.set_model_version_tag(name, version, key, str(value))

    def download(self, mv: ModelVersion, dest: Path) -> Path:
        """Download the version's package into ``dest`` (replacing it) and return the directory.

        Artifact names come from the store and are untrusted: only the package's known files are
        fetched, each confined to ``dest``.
        """
        if mv.run_id is None:
            raise RegistryError(f"model '{mv.name}' version {mv.version} has no run to download from")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
        try:
            with _translate(f"downloading '{mv.name}' version {mv.version}"):
                for name in FILES:
                    got = Path(
                        self.client.download_artifacts(mv.run_id, f"{PACKAGE_PATH}/{name}", str(staging))
                    )
                    if got.resolve() != safe_join(staging, name):
                        raise TamperedArtifact(f"artifact {name} was written outside the download directory")
            if dest.exists():
                shutil.rmtree(dest)
            staging.replace(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dest

    def load(self, mv: ModelVersion, cache: Path) -> ModelPackage:
        """The verified package of ``mv``: from ``cache/NAME/VERSION`` if intact, else downloaded."""
        local = PackageCache(cache).path(mv.name, mv.version)
        if local.is_dir():
            try:
                return load_package(local, mv.digests)
            except TamperedArtifact:
                logger.warning("cached package %s is damaged; downloading it again", local)
        return load_package(self.download(mv, local), mv.digests)


def tracking_uri_for(project: Project, *, override: str | None = None) -> str:
    """The tracking URI to use: ``override`` (PRODML_TRACKING_URI), else the project file's
    ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite store under ``.prodml``."""
    uri = override or project.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    project.state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{project.state_dir.resolve() / 'mlflow.db'}"
