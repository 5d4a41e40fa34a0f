"""The online feature store: the latest feature values per entity, read at inference time.

``prodml features materialize`` writes one row per entity (see :mod:`prodml.features.materialize`); the
server reads them back for requests that carry only the entity key. Two backends hold the same rows:

- :class:`SQLiteStore` (the embedded default): one table ``features`` keyed by the entity, in WAL mode
  so that readers never wait for a materialisation; a batch of keys is one ``SELECT … IN (…)``.
- :class:`RedisStore` (``features.online.redis_url``): one hash per entity, ``<prefix>:<entity>``:
  ``__at`` (the materialisation time: a missing entity and one whose features are all null differ),
  ``__numbers`` (every number of the row packed as little-endian float64, NaN for null), ``__layout``
  (the id of their order; the names are at ``<prefix>:__layout:<id>``) and one UTF-8 field per string
  feature (null: absent). Packing matters: a field per number made Redis and redis-py's parser handle
  21 values per entity instead of 3 + strings, and parsing text floats took 20x longer than one
  ``numpy.frombuffer`` per batch. A batch of keys is one pipeline
  of ``HMGET`` (one round trip); writes set a TTL when ``ttl_s`` is set. Socket timeouts bound every call
  and a circuit breaker skips Redis for a cool-down after 5 failures in a row.

Every read failure (timeout, refused connection, missing file) is a :class:`StoreUnavailable`; the
policy layer, :class:`OnlineFeatures`, turns it and missing entities into the declared behaviour —
profile defaults, or a 4xx naming the entities (:class:`MissingEntity`, :class:`FeaturesUnavailable`) —
so the server never answers 5xx because of the store. Only numpy, pyarrow and pydantic are imported
here (redis when chosen): the serving path may use this module.

Example:
    >>> store = open_store(OnlineSpec(), root=Path("."), name="churn")  # doctest: +SKIP
    >>> online = OnlineFeatures.for_model(store, schema, profile, entity="customer_id")  # doctest: +SKIP
    >>> columns, fetched = online.join({"customer_id": [17, 42]})  # doctest: +SKIP
    >>> fetched.missing  # doctest: +SKIP
    []
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from prodml.core.errors import ConfigError, FeatureError, InvalidInput, ProdmlError, Unavailable
from prodml.core.project import OnlineSpec  # the project file's features.online, re-exported here

__all__ = [
    "FeastStore",
    "FeaturesUnavailable",
    "Fetched",
    "Lookup",
    "MissingEntity",
    "OnlineFeatures",
    "OnlineSpec",
    "OnlineStore",
    "RedisStore",
    "SQLiteStore",
    "StoreUnavailable",
    "defaults_from_profile",
    "online_spec",
    "open_store",
    "opened",
]

logger = logging.getLogger(__name__)

AT = b"__at"  # the materialisation time of an entity's row: present for every stored entity
LAYOUT = b"__layout"  # Redis: the id of the numbers' order, whose names are at <prefix>:__layout:<id>
NUMBERS = b"__numbers"  # Redis: every number of the row, packed as little-endian float64


# --- settings ---------------------------------------------------------------------------------------


def online_spec(section: Any = None, environ: Mapping[str, str] | None = None) -> OnlineSpec:
    """The online-store settings: ``section`` (the project's ``features.online`` mapping or model, if
    any), overridden by ``PRODML_FEATURES__ONLINE__<KEY>`` environment variables.

    Raises:
        ConfigError: a key is unknown or a value is out of range, naming the key and the variable.
    """
    data: dict[str, Any] = {}
    if isinstance(section, BaseModel):
        data = section.model_dump(exclude_unset=True)
    elif isinstance(section, Mapping):
        data = dict(section)
    env = os.environ if environ is None else environ
    prefix = "PRODML_FEATURES__ONLINE__"
    for name, value in env.items():
        if name.startswith(prefix) and value != "":
            data[name.removeprefix(prefix).lower()] = value
    try:
        return OnlineSpec.model_validate(data)
    except ValidationError as exc:
        problems = [(f"features.online.{'.'.join(map(str, e['loc']))}", str(e["msg"])) for e in exc.errors()]
        lines = "; ".join(f"{k}: {m}" for k, m in problems)
        raise ConfigError(
            f"the online feature store settings are invalid: {lines}",
            hint="fix features.online in prodml.yaml or the PRODML_FEATURES__ONLINE__* variables; keys: "
            + ", ".join(OnlineSpec.model_fields),
            problems=problems,
        ) from None


# --- errors -----------------------------------------------------------------------------------------


class StoreUnavailable(Unavailable):
    """The online store did not answer (timeout, refused, not materialised yet)."""


class MissingEntity(ProdmlError):
    """Entities of a request are not in the online store (policy ``missing: reject``)."""

    exit_code = 6
    http_status = 404
    grpc_code = "NOT_FOUND"


class FeaturesUnavailable(ProdmlError):
    """The store is down and the policy is ``unavailable: reject``: a 4xx (424), never a 5xx."""

    exit_code = 7
    http_status = 424
    grpc_code = "UNAVAILABLE"


# --- the store --------------------------------------------------------------------------------------


@dataclass
class Lookup:
    """The stored values of a batch of entity keys, in key order.

    ``numbers`` is (keys × numeric names) float64 with NaN for null or missing; ``strings`` is
    (keys × string names) object with None; ``found[i]`` says whether key i is stored.
    """

    numbers: np.ndarray
    strings: np.ndarray
    found: np.ndarray
    number_names: list[str]
    string_names: list[str]

    def columns(self) -> dict[str, np.ndarray]:
        """Feature name → values, one per key (numbers float64, strings object)."""
        out = {n: self.numbers[:, i] for i, n in enumerate(self.number_names)}
        out |= {n: self.strings[:, i] for i, n in enumerate(self.string_names)}
        return out


class OnlineStore(Protocol):
    """What materialisation writes to and the server reads from.

    ``read`` is one round trip for a whole batch and raises only :class:`StoreUnavailable` (the store
    did not answer) or :class:`~prodml.core.errors.FeatureError` (it holds other features)."""

    def read(self, keys: Sequence[Any], numbers: Sequence[str], strings: Sequence[str]) -> Lookup: ...

    def write(self, table: pa.Table, entity: str, *, as_of: float, batch: int = 2_000) -> int: ...

    def keys(self) -> list[str]: ...

    def set_meta(self, meta: Mapping[str, Any]) -> None: ...

    def meta(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def _key(value: Any) -> str:
    """The canonical text of an entity key: 42, 42.0 and "42" are one entity."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


