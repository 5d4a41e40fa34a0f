"""The local package cache: verified packages under ``<root>/<name>/<version>/`` and, in
``<root>/<name>/refs.json``, which version each reference (``name@alias``) pointed to, with its digests.

The server starts from here when the registry is slow or down; ``prodml train`` and ``prodml models
promote`` fill it, so a server on the same machine starts on the new champion without waiting for MLflow.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prodml.core.files import atomic_write_text
from prodml.export.package import ModelPackage, load_package, safe_join

__all__ = ["PackageCache"]


class PackageCache:
    """Example: ``PackageCache(project.state_dir / "models").lookup("churn", "churn@champion")``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str, version: str) -> Path:
        return safe_join(self.root, f"{name}/{version}")

    def _refs(self, name: str) -> Path:
        return safe_join(self.root, f"{name}/refs.json")

    def remember(self, name: str, ref: str, version: str, digests: dict[str, str]) -> None:
        """Record that ``ref`` now means ``version`` (whose verified files are in :meth:`path`)."""
        path = self._refs(name)
        refs: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        refs[ref] = {"version": version, "digests": digests, "at": time.time()}
        atomic_write_text(path, json.dumps(refs, indent=2))

    def lookup(self, name: str, ref: str) -> tuple[str, dict[str, str]] | None:
        path = self._refs(name)
        if not path.is_file():
            return None
        entry = json.loads(path.read_text()).get(ref)
        return None if entry is None else (str(entry["version"]), dict(entry["digests"]))

    def _spec(self, name: str) -> Path:
        return safe_join(self.root, f"{name}/deployment.json")

    def remember_spec(self, name: str, spec: str | None, digests: dict[str, dict[str, str]]) -> None:
        """Record the deployment spec (its JSON) a server last applied, with each variant's digests;
        None forgets it (the model has no spec any more)."""
        path = self._spec(name)
        if spec is None:
            path.unlink(missing_ok=True)
            return
        atomic_write_text(path, json.dumps({"spec": spec, "digests": digests, "at": time.time()}, indent=2))

    def spec(self, name: str) -> tuple[str, dict[str, dict[str, str]]] | None:
        """The spec :meth:`remember_spec` recorded and its variants' digests, or None."""
        path = self._spec(name)
        if not path.is_file():
            return None
        entry = json.loads(path.read_text())
        return str(entry["spec"]), {str(v): dict(d) for v, d in entry["digests"].items()}

    def load(self, name: str, ref: str) -> tuple[str, ModelPackage] | None:
        """The verified package ``ref`` last pointed to, or None; TamperedArtifact if it was altered."""
        found = self.lookup(name, ref)
        if found is None:
            return None
        version, digests = found
        return version, load_package(self.path(name, version), digests)
