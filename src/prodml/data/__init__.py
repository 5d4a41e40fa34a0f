"""Data: sources, contracts and their validation, profiles, the demo world simulator.

``sources.py`` reads files, SQL and PostgreSQL into Arrow; ``contracts.py`` / ``validate.py`` check them;
``profile.py`` profiles a table and infers a contract, which ``scaffold.py`` (``prodml init --from``) turns
into a whole project; ``examples.py`` and ``simulate.py`` write the bundled examples and the demo world.
"""

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
