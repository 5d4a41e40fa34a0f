"""The project file, ``prodml.yaml``, as one validated pydantic model.

Every command reads the project through :func:`load_project`, which turns YAML and validation problems
into one :class:`~prodml.core.errors.ConfigError` naming each key path, the offending value and the fix.

Example:
    >>> project = load_project("examples/churn/prodml.yaml")  # doctest: +SKIP
    >>> project.target.column
    'churned'
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from prodml.core.errors import ConfigError
from prodml.core.types import DType, StrPath, Task

__all__ = [
    "DATE_PARTS",
    "DEFAULT_METRICS",
    "ISO_DATE",
    "METRIC_TASKS",
    "Aggregate",
    "Attributes",
    "ColumnRule",
    "Features",
    "OnlineSpec",
    "Project",
    "Source",
    "TableContract",
    "Target",
    "Transform",
    "env_overrides",
    "load_project",
]

PROJECT_FILE = "prodml.yaml"
# Sections a PRODML_<SECTION>__<KEY> variable may override: deployment targets and secrets, never the
# model or the features, so that a trained model is reproducible from the committed file alone.
OVERRIDABLE = ("serve", "rollout", "monitor", "tracking", "sources")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Identifier = Annotated[str, Field(pattern=_IDENT.pattern)]

# The metric names and the tasks each applies to (prodml.train.metrics holds their functions; a test pins
# the two together). Here so that the project file is checked before any data is read.
METRIC_TASKS: dict[str, tuple[Task, ...]] = {
    "roc_auc": ("binary",),
    "pr_auc": ("binary",),
    "f1": ("binary",),
    "precision": ("binary",),
    "recall": ("binary",),
    "log_loss": ("binary", "multiclass"),
    "brier": ("binary",),
    "accuracy": ("binary", "multiclass"),
    "macro_f1": ("multiclass",),
    "weighted_f1": ("multiclass",),
    "roc_auc_ovr": ("multiclass",),
    "mse": ("regression",),
    "rmse": ("regression",),
    "mae": ("regression",),
    "r2": ("regression",),
    "map_at_k": ("ranking",),
    "ndcg_at_k": ("ranking",),
    "recall_at_k": ("ranking",),
}
DEFAULT_METRICS: dict[Task, tuple[str, ...]] = {
    "binary": ("roc_auc", "pr_auc", "f1", "log_loss", "brier"),
    "multiclass": ("macro_f1", "weighted_f1", "accuracy", "log_loss"),
    "regression": ("rmse", "mae", "r2", "mse"),
    "ranking": ("ndcg_at_k", "map_at_k", "recall_at_k"),
}
# The promotion metric when the project names none: the task's usual headline metric.
DEFAULT_GATE_METRIC: dict[Task, str] = {
    "binary": "roc_auc",
    "multiclass": "macro_f1",
    "regression": "r2",
    "ranking": "ndcg_at_k",
}
DatePart = Literal["year", "month", "day", "dayofweek", "dayofyear", "hour", "epoch_days"]
DATE_PARTS: tuple[DatePart, ...] = ("year", "month", "day", "dayofweek", "dayofyear", "hour", "epoch_days")
ISO_DATE = r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?:[T ]([0-9]{1,2})(?::.*)?)?"
"""What a date input must fully match (RE2, in the ONNX graph, and Python read it alike): ISO 8601
``YYYY-MM-DD``, optionally ``T`` or a space and the time, of which only the hour is used."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- data -------------------------------------------------------------------------------------------


class PostgresSpec(_Strict):
    """A PostgreSQL table or query. The DSN comes from the file, or from ``dsn_env`` for secrets."""

    dsn: str | None = None
    dsn_env: str | None = None
    table: str | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> PostgresSpec:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if (self.dsn is None) == (self.dsn_env is None):
            raise ValueError("give exactly one of 'dsn' or 'dsn_env' (the variable holding the DSN)")
        return self