def _kinds(table: pa.Table, entity: str) -> tuple[list[str], list[str]]:
    numbers: list[str] = []
    strings: list[str] = []
    for f in table.schema:
        if f.name == entity:
            continue
        t = f.type
        (
            numbers
            if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
            else strings
        ).append(f.name)
    return numbers, strings


def _string_values(column: pa.ChunkedArray) -> list[str | None]:
    t = column.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        # as the model sees dates: ISO text, wall clock as stored (prodml.train.trainer.iso_dates)
        return [None if v is None else v.strftime("%Y-%m-%dT%H:%M:%S") for v in column.to_pylist()]
    return [None if v is None else str(v) for v in column.to_pylist()]


def _number_values(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


class _Breaker:
    """Open after ``threshold`` failures in a row; after ``cooldown_s`` let one call probe."""

    def __init__(self, threshold: int = 5, cooldown_s: float = 5.0) -> None:
        self.threshold, self.cooldown_s = threshold, cooldown_s
        self.failures = 0
        self.opened_at: float | None = None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at >= self.cooldown_s:
            self.opened_at = time.monotonic()  # half-open: one probe per cool-down
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            if self.opened_at is None:
                logger.warning("online store circuit opened after %d failures", self.failures)
            self.opened_at = time.monotonic()


class RedisStore:
    """Feature rows as Redis hashes, read with one pipeline of ``HMGET`` per batch.

    Args:
        url: ``redis://host:port/db``.
        namespace: the key prefix, e.g. ``prodml:churn``.
        ttl_s: key expiry set on write (None: no expiry).
        timeout_s: socket and connect timeout of every call.
    """

    def __init__(
        self, url: str, namespace: str, *, ttl_s: int | None = None, timeout_s: float = 0.05
    ) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:  # pragma: no cover - redis is part of the serve extra
            from prodml.core.errors import MissingDependency

            raise MissingDependency("redis", "serve") from exc
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.url, self.namespace, self.ttl_s = url, namespace, ttl_s
        self.client: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # redis-py retries 3 times by default: a slow store must fail fast
            health_check_interval=0,
        )
        self.breaker = _Breaker()
        self._prefix = f"{namespace}:".encode()
        self._layouts: dict[bytes, dict[str, int]] = {}

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        self.breaker.failure()
        return StoreUnavailable(
            f"the online store (Redis at {self.url.split('@')[-1]}) did not answer: {type(exc).__name__}",
            hint="check that Redis runs and is reachable, or raise features.online.timeout_ms",
        )

    def _layout(self, layout: bytes) -> dict[str, int]:
        """Numeric feature name → position in the rows' packed numbers, for one layout id."""
        positions = self._layouts.get(layout)
        if positions is None:
            raw = self.client.get(self._prefix + b"__layout:" + layout)
            if raw is None:
                raise FeatureError(
                    f"the online store (Redis, {self.namespace}) holds rows of an unknown layout",
                    hint="materialise again with 'prodml features materialize'",
                )
            positions = self._layouts[layout] = {n: i for i, n in enumerate(json.loads(raw))}
        return positions

    def read(self, keys: Sequence[Any], numbers: Sequence[str], strings: Sequence[str]) -> Lookup:
        if not self.breaker.allow():
            raise StoreUnavailable(
                "the online store (Redis) failed 5 times in a row; skipped during its cool-down",
                hint="check that Redis runs; reads resume by themselves when it answers",
            )
        fields = [AT, LAYOUT, NUMBERS, *(f.encode() for f in strings)]  # bytes are packed as they are
        prefix = self._prefix
        try:
            if len(keys) == 1:  # one command needs no pipeline object (a third of a lone lookup's cost)
                rows = [self.client.hmget(prefix + _key(keys[0]).encode(), fields)]
            else:
                pipe = self.client.pipeline(transaction=False)
                for k in keys:
                    pipe.hmget(prefix + _key(k).encode(), fields)
                rows = pipe.execute()
            layouts = {r[1] for r in rows if r[0] is not None}
            positions = {layout: self._layout(layout) for layout in layouts}
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        self.breaker.success()
        n, k = len(rows), len(numbers)
        found = np.fromiter((r[0] is not None for r in rows), dtype=bool, count=n)
        number_matrix = np.full((n, k), np.nan)
        if k and layouts:
            for layout, where in positions.items():
                lacking = [name for name in numbers if name not in where]
                if lacking:
                    raise FeatureError(
                        f"the online store (Redis, {self.namespace}) lacks features the model takes: "
                        + ", ".join(lacking[:10]),
                        hint="materialise again with the definitions the model was trained on",
                    )
                take = [where[name] for name in numbers]
                mine = [i for i, r in enumerate(rows) if r[0] is not None and r[1] == layout]
                packed = np.frombuffer(b"".join([rows[i][2] for i in mine]), "<f8").reshape(len(mine), -1)
                number_matrix[mine] = packed[:, take]
        string_matrix = np.empty((n, len(strings)), dtype=object)
        if strings:
            for i, r in enumerate(rows):
                string_matrix[i] = [None if v is None else v.decode() for v in r[3:]]
        return Lookup(number_matrix, string_matrix, found, list(numbers), list(strings))

    def write(self, table: pa.Table, entity: str, *, as_of: float, batch: int = 2_000) -> int:
        """Replace the rows of ``table``'s entities (one hash each); batches are atomic (MULTI/EXEC)."""
        numbers, strings = _kinds(table, entity)
        keys = [_key(v) for v in table.column(entity).to_pylist()]
        packed = np.column_stack([_number_values(table.column(n)) for n in numbers] or [np.empty(len(keys))])
        packed = np.ascontiguousarray(packed[:, : len(numbers)], dtype="<f8")
        texts = {s: _string_values(table.column(s)) for s in strings}
        layout = hashlib.sha256(json.dumps(numbers).encode()).hexdigest()[:16].encode()
        at = repr(float(as_of)).encode()
        try:
            self.client.set(self._prefix + b"__layout:" + layout, json.dumps(numbers))
            for start in range(0, len(keys), batch):
                pipe = self.client.pipeline(transaction=True)
                for i in range(start, min(start + batch, len(keys))):
                    mapping: dict[bytes, bytes] = {AT: at, LAYOUT: layout, NUMBERS: packed[i].tobytes()}
                    for s, text in texts.items():
                        value = text[i]
                        if value is not None:
                            mapping[s.encode()] = value.encode()
                    name = self._prefix + keys[i].encode()
                    pipe.delete(name)  # a value that became null must not survive from the last run
                    pipe.hset(name, mapping=mapping)
                    if self.ttl_s:
                        pipe.expire(name, self.ttl_s)
                pipe.execute()
        except self._errors as exc:
            raise StoreUnavailable(
                f"writing to the online store (Redis at {self.url.split('@')[-1]}) failed: {exc}",
                hint="check that Redis runs; materialisation is idempotent, so rerun it",
            ) from exc
        return len(keys)

    def keys(self) -> list[str]:
        n = len(self._prefix)
        pattern = re.sub(rb"([*?\[\]\\])", rb"\\\1", self._prefix) + b"*"  # the prefix, literally
        found = (k[n:].decode() for k in self.client.scan_iter(match=pattern, count=10_000))
        return sorted(k for k in found if not k.startswith("__"))

    def set_meta(self, meta: Mapping[str, Any]) -> None:
        self.client.set(self._prefix + b"__meta", json.dumps(meta, sort_keys=True))

    def meta(self) -> dict[str, Any]:
        try:
            raw = self.client.get(self._prefix + b"__meta")
        except self._errors as exc:
            raise StoreUnavailable(f"the online store (Redis) did not answer: {exc}") from exc
        return dict(json.loads(raw)) if raw else {}

    def close(self) -> None:
        self.client.close()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteStore:
    """Feature rows in one SQLite table; a batch of keys is one ``SELECT … WHERE entity IN (…)``.

    Args:
        path: the database file (created by the first write).
        ttl_s: rows written longer ago than this count as missing.
        timeout_s: how long a call waits for a lock.
    """

    def __init__(self, path: Path, *, ttl_s: int | None = None, timeout_s: float = 0.05) -> None:
        self.path, self.ttl_s, self.timeout_s = Path(path), ttl_s, timeout_s
        self._con: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._statements: dict[tuple[int, tuple[str, ...]], str] = {}

    def _connect(self, *, write: bool = False) -> sqlite3.Connection:
        if self._con is not None:
            return self._con
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=max(self.timeout_s, 5.0), check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
        else:
            if not self.path.is_file():
                raise StoreUnavailable(
                    f"the online store {self.path} does not exist yet",
                    hint="run 'prodml features materialize' to fill it",
                )
            con = sqlite3.connect(self.path, timeout=self.timeout_s, check_same_thread=False)
        self._con = con
        return con

    def read(self, keys: Sequence[Any], numbers: Sequence[str], strings: Sequence[str]) -> Lookup:
        names = (*numbers, *strings)
        text = [_key(k) for k in keys]
        unique = list(dict.fromkeys(text))
        sql = self._statements.get((len(unique), names))
        if sql is None:
            self._check_columns(names)
            cols = "".join(f", {_q(n)}" for n in names)
            marks = ",".join("?" * len(unique))
            sql = f"SELECT entity, __written{cols} FROM features WHERE entity IN ({marks})"
            if len(self._statements) < 256:
                self._statements[(len(unique), names)] = sql
        try:
            with self._lock:
                rows = self._connect().execute(sql, unique).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(
                f"the online store {self.path} could not be read: {exc}",
                hint="run 'prodml features materialize', or check the file's permissions",
            ) from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the online store {self.path} could not be read: {exc}") from exc
        cutoff = time.time() - self.ttl_s if self.ttl_s else -math.inf
        by_key = {r[0]: r for r in rows if r[1] >= cutoff}
        n, k = len(text), len(numbers)
        found = np.zeros(n, dtype=bool)
        number_matrix = np.full((n, k), np.nan)
        string_matrix = np.full((n, len(strings)), None, dtype=object)
        for i, key in enumerate(text):
            row = by_key.get(key)
            if row is None:
                continue
            found[i] = True
            number_matrix[i] = [np.nan if v is None else v for v in row[2 : 2 + k]]
            string_matrix[i] = row[2 + k :]
        return Lookup(number_matrix, string_matrix, found, list(numbers), list(strings))

    def _check_columns(self, names: Sequence[str]) -> None:
        # an unknown double-quoted name is a string literal to SQLite, not an error: check them first
        try:
            with self._lock:
                have = {r[1] for r in self._connect().execute("PRAGMA table_info(features)")}
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the online store {self.path} could not be read: {exc}") from exc
        if not have:
            raise StoreUnavailable(
                f"the online store {self.path} holds no features yet",
                hint="run 'prodml features materialize' to fill it",
            )
        lacking = [n for n in names if n not in have]
        if lacking:
            raise FeatureError(
                f"the online store {self.path} lacks features the model takes: {', '.join(lacking[:10])}",
                hint="materialise again with the definitions the model was trained on",
            )

    def write(self, table: pa.Table, entity: str, *, as_of: float, batch: int = 2_000) -> int:
        """Upsert the rows of ``table`` (one per entity); the table is recreated when the features
        change. One transaction: readers see the old rows or the new ones."""
        numbers, strings = _kinds(table, entity)
        wanted = [("entity", "TEXT"), ("__at", "REAL"), ("__written", "REAL")]
        wanted += [(n, "REAL") for n in numbers] + [(s, "TEXT") for s in strings]
        keys = [_key(v) for v in table.column(entity).to_pylist()]
        nums = [_number_values(table.column(n)) for n in numbers]
        texts = [_string_values(table.column(s)) for s in strings]
        written = time.time()
        with self._lock:
            con = self._connect(write=True)
            try:
                with con:
                    have = [(r[1], r[2]) for r in con.execute("PRAGMA table_info(features)")]
                    if have != wanted:
                        con.execute("DROP TABLE IF EXISTS features")
                        cols = ", ".join(f"{_q(c)} {t}" for c, t in wanted)
                        con.execute(f"CREATE TABLE features ({cols}, PRIMARY KEY (entity)) WITHOUT ROWID")
                    con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
                    marks = ",".join("?" * len(wanted))
                    sql = f"INSERT OR REPLACE INTO features VALUES ({marks})"
                    for start in range(0, len(keys), batch):
                        stop = min(start + batch, len(keys))
                        con.executemany(
                            sql,
                            (
                                (
                                    keys[i],
                                    float(as_of),
                                    written,
                                    *(None if math.isnan(c[i]) else float(c[i]) for c in nums),
                                    *(t[i] for t in texts),
                                )
                                for i in range(start, stop)
                            ),
                        )
            except sqlite3.Error as exc:
                raise StoreUnavailable(
                    f"writing the online store {self.path} failed: {exc}",
                    hint="check disk space and permissions; materialisation is idempotent, so rerun it",
                ) from exc
            self._statements.clear()
        return len(keys)

    def keys(self) -> list[str]:
        with self._lock:
            con = self._connect()
            return [r[0] for r in con.execute("SELECT entity FROM features ORDER BY entity")]

    def set_meta(self, meta: Mapping[str, Any]) -> None:
        with self._lock:
            con = self._connect(write=True)
            with con:
                con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
                con.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('meta', ?)", (json.dumps(meta, sort_keys=True),)
                )

    def meta(self) -> dict[str, Any]:
        if self._con is None and not self.path.is_file():
            return {}
        with self._lock:
            try:
                row = self._connect().execute("SELECT value FROM meta WHERE key = 'meta'").fetchone()
            except sqlite3.OperationalError:
                return {}
        return dict(json.loads(row[0])) if row else {}

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


