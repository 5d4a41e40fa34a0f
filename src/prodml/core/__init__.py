"""Types, errors, settings, logging and the project file: the layer everything else stands on."""

from prodml.core.errors import (
    ConfigError,
    ContractViolation,
    DataError,
    FeatureError,
    InvalidInput,
    MissingDependency,
    NotFound,
    ProdmlError,
    SourceNotFound,
    Unavailable,
)
from prodml.core.project import Project, load_project
from prodml.core.settings import Settings

__all__ = [
    "ConfigError",
    "ContractViolation",
    "DataError",
    "FeatureError",
    "InvalidInput",
    "MissingDependency",
    "NotFound",
    "ProdmlError",
    "Project",
    "Settings",
    "SourceNotFound",
    "Unavailable",
    "load_project",
]