class Source(_Strict):
    """One data source: a file/glob (local or ``s3://``), DuckDB SQL over other sources, or PostgreSQL."""

    path: str | None = None
    format: Literal["parquet", "orc", "csv"] | None = None
    sql: str | None = None
    postgres: PostgresSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        kinds = [k for k in ("path", "sql", "postgres") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a source needs exactly one of 'path', 'sql' or 'postgres'")
        if self.format is not None and self.path is None:
            raise ValueError("'format' applies only to a 'path' source")
        return self

    @property
    def kind(self) -> Literal["file", "sql", "postgres"]:
        if self.path is not None:
            return "file"
        return "sql" if self.sql is not None else "postgres"


class ColumnRule(_Strict):
    """Rules for one column. Unset rules are not checked."""

    dtype: DType | None = None
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | bool] | None = None
    regex: str | None = None
    unique: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from exc
        return self


class RowCount(_Strict):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


class Freshness(_Strict):
    column: str
    max_age_days: float = Field(gt=0)


class TableContract(_Strict):
    """The contract of one source: column rules, row count and freshness."""

    columns: dict[str, ColumnRule] = Field(default_factory=dict)
    row_count: RowCount | None = None
    freshness: Freshness | None = None
    id_column: str | None = None
    """Column whose values identify rows in violation samples (default: the row number)."""


# --- target and features ----------------------------------------------------------------------------


class Target(_Strict):
    """Where labels live: a source, its label column and (for time-aware data) its timestamp."""

    source: str
    column: str
    timestamp: str | None = None
    drop_missing: bool = False
    """Drop rows whose label is null (unlabelled rows) before training, and say how many; default: such
    rows are an error, since they usually mean a broken label join."""


Agg = Literal["count", "sum", "mean", "min", "max"]


def _count_only() -> list[Agg]:
    return ["count"]


class Metric(_Strict):
    column: str = "*"
    agg: list[Agg] = Field(default_factory=_count_only, min_length=1)

    @model_validator(mode="after")
    def _star_is_count(self) -> Metric:
        if self.column == "*" and self.agg != ["count"]:
            raise ValueError("column '*' supports only agg [count]")
        return self


class Aggregate(_Strict):
    """Per-entity window aggregates over an event table, as of each label's timestamp."""

    source: str
    timestamp: str
    windows: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [7, 30, 90])
    metrics: list[Metric] = Field(default_factory=lambda: [Metric()])
    days_since_last: bool = True
    prefix: Identifier | None = None


class Attributes(_Strict):
    """Columns of an entity table; with ``timestamp`` the value known at label time (as-of join)."""

    source: str
    columns: list[str] = Field(min_length=1)
    timestamp: str | None = None


class Transform(_Strict):
    """A row transform fitted with the model (so it ends up inside the ONNX graph)."""

    column: str
    op: Literal["scale", "onehot", "bucketize", "log", "date"]
    boundaries: list[float] | None = None
    parts: list[DatePart] | None = Field(default=None, min_length=1)
    """``date``: which parts to compute (default: all of them; ``hour`` is 0 for a date)."""

    @model_validator(mode="after")
    def _bucketize_needs_boundaries(self) -> Transform:
        if (self.op == "bucketize") != (self.boundaries is not None):
            raise ValueError("'boundaries' is required for op 'bucketize' and only for it")
        if self.parts is not None and self.op != "date":
            raise ValueError("'parts' applies only to op 'date'")
        if self.boundaries is not None and self.boundaries != sorted(set(self.boundaries)):
            raise ValueError("'boundaries' must be strictly increasing")
        return self


