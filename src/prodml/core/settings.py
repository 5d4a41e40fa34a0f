"""Process-level settings: ``PRODML_*`` environment variables over defaults.

Settings are read once, at start, by the CLI or the server and passed down; library code never reads
the environment at import time. Keys of the project file that are deployment targets or secrets can be
overridden as ``PRODML_<SECTION>__<KEY>`` (see :func:`prodml.core.project.env_overrides`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Settings of one prodml process.

    Example:
        >>> Settings(log_level="DEBUG").log_level
        'DEBUG'
    """

    model_config = SettingsConfigDict(env_prefix="PRODML_", extra="ignore")

    project: Path | None = None
    """Path of ``prodml.yaml``; default: ``./prodml.yaml``."""
    log_level: str = "INFO"
    log_json: bool = False
    debug: bool = False
    tracking_uri: str | None = None
    """MLflow tracking URI; default: ``sqlite:///<project>/.prodml/mlflow.db``."""
    admin_token: str | None = None
