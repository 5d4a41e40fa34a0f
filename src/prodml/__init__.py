"""prodml: from raw data to a monitored production ML service, driven by one ``prodml.yaml``.

``import prodml`` stays cheap: stage packages (``prodml.data``, ``prodml.features``…) are imported
only when used.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prodml")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
