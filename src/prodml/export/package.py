"""The model package: one ONNX graph with its schema, reference profile, metrics, card and lineage.

A package is a directory of plain files (JSON, Markdown, ONNX); nothing in it is ever unpickled. Its
sha256 digests are recorded at registration, and :func:`load_package` reads each file once, hashes those
bytes, compares them with the expected digests and only then parses them, so a tampered or truncated
file is refused before it is deserialised, and the bytes checked are the bytes used.

Example:
    >>> digests = write_package(path, model=onnx_model, schema=..., ...)  # doctest: +SKIP
    >>> package = load_package(path, digests)  # doctest: +SKIP
    >>> session = package.session()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prodml.core.errors import MissingDependency, ProdmlError
from prodml.core.files import atomic_path
from prodml.core.types import StrPath

__all__ = [
    "FILES",
    "ModelPackage",
    "TamperedArtifact",
    "load_package",
    "safe_join",
    "write_package",
]

FILES = ("model.onnx", "schema.json", "profile.json", "metrics.json", "lineage.json", "model_card.md")


class TamperedArtifact(ProdmlError):
    """A package file is missing, truncated or does not match its recorded digest."""

    exit_code = 9
    http_status = 500
    grpc_code = "DATA_LOSS"


def safe_join(root: Path, relative: str) -> Path:
    """``root / relative``, refusing absolute paths and anything that resolves outside ``root``."""
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise TamperedArtifact(f"refusing artifact path {relative!r}: it leaves the package directory")
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise TamperedArtifact(f"refusing artifact path {relative!r}: it resolves outside {root}")
    return path


def write_package(
    directory: Path,
    *,
    model: Any,
    schema: dict[str, Any],
    profile: dict[str, Any],
    metrics: dict[str, Any],
    lineage: dict[str, Any],
    card: str,
) -> dict[str, str]:
    """Write the package files into ``directory``; return ``{file: sha256}``."""
    directory.mkdir(parents=True, exist_ok=True)
    documents = {
        "schema.json": schema,
        "profile.json": profile,
        "metrics.json": metrics,
        "lineage.json": lineage,
    }
    blobs = {
        "model.onnx": model.SerializeToString(),
        **{name: (json.dumps(obj, indent=2, default=str) + "\n").encode() for name, obj in documents.items()},
        "model_card.md": card.encode(),
    }
    for name, data in blobs.items():
        with atomic_path(directory / name) as tmp:
            tmp.write_bytes(data)
    return {name: hashlib.sha256(blobs[name]).hexdigest() for name in FILES}


@dataclass
class ModelPackage:
    """A verified package in memory. ``onnx`` holds the verified graph bytes."""

    path: Path
    onnx: bytes
    schema: dict[str, Any]
    profile: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    card: str
    digests: dict[str, str] = field(default_factory=dict)

    def session(self, *, intra_op_threads: int = 1, graph: bytes | None = None) -> Any:
        """An ONNX Runtime session over the verified graph bytes (CPU, sequential execution).

        ``graph`` replaces the bytes with a graph derived from them (the server's front-loaded graph).
        With several threads, the pool's threads stop spinning when a run ends, so an idle session holds
        no core.
        """
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise MissingDependency("onnxruntime", "serve") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        if intra_op_threads > 1:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(graph or self.onnx, options, providers=["CPUExecutionProvider"])


def load_package(directory: StrPath, expected: dict[str, str] | None) -> ModelPackage:
    """Verify every file of the package against ``expected`` digests, then parse it.

    ``expected=None`` trusts the directory (a local package given on the command line): the digests are
    those of the bytes read, each file read once.

    Raises:
        TamperedArtifact: a file is missing, or its bytes do not hash to the expected digest.
    """
    root = Path(directory)
    missing = [name for name in FILES if expected is not None and name not in expected]
    if missing:
        raise TamperedArtifact(
            f"no recorded digest for {', '.join(missing)}; refusing to load an unverifiable package",
            hint="re-register the model with this version of prodml",
        )
    blobs: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    for name in FILES:
        path = safe_join(root, name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TamperedArtifact(f"package file {name} is missing from {root}: {exc.strerror}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if expected is not None and digest != expected[name]:
            raise TamperedArtifact(
                f"package file {name} does not match its recorded sha256 "
                f"(expected {expected[name][:12]}…, found {digest[:12]}…; {len(data)} bytes)",
                hint="the artifact was modified or truncated; re-download it or re-register the model",
            )
        blobs[name] = data
        digests[name] = digest
    try:
        parsed = {
            n: json.loads(blobs[n]) for n in ("schema.json", "profile.json", "metrics.json", "lineage.json")
        }
    except json.JSONDecodeError as exc:  # pragma: no cover - digests matched, so the writer was broken
        raise TamperedArtifact(f"package JSON does not parse: {exc}") from exc
    return ModelPackage(
        path=root,
        onnx=blobs["model.onnx"],
        schema=parsed["schema.json"],
        profile=parsed["profile.json"],
        metrics=parsed["metrics.json"],
        lineage=parsed["lineage.json"],
        card=blobs["model_card.md"].decode("utf-8"),
        digests=digests,
    )
