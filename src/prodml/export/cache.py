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

    def load(self, name: str, ref: str) -> tuple[str, ModelPackage] | None:
        """The verified package ``ref`` last pointed to, or None; TamperedArtifact if it was altered."""
        found = self.lookup(name, ref)
        if found is None:
            return None
        version, digests = found
        return version, load_package(self.path(name, version), digests)
