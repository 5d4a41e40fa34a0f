"""PostgreSQL tables and queries as Arrow tables; the only module that imports psycopg."""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

from prodml.core.errors import (
    ConfigError,
    DataError,
    MissingDependency,
    SourceNotFound,
    Unavailable,
)
from prodml.core.project import PostgresSpec

__all__ = ["read_postgres", "resolve_dsn"]

CONNECT_TIMEOUT_S = 5


def resolve_dsn(spec: PostgresSpec, *, name: str = "") -> str:
    """The DSN of ``spec``: given inline, or read from the variable named by ``dsn_env``."""
    if spec.dsn is not None:
        return spec.dsn
    assert spec.dsn_env is not None
    dsn = os.environ.get(spec.dsn_env)
    if not dsn:
        raise ConfigError(
            f"source '{name}': the environment variable {spec.dsn_env} is not set",
            hint=f"export {spec.dsn_env}=postgresql://user@host:5432/db",
        )
    return dsn


def read_postgres(spec: PostgresSpec, *, name: str = "") -> pa.Table:
    """Run the table scan or query of ``spec`` and return the rows as an Arrow table."""
    try:
        import psycopg
        from psycopg import sql as pgsql
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingDependency("psycopg", "postgres") from exc

    dsn = resolve_dsn(spec, name=name)
    query: Any
    if spec.table is not None:
        query = pgsql.SQL("SELECT * FROM {}").format(pgsql.Identifier(*spec.table.split(".")))
    else:
        query = spec.query
    try:
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn, conn.cursor() as cur:
            cur.execute(query)
            columns = [d.name for d in cur.description or ()]
            rows = cur.fetchall()
    except psycopg.OperationalError as exc:
        raise Unavailable(
            f"source '{name}': cannot reach PostgreSQL: {str(exc).strip().splitlines()[0]}",
            hint="check the DSN, that the server is up, and the network",
        ) from exc
    except psycopg.errors.UndefinedTable as exc:
        raise SourceNotFound(
            f"source '{name}': {str(exc).strip().splitlines()[0]}",
            hint="check the table name (schema.table) and the search_path",
        ) from exc
    except psycopg.Error as exc:
        raise DataError(
            f"source '{name}': the PostgreSQL query failed: {str(exc).strip().splitlines()[0]}",
            hint="run the query in psql to fix it",
        ) from exc
    arrays = [pa.array([row[i] for row in rows]) for i in range(len(columns))]
    return pa.table(arrays, names=columns) if columns else pa.table({})
