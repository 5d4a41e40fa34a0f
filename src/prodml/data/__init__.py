"""Data: sources, contracts and their validation, profiles, the demo world simulator."""

from prodml.data.contracts import ValidationReport, Violation, validate_tables
from prodml.data.sources import Catalog, read_files
from prodml.data.validate import validate_project

__all__ = [
    "Catalog",
    "ValidationReport",
    "Violation",
    "read_files",
    "validate_project",
    "validate_tables",
]