class FeastStore:
    """A Feast online store as the source at inference, for teams that already run Feast.

    Reads go through Feast's ``get_online_features`` (one call per batch); the feature → view mapping
    comes from the repository's registry. Writing is Feast's job (``feast materialize``). Needs the
    ``feast`` extra; importing Feast takes seconds, so the server opens this once at start.

    Args:
        repo: the Feast repository (the directory holding ``feature_store.yaml``).
    """

    def __init__(self, repo: Path) -> None:
        try:
            from feast import FeatureStore
        except ImportError as exc:
            from prodml.core.errors import MissingDependency

            raise MissingDependency("feast", "feast") from exc
        self.repo = Path(repo)
        self.store: Any = FeatureStore(repo_path=str(self.repo))
        self.views: dict[str, str] = {}
        entities: set[str] = set()
        for view in self.store.list_feature_views():
            entities.update(view.join_keys)
            for f in view.features:
                self.views.setdefault(f.name, view.name)
        if len(entities) != 1:
            raise ConfigError(
                f"the Feast repository {self.repo} has {len(entities)} entity keys "
                f"({', '.join(sorted(entities))})",
                hint="prodml reads feature views keyed by the project's one entity",
            )
        self.entity = entities.pop()

    def read(self, keys: Sequence[Any], numbers: Sequence[str], strings: Sequence[str]) -> Lookup:
        names = [*numbers, *strings]
        lacking = [n for n in names if n not in self.views]
        if lacking:
            raise FeatureError(
                f"the Feast repository {self.repo} serves no feature {', '.join(lacking[:10])}",
                hint="export the repository again with 'prodml features export-feast'",
            )
        rows = [{self.entity: k.item() if isinstance(k, np.generic) else k} for k in keys]
        try:
            got = self.store.get_online_features(
                features=[f"{self.views[n]}:{n}" for n in names], entity_rows=rows
            ).to_dict()
        except Exception as exc:  # Feast raises many kinds; each one means no answer
            raise StoreUnavailable(
                f"the Feast online store did not answer: {type(exc).__name__}: {exc}"
            ) from exc
        n = len(rows)
        number_matrix = np.array(
            [[np.nan if v is None else v for v in got[c]] for c in numbers], dtype=np.float64
        )
        number_matrix = number_matrix.T if numbers else np.empty((n, 0), np.float64)
        string_matrix = np.empty((n, len(strings)), dtype=object)
        for j, c in enumerate(strings):
            string_matrix[:, j] = [None if v is None else str(v) for v in got[c]]
        # Feast answers null for every feature of an entity it lacks
        found = np.array([any(got[c][i] is not None for c in names) for i in range(n)], dtype=bool)
        return Lookup(number_matrix, string_matrix, found, list(numbers), list(strings))

    def write(self, table: pa.Table, entity: str, *, as_of: float, batch: int = 2_000) -> int:
        raise ConfigError(
            "prodml does not write to a Feast online store",
            hint="export the repository ('prodml features export-feast DIR'), then run 'feast materialize'",
        )

    def keys(self) -> list[str]:
        return []

    def set_meta(self, meta: Mapping[str, Any]) -> None:
        return None

    def meta(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        return None


def open_store(spec: OnlineSpec, *, root: Path, name: str) -> OnlineStore:
    """The store ``spec`` names: Redis when ``redis_url`` is set, else SQLite at ``path`` (relative
    paths start at the project ``root``). ``name`` (the project's) namespaces Redis keys."""
    timeout = spec.timeout_ms / 1000
    if spec.feast_repo:
        repo = Path(spec.feast_repo).expanduser()
        return FeastStore(repo if repo.is_absolute() else root / repo)
    if spec.redis_url:
        return RedisStore(spec.redis_url, f"{spec.prefix}:{name}", ttl_s=spec.ttl_s, timeout_s=timeout)
    path = Path(spec.path).expanduser()
    return SQLiteStore(path if path.is_absolute() else root / path, ttl_s=spec.ttl_s, timeout_s=timeout)


# --- the serving step -------------------------------------------------------------------------------


def defaults_from_profile(profile: Mapping[str, Any]) -> dict[str, Any]:
    """Per feature of ``profile.json``, the value served when the policy says ``defaults``: the mean of
    a number, the most frequent category of a string (None when the profile has neither)."""
    out: dict[str, Any] = {}
    for name, p in (profile.get("features") or {}).items():
        if p.get("kind") == "categorical":
            freqs = p.get("frequencies") or {}
            out[name] = max(freqs, key=freqs.__getitem__) if freqs else None
        else:
            out[name] = p.get("mean")
    return out


@dataclass
class Fetched:
    """What one :meth:`OnlineFeatures.join` did, for metrics and the request log."""

    rows: int = 0
    missing: list[str] = field(default_factory=list)
    """Entity keys the store does not hold (served with defaults under ``missing: defaults``)."""
    fallback: bool = False
    """The store did not answer and every row got the defaults."""
    seconds: float = 0.0


class OnlineFeatures:
    """The dataplane's online-feature step: entity keys in, the model's missing columns out.

    Args:
        store: the store to read.
        entity: the entity key column of requests.
        numbers: the model's numeric inputs; strings: its other inputs (``schema.json`` order).
        defaults: per feature, the value served by the ``defaults`` policies.
        missing: policy for entities the store lacks; unavailable: policy when it does not answer.
    """

    def __init__(
        self,
        store: OnlineStore,
        *,
        entity: str,
        numbers: Sequence[str],
        strings: Sequence[str],
        defaults: Mapping[str, Any] | None = None,
        missing: Literal["defaults", "reject"] = "reject",
        unavailable: Literal["defaults", "reject"] = "defaults",
    ) -> None:
        self.store, self.entity = store, entity
        self.numbers, self.strings = list(numbers), list(strings)
        self.inputs = frozenset(self.numbers) | frozenset(self.strings)
        self.defaults = dict(defaults or {})
        self.missing, self.unavailable = missing, unavailable
        self.fallbacks = 0  # requests served with defaults because the store was down

    @classmethod
    def for_model(
        cls,
        store: OnlineStore,
        schema: Mapping[str, Any],
        profile: Mapping[str, Any] | None,
        *,
        entity: str,
        spec: OnlineSpec | None = None,
    ) -> OnlineFeatures:
        """The step for a model package: its ``schema.json`` inputs and ``profile.json`` defaults."""
        spec = spec or OnlineSpec()
        inputs = schema["inputs"]
        return cls(
            store,
            entity=entity,
            numbers=[c["name"] for c in inputs if c["dtype"] == "float"],
            strings=[c["name"] for c in inputs if c["dtype"] != "float"],
            defaults=defaults_from_profile(profile or {}),
            missing=spec.missing,
            unavailable=spec.unavailable,
        )

    def wants(self, columns: Mapping[str, Any]) -> bool:
        """Whether a request needs the store: it carries the entity key and lacks a model input."""
        return self.entity in columns and not self.inputs <= columns.keys()

    def join(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> tuple[dict[str, Any], Fetched]:
        """``columns`` with the model inputs it lacks read from the store (one round trip for all its
        rows; none when it lacks none); inputs the request carries (request-time features) win. The
        entity column is dropped unless the model takes it.

        Raises:
            InvalidInput: an entity key is null or the key column is not a list.
            MissingEntity: (404) entities are not stored and the policy is ``reject``.
            FeaturesUnavailable: (424) the store did not answer and the policy is ``reject``.
        """
        start = time.perf_counter()
        keys = columns[self.entity]
        if not isinstance(keys, list | tuple | np.ndarray) or isinstance(keys, str):
            raise InvalidInput(
                f"{self.entity}: expected a list of entity keys",
                fields=[{"field": self.entity, "error": "expected a list of keys, one per row"}],
            )
        nulls = [i for i, k in enumerate(keys) if k is None or (isinstance(k, float) and math.isnan(k))]
        if nulls:
            raise InvalidInput(
                f"{self.entity}: {len(nulls)} null key(s) (rows {', '.join(map(str, nulls[:5]))})",
                fields=[{"field": self.entity, "error": "null entity key: send the key or the features"}],
            )
        numbers = [n for n in self.numbers if n not in columns]
        strings = [s for s in self.strings if s not in columns]
        n = len(keys)
        fetched = Fetched(rows=n)
        if not numbers and not strings:  # the request carries every input: only the key goes
            return {c: v for c, v in columns.items() if c != self.entity or c in self.inputs}, fetched
        try:
            lookup = self.store.read(list(keys) if isinstance(keys, np.ndarray) else keys, numbers, strings)
        except StoreUnavailable as exc:
            if self.unavailable == "reject":
                shown = ", ".join(_key(k) for k in keys[:5])
                raise FeaturesUnavailable(
                    f"features for {self.entity} {shown} are unavailable: {exc.message}",
                    hint="retry later, or send the features with the request",
                    fields=[{"field": self.entity, "error": "online store unavailable"}],
                ) from exc
            self.fallbacks += 1
            if self.fallbacks == 1 or self.fallbacks % 1000 == 0:
                logger.warning(
                    "online store unavailable (%s); serving defaults (%d)", exc.message, self.fallbacks
                )
            lookup = Lookup(
                np.full((n, len(numbers)), np.nan),
                np.full((n, len(strings)), None, dtype=object),
                np.zeros(n, dtype=bool),
                numbers,
                strings,
            )
            fetched.fallback = True
        if not lookup.found.all():
            absent = np.flatnonzero(~lookup.found)
            if not fetched.fallback:
                fetched.missing = [_key(keys[i]) for i in absent]
                if self.missing == "reject":
                    shown = ", ".join(fetched.missing[:10])
                    more = f" and {len(fetched.missing) - 10} more" if len(fetched.missing) > 10 else ""
                    raise MissingEntity(
                        f"{self.entity} {shown}{more}: not in the online store",
                        hint="materialise the store ('prodml features materialize'), or send the features",
                        fields=[
                            {"field": self.entity, "error": f"entity {k} is not in the online store"}
                            for k in fetched.missing[:20]
                        ],
                    )
            for j, name in enumerate(numbers):
                value = self.defaults.get(name)
                lookup.numbers[absent, j] = np.nan if value is None else float(value)
            for j, name in enumerate(strings):
                lookup.strings[absent, j] = self.defaults.get(name)
        out: dict[str, Any] = {c: v for c, v in columns.items() if c != self.entity or c in self.inputs}
        out |= lookup.columns()
        fetched.seconds = time.perf_counter() - start
        return out, fetched


@contextlib.contextmanager
def opened(spec: OnlineSpec, *, root: Path, name: str) -> Iterator[OnlineStore]:
    """:func:`open_store` as a context manager that closes the store."""
    store = open_store(spec, root=root, name=name)
    try:
        yield store
    finally:
        store.close()
