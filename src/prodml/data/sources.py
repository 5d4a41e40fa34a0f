"""Data sources: files and globs (Parquet, ORC, CSV; local or ``s3://``), DuckDB SQL, PostgreSQL.

A :class:`Catalog` turns the ``sources:`` of a project into Arrow tables and one DuckDB connection in
which every source is queryable by its name, so SQL sources can join and window over the others.

Example:
    >>> catalog = Catalog(load_project("prodml.yaml"))  # doctest: +SKIP
    >>> catalog.query("SELECT plan, count(*) FROM customers GROUP BY plan")  # doctest: +SKIP
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from prodml.core.errors import ConfigError, DataError, SourceNotFound
from prodml.core.project import Project, Source

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Catalog", "infer_format", "list_files", "read_files"]

logger = logging.getLogger(__name__)

_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".orc": "orc",
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "csv",
}


def infer_format(path: str) -> str:
    """The file format named by a path's extension (``parquet``, ``orc`` or ``csv``)."""
    name = path.lower().rstrip("/")
    for ext, fmt in sorted(_EXTENSIONS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(ext):
            return fmt
    return "parquet" if name.endswith(("*", "/")) else ""


def _s3_filesystem() -> pafs.S3FileSystem:
    # AWS_ENDPOINT_URL (or the older S3-specific variable) points at MinIO, SeaweedFS or moto.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {"connect_timeout": 5, "request_timeout": 30}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "http")
    if region := os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"):
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def list_files(path: str) -> tuple[pafs.FileSystem, list[str]]:
    """Expand a file, directory or glob (local or ``s3://bucket/key*``) to a sorted file list."""
    if path.startswith("s3://"):
        fs: pafs.FileSystem = _s3_filesystem()
        bare = path.removeprefix("s3://")
        try:
            if any(c in bare for c in "*?["):
                base = bare[: min(bare.index(c) for c in "*?[" if c in bare)].rsplit("/", 1)[0]
                infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
                files = [i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, bare)]
            else:
                info = fs.get_file_info(bare)
                if info.type == pafs.FileType.Directory:
                    infos = fs.get_file_info(pafs.FileSelector(bare, recursive=True))
                    files = [i.path for i in infos if i.is_file]
                else:
                    files = [bare] if info.type == pafs.FileType.File else []
        except OSError as exc:
            raise DataError(
                f"could not list {path}: {exc}",
                hint="check the bucket name, AWS credentials and AWS_ENDPOINT_URL",
            ) from exc
        return fs, sorted(files)
    local = pafs.LocalFileSystem()
    p = Path(path)
    if p.is_dir():
        found = [str(f) for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith((".", "_"))]
    else:
        found = sorted(glob.glob(path, recursive=True))
    return local, found


def read_files(path: str, fmt: str | None = None, *, name: str = "") -> pa.Table:
    """Read a file, directory or glob into one Arrow table.

    Raises:
        SourceNotFound: nothing matches ``path``.
        DataError: the files cannot be read in that format, or their schemas differ.
    """
    label = f"source '{name}': " if name else ""
    fs, files = list_files(path)
    if not files:
        raise SourceNotFound(
            f"{label}no file matches {path}",
            hint="check the path (relative paths start at the directory of prodml.yaml)",
        )
    fmt = fmt or infer_format(path) or infer_format(files[0])
    if fmt not in ("parquet", "orc", "csv"):
        raise ConfigError(
            f"{label}cannot tell the format of {path}",
            hint="add 'format: parquet' (or orc, csv) to the source",
        )
    try:
        fmt_obj: Any = ds.CsvFileFormat() if fmt == "csv" else fmt
        return ds.dataset(files, filesystem=fs, format=fmt_obj).to_table()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        first = str(exc).splitlines()[0]
        raise DataError(
            f"{label}cannot read {path} as {fmt}: {first}",
            hint=f"check that every file is valid {fmt}"
            + (" with one schema" if len(files) > 1 else "")
            + ", or set the source's 'format'",
        ) from exc


class Catalog:
    """The project's sources, read on first use, queryable by name in one DuckDB connection.

    Args:
        project: the loaded project.
        overrides: tables to use instead of reading some sources (tests, in-memory frames).
    """

    def __init__(self, project: Project, overrides: dict[str, pa.Table] | None = None) -> None:
        self.project = project
        self._tables: dict[str, pa.Table] = dict(overrides or {})
        self._con: duckdb.DuckDBPyConnection | None = None
        self._registered: set[str] = set()
        self._reading: list[str] = []

    @property
    def names(self) -> list[str]:
        return list(self.project.sources)

    def source(self, name: str) -> Source:
        try:
            return self.project.sources[name]
        except KeyError:
            raise ConfigError(
                f"unknown source '{name}'",
                hint=f"declared sources: {', '.join(self.project.sources) or '(none)'}",
            ) from None

    def read(self, name: str) -> pa.Table:
        """The whole source ``name`` as an Arrow table (read once, then cached)."""
        if name in self._tables:
            return self._tables[name]
        src = self.source(name)
        if src.kind == "file":
            assert src.path is not None
            table = read_files(self.project.resolve(src.path), src.format, name=name)
        elif src.kind == "postgres":
            from prodml.data.postgres import read_postgres

            assert src.postgres is not None
            table = read_postgres(src.postgres, name=name)
        else:
            if name in self._reading:
                cycle = " -> ".join([*self._reading[self._reading.index(name) :], name])
                raise ConfigError(
                    f"SQL sources refer to each other in a cycle: {cycle}",
                    hint="break the cycle: one of them must read from a file or PostgreSQL source",
                )
            self._reading.append(name)
            try:
                table = self._run_sql_source(name)
            finally:
                self._reading.pop()
        self._tables[name] = table
        return table

    def connection(self, names: Iterable[str] | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection in which ``names`` (default: all sources) are registered as views."""
        if self._con is None:
            self._con = duckdb.connect()
        for name in self.names if names is None else names:
            self._register(name)
        return self._con

    def query(self, sql: str, *, label: str = "query", exclude: Iterable[str] = ()) -> pa.Table:
        """Run DuckDB SQL over the sources and return an Arrow table.

        Sources named in the SQL are read and registered first, except those in ``exclude``.
        """
        skip = set(exclude)
        con = self.connection([n for n in _referenced(sql, self.names) if n not in skip])
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise DataError(
                f"{label}: the SQL failed: {str(exc).splitlines()[0]}",
                hint="fix the SQL; tables are the source names: " + ", ".join(self.names),
            ) from exc

    def _register(self, name: str) -> None:
        if name in self._registered:
            return
        assert self._con is not None
        self._con.register(name, self.read(name))
        self._registered.add(name)

    def _run_sql_source(self, name: str) -> pa.Table:
        sql = self.source(name).sql
        assert sql is not None
        # The source's own name may appear in its SQL (as an alias); it is not a dependency.
        return self.query(sql, label=f"source '{name}'", exclude=[name])


def _referenced(sql: str, names: Iterable[str]) -> list[str]:
    """Source names that appear as words in ``sql`` (registering extra ones is harmless)."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql))
    return [n for n in names if n in words]