class OnlineSpec(_Strict):
    """``features.online``: the online feature store (``PRODML_FEATURES__ONLINE__<KEY>`` overrides it,
    see :func:`prodml.data.online_store.online_spec`). The server reads it for requests that carry the
    entity key instead of the features."""

    redis_url: str | None = None
    """Redis holds the store when set (``redis://host:port/db``); default: SQLite at ``path``."""
    path: str = ".prodml/online/features.sqlite"
    ttl_s: int | None = Field(default=None, gt=0)
    """Rows older than this many seconds count as missing (Redis: key expiry; SQLite: on read)."""
    missing: Literal["defaults", "reject"] = "reject"
    """An entity the store does not hold: ``reject`` answers 404 naming it; ``defaults`` fills the
    profile's defaults (mean of a number, most frequent category)."""
    unavailable: Literal["defaults", "reject"] = "defaults"
    """The store does not answer in time: ``defaults`` serves the profile's defaults; ``reject``
    answers 424 naming the entities."""
    timeout_ms: float = Field(default=50.0, gt=0, le=60_000)
    feast_repo: str | None = None
    """Read features from this Feast repository's online store instead (needs the ``feast`` extra)."""
    prefix: str = Field(default="prodml", min_length=1)
    """Redis key prefix; the project name is appended (``prodml:churn:<entity>``)."""


class Features(_Strict):
    aggregates: list[Aggregate] = Field(default_factory=list)
    attributes: list[Attributes] = Field(default_factory=list)
    transforms: list[Transform] = Field(default_factory=list)
    output: str = ".prodml/features/training.parquet"
    online: OnlineSpec | None = None
    """The online store; unset, the server still reads the default SQLite store once it is materialised."""


# --- model, validation, gate ------------------------------------------------------------------------


class Range(_Strict):
    """A numeric search range for one hyperparameter."""

    low: float
    high: float
    log: bool = False
    type: Literal["float", "int"] = "float"

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class Tune(_Strict):
    """An Optuna search: ``trials`` trials over ``space``, scored by cross-validated ``metric``."""

    trials: int = Field(default=20, ge=1, le=10_000)
    metric: str | None = None
    """Default: promotion.metric."""
    space: dict[str, Range | list[Any]] = Field(min_length=1)
    seed: int = 0


class ModelSpec(_Strict):
    estimator: str = "hist_gradient_boosting"
    params: dict[str, Any] = Field(default_factory=dict)
    tune: Tune | None = None


class Validation(_Strict):
    strategy: Literal["kfold", "stratified", "group", "timeseries"] = "stratified"
    folds: int = Field(default=5, ge=2, le=50)
    holdout: float = Field(default=0.2, ge=0.0, lt=0.9)
    seed: int = 0


class Promotion(_Strict):
    metric: str = "roc_auc"
    """Default: the task's headline metric (roc_auc, macro_f1, r2, ndcg_at_k)."""
    min: float | None = None
    max_drop_vs_champion: float | None = 0.002


# --- serve, rollout, monitor, tracking --------------------------------------------------------------


class CacheSpec(_Strict):
    enabled: bool = True
    redis_url: str | None = None
    ttl_s: int = Field(default=300, gt=0)
    max_items: int = Field(default=10_000, gt=0)


_TOPIC = r"^[A-Za-z0-9._-]{1,249}$"  # what Kafka accepts as a topic name


class KafkaLog(_Strict):
    bootstrap_servers: str = Field(min_length=1)
    topic: str = Field(default="prodml-requests", pattern=_TOPIC)
    feedback_topic: str = Field(default="prodml-feedback", pattern=_TOPIC)
    config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """More librdkafka producer settings (``security.protocol``, ``sasl.*``, ``compression.type``, ...)."""


class RequestLogSpec(_Strict):
    kafka: KafkaLog | None = None
    """Send each request and its response to a Kafka topic instead of writing Parquet parts."""


