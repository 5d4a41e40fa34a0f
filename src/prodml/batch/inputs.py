"""The job's input: files, a directory, a glob or ``s3://…``, streamed as Arrow record batches.

The files are listed once (:func:`prodml.data.sources.list_files`); their names, sizes and modification
times make the input's fingerprint, recorded in ``_SUCCESS``. Batches are read with a small read-ahead
(one file, one batch ahead), so memory holds a few batches, never the input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from prodml.core.errors import ConfigError, DataError, SourceNotFound
from prodml.data.sources import infer_format, list_files

__all__ = ["FORMATS", "Input", "open_input"]

FORMATS = ("parquet", "orc", "csv")


@dataclass
class Input:
    """A listed input. ``files`` are paths on ``fs`` (``bucket/key`` on S3)."""

    path: str
    fs: pafs.FileSystem
    files: list[str]
    format: str
    dataset: ds.Dataset

    @property
    def schema(self) -> pa.Schema:
        return self.dataset.schema

    @property
    def uris(self) -> list[str]:
        """The files as URIs another reader (Spark) can open."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            return list(self.files)
        return [f"s3://{f}" for f in self.files]

    def fingerprint(self) -> str:
        """sha256 of the format and each file's path, size and modification time."""
        infos = self.fs.get_file_info(self.files)
        parts = [[i.path, i.size, i.mtime_ns] for i in infos]
        return hashlib.sha256(json.dumps([self.format, parts]).encode()).hexdigest()

    def count_rows(self) -> int | None:
        """The row count from file metadata (Parquet, ORC); None for CSV, which would need a full read."""
        if self.format == "csv":
            return None
        return int(self.dataset.count_rows())

    def batches(self, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The ``columns`` of every row, in file order, in batches of at most ``batch_rows`` rows."""
        try:
            scanned = self.dataset.to_batches(
                columns=list(columns), batch_size=batch_rows, batch_readahead=1, fragment_readahead=1
            )
            for batch in scanned:
                if batch.num_rows:
                    yield batch
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(
                f"cannot read {self.path} as {self.format}: {str(exc).splitlines()[0]}",
                hint=f"check that every file is valid {self.format} with one schema",
            ) from exc


def open_input(path: str, fmt: str | None = None, *, strings: Sequence[str] = ()) -> Input:
    """List ``path`` and open it as one dataset.

    ``strings``: columns read as text whatever they look like (CSV only: the model's string inputs, so a
    category such as ``"10"`` stays a string).

    Raises:
        SourceNotFound: nothing matches ``path``.
        ConfigError: the format cannot be told from the path.
        DataError: the files cannot be opened in that format.
    """
    fs, files = list_files(path)
    if not files:
        raise SourceNotFound(f"no input file matches {path}", hint="check the path, glob or s3:// URI")
    fmt = fmt or infer_format(path) or infer_format(files[0])
    if fmt not in FORMATS:
        raise ConfigError(f"cannot tell the format of {path}", hint="pass --format parquet, orc or csv")
    file_format: Any = fmt
    if fmt == "csv":
        file_format = ds.CsvFileFormat(
            convert_options=pacsv.ConvertOptions(column_types={s: pa.string() for s in strings})
        )
    try:
        dataset = ds.dataset(files, filesystem=fs, format=file_format)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DataError(
            f"cannot read {path} as {fmt}: {str(exc).splitlines()[0]}",
            hint=f"check that every file is valid {fmt}" + (" with one schema" if len(files) > 1 else ""),
        ) from exc
    return Input(path, fs, files, fmt, dataset)
