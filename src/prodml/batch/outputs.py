"""Output files: Parquet, ORC or CSV parts, hive-partitioned (``COL=value/``) when asked.

File names are deterministic (``part-00000.parquet``, in the order rows arrive), so a rerun over the same
input and model writes the same files. Both engines end with this layout: the local engine writes it with
:class:`PartWriter`; the Spark engine's files are renamed into it by :func:`spark_layout`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.orc as paorc
import pyarrow.parquet as pq

__all__ = ["EXTENSIONS", "PartWriter", "count_rows", "partition_dir", "spark_layout"]

EXTENSIONS = {"parquet": ".parquet", "orc": ".orc", "csv": ".csv"}
MAX_ROWS_PER_FILE = 5_000_000
DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # a null value's directory (Spark's name)
# the characters Spark escapes in partition directory names (ExternalCatalogUtils.escapePathName)
_ESCAPED = frozenset("\"#%'*/:=?\\\x7f{[]^") | frozenset(map(chr, range(32)))


def partition_dir(column: str, value: Any) -> str:
    """``column=value`` as Spark names the directory (special characters as ``%XX``)."""
    if value is None:
        return f"{column}={DEFAULT_PARTITION}"
    text = str(value)
    return f"{column}=" + "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in text)


class _File:
    """One open output file of a format."""

    def __init__(self, fs: pafs.FileSystem, path: str, fmt: str, schema: pa.Schema) -> None:
        self.stream = fs.open_output_stream(path)
        self.rows = 0
        self.writer: Any
        try:
            if fmt == "parquet":
                self.writer = pq.ParquetWriter(self.stream, schema)
            elif fmt == "orc":
                self.writer = paorc.ORCWriter(self.stream, compression="snappy")
            else:
                self.writer = pacsv.CSVWriter(self.stream, schema)
        except BaseException:
            self.stream.close()
            raise
        self.orc = fmt == "orc"

    def write(self, batch: pa.RecordBatch) -> None:
        if self.orc:
            self.writer.write(pa.Table.from_batches([batch]))
        else:
            self.writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        try:
            self.writer.close()
        finally:
            self.stream.close()


class PartWriter:
    """Writes record batches as part files under ``root`` on ``fs``.

    Args:
        partition_by: a column whose values become ``COL=value/`` directories (and leave the files).
        max_rows_per_file: a file that reaches this many rows is closed and the next part begun.
    """

    def __init__(
        self,
        fs: pafs.FileSystem,
        root: str,
        fmt: str,
        schema: pa.Schema,
        *,
        partition_by: str | None = None,
        max_rows_per_file: int = MAX_ROWS_PER_FILE,
    ) -> None:
        self.fs, self.root, self.fmt = fs, root.rstrip("/"), fmt
        self.partition_by = partition_by
        self.schema = schema if partition_by is None else schema.remove(schema.get_field_index(partition_by))
        self.max_rows = max_rows_per_file
        self._open: dict[str, _File] = {}
        self._parts: dict[str, int] = {}
        self.files: dict[str, int] = {}  # relative path → rows, once closed

    def write(self, batch: pa.RecordBatch) -> None:
        if self.partition_by is None:
            self._write("", batch)
            return
        column = batch.column(self.partition_by)
        rest = batch.drop_columns([self.partition_by])
        for value in pc.unique(column).to_pylist():
            mask = pc.is_null(column) if value is None else pc.fill_null(pc.equal(column, value), False)
            self._write(partition_dir(self.partition_by, value), rest.filter(mask))

    def _write(self, directory: str, batch: pa.RecordBatch) -> None:
        file = self._open.get(directory)
        if file is None:
            part = self._parts.get(directory, 0)
            self._parts[directory] = part + 1
            relative = f"{directory}/" if directory else ""
            relative += f"part-{part:05d}{EXTENSIONS[self.fmt]}"
            self.fs.create_dir(f"{self.root}/{directory}".rstrip("/"), recursive=True)
            file = self._open[directory] = _File(self.fs, f"{self.root}/{relative}", self.fmt, self.schema)
            file.relative = relative  # type: ignore[attr-defined]
        file.write(batch)
        if file.rows >= self.max_rows:
            self._close(directory)

    def _close(self, directory: str) -> None:
        file = self._open.pop(directory)
        file.close()
        self.files[file.relative] = file.rows  # type: ignore[attr-defined]

    def close(self) -> dict[str, int]:
        """Close every file; return relative path → rows."""
        for directory in list(self._open):
            self._close(directory)
        return dict(sorted(self.files.items()))

    def abort(self) -> None:
        """Close what is open, ignoring errors (the directory is about to be removed)."""
        for file in self._open.values():
            with contextlib.suppress(Exception):
                file.close()
        self._open.clear()


def count_rows(fs: pafs.FileSystem, files: Iterable[str], fmt: str) -> int:
    """Rows in ``files`` (metadata for Parquet and ORC)."""
    listed = list(files)
    if not listed:
        return 0
    file_format: Any = ds.CsvFileFormat() if fmt == "csv" else fmt
    return int(ds.dataset(listed, filesystem=fs, format=file_format).count_rows())


def spark_layout(fs: pafs.FileSystem, written: str, target: str, fmt: str) -> dict[str, int]:
    """Move the data files Spark wrote under ``written`` to ``target`` with this module's names
    (``[COL=value/]part-NNNNN.ext``, numbered in Spark's part order); drop its checksums and marker.

    Returns relative path → rows.
    """
    infos = fs.get_file_info(pafs.FileSelector(written, recursive=True, allow_not_found=True))
    data = sorted(
        (i for i in infos if i.is_file and not i.base_name.startswith((".", "_"))), key=lambda i: i.path
    )
    files: dict[str, int] = {}
    parts: dict[str, int] = {}
    fs.create_dir(target, recursive=True)
    for info in data:
        relative = info.path[len(written.rstrip("/")) + 1 :]
        directory = relative.rpartition("/")[0]
        part = parts.get(directory, 0)
        parts[directory] = part + 1
        name = (f"{directory}/" if directory else "") + f"part-{part:05d}{EXTENSIONS[fmt]}"
        if directory:
            fs.create_dir(f"{target}/{directory}", recursive=True)
        fs.move(info.path, f"{target}/{name}")
        files[name] = count_rows(fs, [f"{target}/{name}"], fmt)
    with contextlib.suppress(OSError):
        fs.delete_dir(written)
    return dict(sorted(files.items()))
