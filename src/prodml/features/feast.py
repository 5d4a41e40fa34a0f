"""``prodml features export-feast DIR``: an equivalent Feast repository for teams that run Feast.

The repository holds:

- ``feature_store.yaml``: the project, a local provider, a file registry, the online store (SQLite in
  the repository, or the Redis of ``features.online.redis_url``) and the file offline store;
- ``features.py``: one ``Entity`` (the project's entity key, with its value type), one ``FileSource``
  and one ``FeatureView`` per definition block (each aggregate block, each entity-table attribute
  block), typed field by field;
- ``data/features.parquet``: the source — every entity's features as prodml computes them as of T
  (``event_timestamp``), from the same definitions and SQL as training frames and the online store.

Feast cannot compute prodml's window aggregates itself (its batch sources hold precomputed values), so
the source holds the values and Feast serves them: after ``feast apply`` and ``feast materialize``,
``get_online_features`` answers what prodml's own store answers (a test checks it value by value).
Feast is not a dependency of prodml: this module writes text and Parquet only.

Example:
    >>> export = export_feast(Catalog(project), Path("feast_repo"))  # doctest: +SKIP
    >>> export.views  # doctest: +SKIP
    {'sessions': [...], 'payments': [...], 'tickets': [...], 'customers': ['plan', 'country', ...]}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from prodml.core.errors import ConfigError
from prodml.core.files import atomic_path, atomic_write_text
from prodml.data.sources import Catalog
from prodml.features.materialize import latest_features
from prodml.features.offline import feature_names

__all__ = ["FeastExport", "export_feast", "feast_redis_connection"]

SOURCE = "data/features.parquet"
EVENT_TS = "event_timestamp"


@dataclass
class FeastExport:
    """What :func:`export_feast` wrote."""

    directory: Path
    project: str
    entity: str
    views: dict[str, list[str]] = field(default_factory=dict)
    as_of: str = ""
    rows: int = 0


def feast_redis_connection(url: str) -> str:
    """Feast's ``connection_string`` for a ``redis://[:password@]host:port/db`` URL."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"features.online.redis_url {url!r} is not a redis:// URL", hint="redis://host:6379/0"
        )
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"]
    db = parsed.path.lstrip("/")
    if db:
        parts.append(f"db={int(db)}")
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def _feast_type(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "Bool"
    if pa.types.is_integer(t):
        return "Int64"
    if pa.types.is_floating(t):
        return "Float64"
    return "String"


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


def export_feast(
    catalog: Catalog,
    directory: Path,
    *,
    as_of: datetime | None = None,
    redis_url: str | None = None,
    ttl_s: int | None = None,
) -> FeastExport:
    """Write a Feast repository equivalent to the project's entity features into ``directory``.

    Args:
        catalog: the project's sources.
        directory: the repository to write (created; files prodml writes are replaced).
        as_of: T of the exported values; default: the latest timestamp in the feature sources.
        redis_url: Feast's online store is this Redis; default: SQLite inside the repository.
        ttl_s: the feature views' TTL; default: none (Feast's 0, values live forever).

    Raises:
        FeatureError: the definitions do not fit the data.
    """
    project = catalog.project
    entity = project.entity or ""
    table, as_of = latest_features(catalog, as_of)
    # dates travel as the ISO text the model takes (the online store stores them so too)
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type):
            text = [
                None if v is None else v.strftime("%Y-%m-%dT%H:%M:%S") for v in table.column(i).to_pylist()
            ]
            table = table.set_column(i, f.name, pa.array(text, pa.string()))
    stamp = pa.array([as_of.replace(tzinfo=None)] * table.num_rows, pa.timestamp("us"))
    source = table.append_column(EVENT_TS, stamp)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    with atomic_path(directory / SOURCE) as tmp:
        pq.write_table(source, tmp)

    views: dict[str, list[str]] = {}
    columns = set(table.column_names[1:])
    for agg in project.features.aggregates:
        views[_ident(agg.prefix or agg.source)] = [n for n in feature_names(agg) if n in columns]
    for att in project.features.attributes:
        if att.source == project.target.source:
            continue  # request-time features: not in a store
        taken = {n for names in views.values() for n in names}
        chosen = att.columns if att.columns != ["*"] else sorted(columns - taken)
        views.setdefault(_ident(att.source), []).extend(c for c in chosen if c in columns and c not in taken)

    name = _ident(project.name).lower()
    if redis_url:
        online = f"online_store:\n  type: redis\n  connection_string: {feast_redis_connection(redis_url)!r}\n"
    else:
        online = "online_store:\n  type: sqlite\n  path: data/online_store.db\n"
    atomic_write_text(
        directory / "feature_store.yaml",
        f"# Written by 'prodml features export-feast' from {project.name}'s prodml.yaml; values as of "
        f"{as_of.isoformat()}.\n"
        f"project: {name}\nregistry: data/registry.db\nprovider: local\n{online}"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\nauth:\n  type: no_auth\n",
    )
    key_type = table.schema.field(entity).type
    value_type = "INT64" if pa.types.is_integer(key_type) else "STRING"
    lines = [
        f'"""Feast definitions equivalent to the entity features of prodml project {project.name!r}.',
        "",
        "Written by 'prodml features export-feast'; the source holds prodml's values as of "
        f'{as_of.isoformat()}."""',
        "",
        "from datetime import timedelta",
        "from pathlib import Path",
        "",
        "from feast import Entity, FeatureView, Field, FileSource, ValueType",
        "from feast.types import Bool, Float64, Int64, String",
        "",
        "HERE = Path(__file__).resolve().parent",
        "",
        f"{_ident(entity)} = Entity(",
        f"    name={entity!r}, join_keys=[{entity!r}], value_type=ValueType.{value_type}",
        ")",
        "",
        "source = FileSource(",
        f"    name={name + '_source'!r},",
        f"    path=str(HERE / {SOURCE!r}),",
        f"    timestamp_field={EVENT_TS!r},",
        ")",
    ]
    for view, names in views.items():
        if not names:
            continue
        fields = "".join(
            f"\n        Field(name={n!r}, dtype={_feast_type(table.schema.field(n).type)})," for n in names
        )
        lines += [
            "",
            f"{view}_view = FeatureView(",
            f"    name={view!r},",
            f"    entities=[{_ident(entity)}],",
            f"    ttl=timedelta(seconds={ttl_s or 0}),",
            f"    schema=[{fields}\n    ],",
            "    online=True,",
            "    source=source,",
            ")",
        ]
    atomic_write_text(directory / "features.py", "\n".join(lines) + "\n")
    return FeastExport(
        directory,
        name,
        entity,
        {v: n for v, n in views.items() if n},
        as_of.isoformat(),
        table.num_rows,
    )