class Serve(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8082, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    max_batch_size: int = Field(default=256, ge=1)
    max_wait_ms: float = Field(default=0.0, ge=0)
    """Extra wait for more requests once a batch has company; 0 = take what is queued (adaptive). Above 0,
    every concurrent request goes to the runtime thread, which waits (small ones are otherwise batched on
    the event loop, which never waits)."""
    lone_threads: int | None = Field(default=None, ge=1, le=64)
    """ONNX Runtime threads for a large request alone in the server; None = cores per worker, at most 4."""
    busy_poll_us: int = Field(default=0, ge=0, le=100_000)
    """Opt-in: after each HTTP request and answer the event loop keeps polling its sockets this long before
    it sleeps, trading up to that much CPU per idle gap (which containers are throttled for) for not being
    woken up on VMs that halt idle vCPUs (see prodml.serve.poll); 0 (the default) = sleep at once."""
    max_body_bytes: int = Field(default=8 << 20, gt=0)
    max_rows: int = Field(default=10_000, gt=0)
    unknown_category: Literal["reject", "map"] = "reject"
    extra_columns: Literal["ignore", "reject"] = "ignore"
    """Columns a request sends that the model does not take. ``ignore`` (as MLflow does) lets clients send
    the raw record; nothing is lost, since every input is required: a misspelt name is still refused as
    the input it misses. ``reject``: 400 naming them."""
    out_of_range: Literal["flag", "reject"] = "flag"
    """Values outside the training ranges (``schema.json``): ``flag`` scores them, counts them per input in
    /metrics and names them in the response; ``reject`` refuses them (400) with the input and its range."""
    cache: CacheSpec = Field(default_factory=CacheSpec)
    request_log: RequestLogSpec = Field(default_factory=RequestLogSpec)


class Rollout(_Strict):
    steps: list[Annotated[int, Field(gt=0, le=100)]] = Field(default_factory=lambda: [10, 25, 50, 100])
    interval_s: float = Field(default=60, gt=0)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p99_ms: float | None = None
    failure_threshold: int = Field(default=3, ge=1)
    max_prediction_shift: float | None = Field(default=None, gt=0)
    """The most PSI between the canary's and the primary's prediction scores over one window."""
    min_requests: int = Field(default=200, ge=1)
    """Canary requests one window needs before it can pass (fewer never pass)."""
    max_metric_drop: float | None = Field(default=None, ge=0)
    """Once feedback labels exist: the most the canary's task metric (accuracy of a binary classifier,
    mean absolute error of a regressor) may trail the primary's on the rows logged since it started."""
    min_labels: int = Field(default=100, ge=2)
    """Labelled rows each variant needs before the task metric is compared (fewer: no verdict)."""
    replicas: list[str] = Field(default_factory=list)
    """Base URLs of every server replica (``/metrics`` is read from each); default: ``serve``'s address."""
    admin_urls: list[str] = Field(default_factory=list)
    """Admin base URLs of the replicas, told to reload after each change (PRODML_ADMIN_TOKEN)."""
    prometheus_url: str | None = Field(default=None, pattern=r"^https?://")
    """Read the replicas' metrics summed by this Prometheus (``/api/v1/query``) instead of each
    ``/metrics``: replicas need not be listed (Kubernetes pods behind a ServiceMonitor)."""
    prometheus_selector: str = ""
    """Label matchers that keep only this deployment's series, e.g. ``job="churn"``."""


class DriftThresholds(_Strict):
    """One feature's thresholds (or every feature's, under ``"*"``); a key set to null turns that check
    off, a key left out keeps the default (``prodml.export.drift.Thresholds``)."""

    psi: float | None = Field(default=None, gt=0)
    ks: float | None = Field(default=None, gt=0, le=1)
    js: float | None = Field(default=None, gt=0, le=1)
    wasserstein_std: float | None = Field(default=None, gt=0)
    null_rate_increase: float | None = Field(default=None, ge=0, le=1)
    out_of_range: float | None = Field(default=None, ge=0, le=1)
    unseen: float | None = Field(default=None, ge=0, le=1)
    min_rows: int | None = Field(default=None, ge=1)


class Monitor(_Strict):
    window_rows: int = Field(default=10_000, gt=0)
    psi_threshold: float = Field(default=0.2, gt=0)
    ks_threshold: float = Field(default=0.1, gt=0, le=1)
    thresholds: dict[str, DriftThresholds] = Field(default_factory=dict)
    """Per-feature overrides by feature name (``__prediction__``: the prediction score), and ``"*"`` for
    every feature, e.g. ``{"*": {js: 0.1}, age: {psi: 0.3}, plan: {unseen: null}}``."""
    cooldown: str = Field(default="24h", pattern=r"^\d+(\.\d+)?[smhdw]$")
    """``monitor check --on-breach retrain`` retrains at most once within this long (e.g. 24h, 7d)."""
    sample_every: int = Field(default=1, ge=1)
    """The server's live drift sketch observes every k-th request (a systematic sample)."""
    rows_per_request: int = Field(default=16, ge=1)
    """The live sketch keeps at most this many rows of a request (evenly spaced)."""


class Tracking(_Strict):
    uri: str | None = None
    registered_model: str | None = None


# --- the project ------------------------------------------------------------------------------------


class Project(_Strict):
    """A prodml project: everything ``prodml.yaml`` declares."""

    name: Identifier
    task: Task = "binary"
    entity: str | None = None
    sources: dict[Identifier, Source]
    target: Target
    contract: dict[str, TableContract] = Field(default_factory=dict)
    features: Features = Field(default_factory=Features)
    model: ModelSpec = Field(default_factory=ModelSpec)
    validation: Validation = Field(default_factory=Validation)
    metrics: list[str] = Field(default_factory=list)
    promotion: Promotion = Field(default_factory=Promotion)
    serve: Serve = Field(default_factory=Serve)
    rollout: Rollout = Field(default_factory=Rollout)
    monitor: Monitor = Field(default_factory=Monitor)
    tracking: Tracking = Field(default_factory=Tracking)

    _root: Path = PrivateAttr(default_factory=Path.cwd)

    @model_validator(mode="after")
    def _gate_metric_fits_task(self) -> Project:
        if "metric" not in self.promotion.model_fields_set:
            self.promotion.metric = DEFAULT_GATE_METRIC[self.task]
        return self

    @property
    def computed_metrics(self) -> list[str]:
        """The metrics training computes: ``metrics``, or the task's defaults."""
        return list(self.metrics) or list(DEFAULT_METRICS[self.task])

    @property
    def root(self) -> Path:
        """The directory holding ``prodml.yaml``; relative paths resolve against it."""
        return self._root

    @property
    def state_dir(self) -> Path:
        """``<root>/.prodml``: the embedded profile's tracking store, caches and outputs."""
        return self._root / ".prodml"

    def resolve(self, path: str) -> str:
        """Resolve a path of the project file: URIs as they are, relative paths against the root."""
        if "://" in path:
            return path
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else self._root / p)


