"""The model of a job: a registry reference (``NAME@alias``, ``NAME/VERSION``, ``NAME``) or a package
directory, as one digest-verified package — fetched exactly as the server fetches it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prodml.export.package import ModelPackage, load_package

__all__ = ["Model", "resolve_model"]


@dataclass
class Model:
    """A verified package with the name and version it is registered under (``local`` for a directory)."""

    name: str
    version: str
    package: ModelPackage

    @property
    def digests(self) -> dict[str, str]:
        return self.package.digests


def resolve_model(
    *, ref: str | None, package_dir: Path | None, tracking_uri: str | None, cache_dir: Path
) -> Model:
    """Load the package named by ``ref`` (through the registry, verified against its recorded sha256
    digests, cached under ``cache_dir``) or the local ``package_dir`` (trusted, digests computed).

    Raises:
        ConfigError: neither or both given.
        NotFound, Unavailable, TamperedArtifact: from the registry and the verification.
    """
    from prodml.core.errors import ConfigError

    if (ref is None) == (package_dir is None):
        raise ConfigError(
            "give a model reference or a package directory, not both or neither",
            hint="--model NAME@alias | NAME/VERSION, or --package DIR",
        )
    if package_dir is not None:
        package = load_package(package_dir, None)
        return Model(Path(package_dir).name, "local", package)
    from prodml.registry.mlflow import Registry

    assert ref is not None and tracking_uri is not None
    registry = Registry(tracking_uri)
    mv = registry.resolve(ref)
    return Model(mv.name, mv.version, registry.load(mv, cache_dir))
