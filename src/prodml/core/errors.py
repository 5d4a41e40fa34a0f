"""The one error tree of prodml.

Every failure a user can cause or meet is one of these. Each class carries the HTTP status, the gRPC
status code name and the CLI exit code it maps to, so that each transport translates errors once, at
its boundary, and never by inspecting messages::

    ProdmlError                      exit 1   HTTP 500  INTERNAL
    ├── ConfigError                  exit 2   HTTP 400  INVALID_ARGUMENT   project file, settings, CLI args
    ├── ContractViolation            exit 3   HTTP 422  FAILED_PRECONDITION data broke its contract
    ├── DataError                    exit 4   HTTP 422  INVALID_ARGUMENT   unreadable/missing data, bad SQL
    │   └── SourceNotFound           exit 4   HTTP 404  NOT_FOUND          a file, glob or table is absent
    ├── FeatureError                 exit 4   HTTP 422  INVALID_ARGUMENT   feature definitions vs data
    ├── InvalidInput                 exit 4   HTTP 400  INVALID_ARGUMENT   a request that breaks the schema
    ├── NotFound                     exit 6   HTTP 404  NOT_FOUND          model, version, alias
    ├── Unavailable                  exit 7   HTTP 503  UNAVAILABLE        a backend that does not answer
    ├── MissingDependency            exit 5   HTTP 500  UNIMPLEMENTED      an optional extra not installed
    │   (defined next to the code that raises them, drawn here so the tree stays whole:)
    ├── export.onnx.ExportError      exit 8   HTTP 500  INTERNAL           ONNX disagrees with the model
    ├── export.package.TamperedArtifact exit 9 HTTP 500 DATA_LOSS          a digest does not match
    ├── registry.mlflow.RegistryError exit 10 HTTP 502  INTERNAL           the registry refused a call
    ├── registry.promotion.GateRefused exit 11 HTTP 409 FAILED_PRECONDITION the promotion gate said no
    ├── monitor.summary.DriftBreach  exit 12  HTTP 409  FAILED_PRECONDITION drift broke a threshold
    ├── data.online_store.MissingEntity exit 6 HTTP 404 NOT_FOUND          no online row for an entity
    ├── data.online_store.FeaturesUnavailable exit 7 HTTP 424 UNAVAILABLE  the store is down, policy: fail
    ├── (under Unavailable) data.online_store.StoreUnavailable             the online store does not answer
    ├── (under DataError) batch.commit.OutputError                         the output cannot be written
    └── (under ContractViolation) batch.rejects.TooManyRejects             rejects above the allowed rate

Messages follow one rule: name the thing, then the fix. The ``hint`` is shown on its own line by the CLI.
Field-level detail (a request's broken columns, a project file's bad keys) is one attribute on every
error, ``fields``: a list of ``{"field": …, "error": …}`` that transports return as they are.
Third-party exceptions are translated where the library is called and chained with ``from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

__all__ = [
    "ConfigError",
    "ContractViolation",
    "DataError",
    "FeatureError",
    "InvalidInput",
    "MissingDependency",
    "NotFound",
    "ProdmlError",
    "SourceNotFound",
    "Unavailable",
]


class ProdmlError(Exception):
    """Base of every prodml error.

    Args:
        message: what went wrong, naming the thing (a file, a key path, a column).
        hint: how to fix it, shown on its own line.
        fields: field-level detail, one ``{"field": …, "error": …}`` per problem.
    """

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[str] = "INTERNAL"

    def __init__(
        self, message: str, *, hint: str | None = None, fields: Sequence[dict[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.fields = list(fields)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(ProdmlError):
    """The project file, a setting or a command-line argument is wrong.

    ``problems`` (each a ``(key path, message)``) become its ``fields``.
    """

    exit_code = 2
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        problems: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message, hint=hint, fields=[{"field": k, "error": m} for k, m in problems])

    @property
    def problems(self) -> list[tuple[str, str]]:
        """``fields`` as ``(key path, message)`` pairs."""
        return [(f["field"], f["error"]) for f in self.fields]


class ContractViolation(ProdmlError):
    """Data broke its contract; ``report`` holds the full validation result."""

    exit_code = 3
    http_status = 422
    grpc_code = "FAILED_PRECONDITION"


class DataError(ProdmlError):
    """Data could not be read, parsed or queried."""

    exit_code = 4
    http_status = 422
    grpc_code = "INVALID_ARGUMENT"


class SourceNotFound(DataError):
    """A file, glob, bucket key or table named by a source does not exist."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class FeatureError(ProdmlError):
    """Feature definitions do not fit the data they are computed from."""

    exit_code = 4
    http_status = 422
    grpc_code = "INVALID_ARGUMENT"


class InvalidInput(ProdmlError):
    """A request or a row breaks the model's input schema."""

    exit_code = 4
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(ProdmlError):
    """A model, version or alias does not exist."""

    exit_code = 6
    http_status = 404
    grpc_code = "NOT_FOUND"


class Unavailable(ProdmlError):
    """A backend (registry, database, cache, broker) did not answer in time."""

    exit_code = 7
    http_status = 503
    grpc_code = "UNAVAILABLE"


class MissingDependency(ProdmlError):
    """An optional extra is needed for what was asked; the hint names the pip command."""

    exit_code = 5
    http_status = 500
    grpc_code = "UNIMPLEMENTED"

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this needs the optional package '{module}', which is not installed",
            hint=f"pip install 'prodml[{extra}]'",
        )
        self.module = module
        self.extra = extra