# --- loading ----------------------------------------------------------------------------------------


def env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply ``PRODML_<SECTION>__<KEY>[__<KEY>…]`` variables to the parsed project file.

    Only the sections in ``OVERRIDABLE`` can be overridden. Values are parsed as YAML scalars, so
    ``PRODML_SERVE__PORT=9000`` sets an int.

    Example:
        >>> env_overrides({"serve": {}}, {"PRODML_SERVE__PORT": "9000"})
        {'serve': {'port': 9000}}
    """
    for name, raw in sorted(environ.items()):
        if not name.startswith("PRODML_") or "__" not in name:
            continue
        keys = [k.lower() for k in name.removeprefix("PRODML_").split("__")]
        if keys[0] not in OVERRIDABLE or not all(keys):
            continue
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[keys[-1]] = yaml.safe_load(raw) if raw else raw
    return data


def load_project(path: StrPath | None = None, *, environ: Mapping[str, str] | None = None) -> Project:
    """Read, override and validate a project file.

    Args:
        path: ``prodml.yaml`` or the directory holding it; default: the current directory.
        environ: the environment to take ``PRODML_*`` overrides from; default: ``os.environ``.

    Raises:
        ConfigError: the file is missing, is not YAML, or breaks the schema (every problem listed).
    """
    file = Path(path) if path is not None else Path.cwd()
    if file.is_dir():
        file = file / PROJECT_FILE
    if not file.is_file():
        raise ConfigError(
            f"no project file at {file}",
            hint="run 'prodml init DIR' to create one, or pass --project PATH",
        )
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{file} is not valid YAML{where}: {getattr(exc, 'problem', exc)}",
            hint="check the indentation and quoting around that line",
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file} must hold a mapping of keys (name, sources, target, …)")
    data = env_overrides(data, os.environ if environ is None else environ)
    try:
        project = Project.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(err) for err in exc.errors()]
        lines = "\n".join(f"  - {loc}: {msg}" for loc, msg in problems)
        raise ConfigError(
            f"{file} has {len(problems)} problem(s):\n{lines}",
            hint="fix the keys above; 'prodml init' writes a commented example",
            problems=problems,
        ) from None
    project._root = file.parent.resolve()
    _check_references(project, file)
    return project


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed at the model that ``loc`` points into (for did-you-mean hints)."""
    model: Any = Project
    keyed = False  # the previous field was a mapping: this part is one of its keys, not a field
    for part in loc:
        if isinstance(part, int) or model is None or keyed:
            keyed = False
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            model = None
            continue
        keyed = getattr(field.annotation, "__origin__", None) is dict
        model = _inner_model(field.annotation)
    return list(model.model_fields) if model is not None and hasattr(model, "model_fields") else []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _describe(err: Any) -> tuple[str, str]:
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _fields_at(loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        fix = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
        return _key_path(loc), f"unknown key '{key}' — {fix}"
    if kind == "missing":
        return _key_path(loc), "required key is missing — add it"
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return _key_path(loc), f"{err['msg']} (got {shown})"


def _check_references(project: Project, file: Path) -> None:
    problems: list[tuple[str, str]] = []
    names = set(project.sources)

    def need_source(where: str, name: str) -> None:
        if name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=1)
            fix = f"did you mean '{close[0]}'?" if close else f"declared: {', '.join(sorted(names))}"
            problems.append((where, f"unknown source '{name}' — {fix}"))

    need_source("target.source", project.target.source)
    for table in project.contract:
        need_source(f"contract.{table}", table)
    for i, agg in enumerate(project.features.aggregates):
        need_source(f"features.aggregates[{i}].source", agg.source)
    for i, att in enumerate(project.features.attributes):
        need_source(f"features.attributes[{i}].source", att.source)
    if (project.features.aggregates or any(a.timestamp for a in project.features.attributes)) and (
        project.entity is None or project.target.timestamp is None
    ):
        problems.append(
            (
                "entity / target.timestamp",
                "time-aware features need 'entity' and 'target.timestamp' for the point-in-time join",
            )
        )
    problems += _metric_problems(project)
    if problems:
        lines = "\n".join(f"  - {loc}: {msg}" for loc, msg in problems)
        raise ConfigError(
            f"{file} has {len(problems)} problem(s):\n{lines}",
            hint="fix the keys above; sources are referred to by their name under 'sources:'",
            problems=problems,
        )


