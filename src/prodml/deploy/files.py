"""Rendered files: a mapping of relative path → text, serialised the same way on every run.

Rendering twice gives identical bytes: mappings keep the order they were built in, YAML and JSON are
written by one function each, and nothing reads the clock or the environment.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from prodml.core.errors import ConfigError

__all__ = ["Files", "to_json", "to_yaml", "write_files"]

Files = dict[str, str]
"""Relative path → file text."""


class _Dumper(yaml.SafeDumper):
    """Block style, no aliases, multi-line strings as literal blocks (readable PromQL and scripts)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(*documents: Mapping[str, Any], header: str = "") -> str:
    """One or more YAML documents (``---`` between them), keys in insertion order."""
    body = "---\n".join(
        yaml.dump(dict(doc), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=110)
        for doc in documents
    )
    return (f"# {header}\n" if header else "") + body


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False) + "\n"


def write_files(
    out: Path, files: Mapping[str, str], *, binary: Iterable[tuple[str, Path]] = ()
) -> list[Path]:
    """Write ``files`` (and copy ``binary`` sources) under ``out``; return the written paths, sorted."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", hint="give a directory (it is created if missing)")
    written: list[Path] = []
    for rel, text in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for rel, source in sorted(binary):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source.read_bytes())
        written.append(path)
    return sorted(written)
