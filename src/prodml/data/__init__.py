"""Data: sources, contracts and their validation, profiles, the demo world simulator, the online store.

``sources.py`` reads files, SQL and PostgreSQL into Arrow; ``contracts.py`` / ``validate.py`` check them;
``profile.py`` profiles a table and infers a contract, which ``scaffold.py`` (``prodml init --from``) turns
into a whole project; ``examples.py`` and ``simulate.py`` write the bundled examples and the demo world;
``online_store.py`` holds the latest feature values per entity, which the server reads (so it imports
only numpy, pyarrow and pydantic). Names load on first use: the serving path imports this package
without DuckDB.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Catalog",
    "ValidationReport",
    "Violation",
    "read_files",
    "validate_project",
    "validate_tables",
]

_HOME = {
    "Catalog": "prodml.data.sources",
    "read_files": "prodml.data.sources",
    "ValidationReport": "prodml.data.contracts",
    "Violation": "prodml.data.contracts",
    "validate_tables": "prodml.data.contracts",
    "validate_project": "prodml.data.validate",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'prodml.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