def _metric_problems(project: Project) -> list[tuple[str, str]]:
    """Metrics that do not exist or do not fit the task, and gate/tuning metrics that are not computed."""
    task = project.task
    fitting = ", ".join(n for n, tasks in METRIC_TASKS.items() if task in tasks)
    problems: list[tuple[str, str]] = []

    def check(where: str, name: str) -> bool:
        tasks = METRIC_TASKS.get(name)
        if tasks is None:
            close = difflib.get_close_matches(name, list(METRIC_TASKS), n=1)
            fix = f"did you mean '{close[0]}'?" if close else f"for {task} use one of: {fitting}"
            problems.append((where, f"'{name}' is not a metric — {fix}"))
            return False
        if task not in tasks:
            problems.append((where, f"'{name}' does not apply to task '{task}' — use one of: {fitting}"))
            return False
        return True

    for i, name in enumerate(project.metrics):
        check(f"metrics[{i}]", name)
    computed = project.computed_metrics
    gated = [("promotion.metric", project.promotion.metric)]
    if project.model.tune is not None and project.model.tune.metric is not None:
        gated.append(("model.tune.metric", project.model.tune.metric))
    for where, name in gated:
        if check(where, name) and name not in computed:
            problems.append(
                (where, f"'{name}' is not computed (metrics: {', '.join(computed)}) — add it to 'metrics'")
            )
    return problems
