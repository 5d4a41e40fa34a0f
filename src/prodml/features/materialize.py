"""``prodml features materialize``: the latest feature values per entity, written to the online store.

The values come from the same definitions and the same SQL that build training frames
(:func:`~prodml.features.offline.build_training_frame`): a spine of one row per entity at the
materialisation time T takes the place of the label table, so every window aggregate and as-of
attribute in the store is exactly what the offline path computes as of T (a test pins the two).

- **T** (``as_of``) defaults to the latest timestamp in the feature sources: the time the data is
  current to. Entities are those with a row at or before T in any feature source.
- **Incremental** (``since``): only the entities whose values can differ from those as of ``since`` are
  recomputed and written — an event in ``[since - longest window, T]`` (entering or leaving a window) or
  an attribute row in ``(since, T]``; an attribute table without a timestamp, or a ``days_since_last``
  feature (it grows with the clock), makes every entity a candidate. ``since="last"`` takes the T of
  the previous run from the store's record.
- **Idempotent**: rows are replaced whole (a value that became null is null in the store), so running
  the same materialisation twice leaves the same store, and an incremental run after a full one leaves
  what a full run at the new T would.
- **Recorded**: each run's T, since, entity count, features and the definitions hash are written to the
  store's metadata and appended to ``.prodml/online/materializations.jsonl``.

Example:
    >>> result = materialize(Catalog(project), store)  # doctest: +SKIP
    >>> result.written, result.as_of  # doctest: +SKIP
    (400, '2025-07-19T23:41:07')
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prodml.core.errors import ConfigError, FeatureError
from prodml.core.project import Project
from prodml.data.online_store import OnlineStore
from prodml.data.sources import Catalog
from prodml.features.offline import build_training_frame

__all__ = ["MaterializeResult", "features_at", "latest_features", "latest_time", "materialize"]

ROW = "__spine_row"


@dataclass
class MaterializeResult:
    """What one materialisation computed and wrote."""

    as_of: str
    since: str | None
    entities: int
    written: int
    features: list[str]
    definitions: str
    seconds: float = 0.0
    full: bool = True
    inputs: dict[str, str] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return asdict(self)


def _time_sources(project: Project) -> list[tuple[str, str | None]]:
    """(source, timestamp column or None) of every feature block, label-table attributes excepted."""
    out: list[tuple[str, str | None]] = [(a.source, a.timestamp) for a in project.features.aggregates]
    out += [(a.source, a.timestamp) for a in project.features.attributes if a.source != project.target.source]
    return out


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value
    raise FeatureError(f"expected a timestamp, got {value!r}")


def latest_time(catalog: Catalog) -> datetime:
    """The latest timestamp in the project's timed feature sources (the time the data is current to).

    Raises:
        FeatureError: no feature source has a timestamp, so T must be given.
    """
    latest: datetime | None = None
    for source, ts in _time_sources(catalog.project):
        if ts is None:
            continue
        value = pc.max(catalog.read(source).column(ts)).as_py()
        if value is not None and (latest is None or _as_datetime(value) > latest):
            latest = _as_datetime(value)
    if latest is None:
        raise FeatureError(
            "no feature source has a timestamp to take the materialisation time from",
            hint="pass --as-of 2025-07-01T00:00:00",
        )
    return latest


def _scalar(t: datetime, type_: pa.DataType) -> pa.Scalar:
    if pa.types.is_timestamp(type_) and type_.tz is not None and t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return pa.scalar(t, type=type_ if pa.types.is_timestamp(type_) else pa.timestamp("us"))


def _entities(catalog: Catalog, as_of: datetime, since: datetime | None) -> pa.Array:
    """The distinct entity keys to (re)compute as of ``as_of`` (see the module docstring)."""
    project = catalog.project
    entity = project.entity or ""
    every = since is None or any(a.days_since_last for a in project.features.aggregates)
    longest = max((max(a.windows) for a in project.features.aggregates), default=0)
    pieces: list[pa.Array] = []
    blocks: list[tuple[str, str | None, bool]] = [
        (a.source, a.timestamp, True) for a in project.features.aggregates
    ]
    blocks += [
        (a.source, a.timestamp, False)
        for a in project.features.attributes
        if a.source != project.target.source
    ]
    for source, ts, is_events in blocks:
        table = catalog.read(source)
        if entity not in table.column_names:
            raise FeatureError(
                f"source '{source}' has no entity column '{entity}'", hint="fix 'entity' in prodml.yaml"
            )
        if ts is None:
            pieces.append(table.column(entity).combine_chunks())
            continue
        stamps = table.column(ts)
        keep = pc.less_equal(stamps, _scalar(as_of, stamps.type))
        if not every:
            assert since is not None
            start = since - timedelta(days=longest) if is_events else since
            bound = _scalar(start, stamps.type)
            keep = pc.and_(keep, pc.greater_equal(stamps, bound) if is_events else pc.greater(stamps, bound))
        pieces.append(table.filter(pc.fill_null(keep, False)).column(entity).combine_chunks())
    if not pieces:
        raise FeatureError(
            "there are no entity features to materialise (no aggregates, no attributes of entity tables)",
            hint="declare features.aggregates or features.attributes in prodml.yaml",
        )
    types = {p.type for p in pieces}
    target_type = pieces[0].type if len(types) == 1 else pa.string()
    keys = pa.concat_arrays([p.cast(target_type) for p in pieces]).drop_null()
    return pc.unique(keys).sort() if len(keys) else keys


def features_at(catalog: Catalog, entities: pa.Array, times: pa.Array) -> tuple[pa.Table, dict[str, Any]]:
    """Every entity feature for each (entity, time) pair, computed on the offline path.

    Args:
        catalog: the project's sources.
        entities: (n,) entity keys.
        times: (n,) timestamps (the time each row's features are as of).

    Returns:
        n rows in input order (the entity column and one column per online feature), and the lineage
        of the computation (input digests, the definitions hash).
    """
    project = catalog.project
    target = project.target
    entity, ts = project.entity or "", target.timestamp or ""
    if not entity or not ts:
        raise ConfigError(
            "online features need 'entity' and 'target.timestamp' in prodml.yaml",
            hint="declare the entity key and the label timestamp",
        )
    labels = catalog.read(target.source)
    ts_type = labels.schema.field(ts).type if ts in labels.column_names else pa.timestamp("us")
    key_type = labels.schema.field(entity).type if entity in labels.column_names else entities.type
    if entities.type != key_type:  # keys as the request log keeps them (text) against integer ids
        try:
            entities = entities.cast(key_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise FeatureError(
                f"entity keys of type {entities.type} do not read as the sources' {key_type}: {exc}",
                hint=f"send '{entity}' values of the type the sources hold",
            ) from exc
    n = len(entities)
    # the label column carries each row's position: the frame comes back sorted by time and entity
    spine_cols: dict[str, pa.Array] = {
        entity: entities,
        ts: times.cast(ts_type),
        target.column: pa.array(np.arange(n, dtype=np.int64)),
    }
    request_time: list[str] = []
    for att in project.features.attributes:
        if att.source == target.source:  # request-time features: the spine carries them as nulls
            for c in att.columns:
                if c in labels.column_names and c not in spine_cols:
                    spine_cols[c] = pa.nulls(n, labels.schema.field(c).type)
                    request_time.append(c)
    frame = build_training_frame(Catalog(project, overrides={target.source: pa.table(spine_cols)}))
    keep = [entity, *(f for f in frame.features if f not in request_time and f not in (entity, ts))]
    position = frame.table.column(target.column).to_numpy()
    inverse = np.empty(n, dtype=np.int64)
    inverse[position] = np.arange(n)
    table = frame.table.select(keep)
    return table.take(pa.array(inverse)), frame.lineage


def materialize(
    catalog: Catalog,
    store: OnlineStore,
    *,
    as_of: datetime | None = None,
    since: datetime | str | None = None,
) -> MaterializeResult:
    """Compute the features of every (changed) entity as of ``as_of`` and write them to ``store``.

    Args:
        catalog: the project's sources.
        store: where to write.
        as_of: T; default: the latest timestamp in the feature sources.
        since: recompute only what can have changed since this time (``"last"``: the previous run's T).

    Raises:
        FeatureError: the definitions do not fit the data, or ``since`` is after T.
        StoreUnavailable: the store could not be written (rerunning is safe).
    """
    start = time.perf_counter()
    project = catalog.project
    as_of = as_of or latest_time(catalog)
    if since == "last":
        previous = store.meta().get("as_of")
        if previous is None:
            raise FeatureError(
                "--since last: the store records no earlier materialisation",
                hint="run a full 'prodml features materialize' first",
            )
        since = datetime.fromisoformat(previous)
    if isinstance(since, str):
        since = datetime.fromisoformat(since)
    if since is not None and since > as_of:
        raise FeatureError(
            f"--since {since.isoformat()} is after the materialisation time {as_of.isoformat()}",
            hint="give an earlier --since, or a later --as-of",
        )
    entities = _entities(catalog, as_of, since)
    previous_meta = store.meta()
    written, names = 0, list(previous_meta.get("features") or [])
    lineage: dict[str, Any] = {}
    if len(entities):
        table, lineage = features_at(catalog, entities, _at(as_of, len(entities)))
        written = store.write(table, project.entity or "", as_of=_epoch_seconds(as_of))
        names = table.column_names[1:]
    result = MaterializeResult(
        as_of=as_of.isoformat(),
        since=since.isoformat() if since is not None else None,
        entities=len(entities),
        written=written,
        features=names,
        definitions=str(lineage.get("definitions", previous_meta.get("definitions", ""))),
        seconds=time.perf_counter() - start,
        full=since is None,
        inputs={k: v for k, v in lineage.get("inputs", {}).items() if k != project.target.source},
    )
    store.set_meta(result.record())
    log = project.state_dir / "online" / "materializations.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as out:
        out.write(json.dumps(result.record(), sort_keys=True) + "\n")
    return result


def _at(t: datetime, n: int) -> pa.Array:
    return pa.array(np.full(n, np.datetime64(t.replace(tzinfo=None), "us")), type=pa.timestamp("us"))


def latest_features(catalog: Catalog, as_of: datetime | None = None) -> tuple[pa.Table, datetime]:
    """Every entity's features as of ``as_of`` (default: :func:`latest_time`): what a full
    materialisation writes, one row per entity (the entity column first)."""
    as_of = as_of or latest_time(catalog)
    entities = _entities(catalog, as_of, None)
    if not len(entities):
        raise FeatureError(
            f"no entity has data at or before {as_of.isoformat()}", hint="give a later --as-of"
        )
    table, _ = features_at(catalog, entities, _at(as_of, len(entities)))
    return table, as_of


def _epoch_seconds(t: datetime) -> float:
    """Seconds since the epoch; a naive time is UTC (as the demo world's timestamps are)."""
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()
