"""Atomic, idempotent output: write under a hidden temporary directory beside the output, commit by rename.

Local (and any POSIX) output, the life of one job:

1. :meth:`Staging.begin` first repairs what a killed job left: a previous output moved aside but not yet
   replaced is moved back, and temporary directories of dead jobs are removed;
2. the engine writes files under ``.<name>.prodml-tmp-<pid>-<token>/`` beside the output;
3. :meth:`Staging.commit` writes ``_SUCCESS`` (counts, input fingerprint, model version, timings) into it,
   moves the previous output aside, renames the new one into place and deletes the old one.

So a reader of ``DIR`` sees the complete previous output or the complete new one; a job that fails or
runs out of disk leaves the previous output untouched and no temporary file; a SIGKILLed job leaves the
previous output and a hidden temporary directory, which the next job removes (readers skip hidden files).

S3 has no rename: the new objects are copied into place after the old ones are deleted, and ``_SUCCESS``
is written last, so the marker is the commit (as with Hadoop's and Spark's committers): a reader must
check for it. A crash during those copies leaves no ``_SUCCESS`` — the output reads as absent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from prodml.core.errors import ConfigError, DataError

__all__ = ["PROFILE", "REJECTS", "SUCCESS", "OutputError", "Staging", "filesystem"]

logger = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
REJECTS = "_rejects"
PROFILE = "_profile.json"
_TMP = ".prodml-tmp-"
_OLD = ".prodml-old-"


class OutputError(DataError):
    """The output could not be written (a full disk, no permission, an unreachable bucket)."""


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``path`` and the path on it (``bucket/key`` for ``s3://``; absolute locally)."""
    if path.startswith("s3://"):
        try:
            fs, bare = pafs.FileSystem.from_uri(path.rstrip("/"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot open {path}: {exc}", hint="check the bucket and AWS settings") from exc
        return fs, bare
    return pafs.LocalFileSystem(), str(Path(path).resolve())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Staging:
    """The temporary directory of one job writing ``output`` (a local path or ``s3://bucket/prefix``)."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.fs, self.final = filesystem(output)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        parent, sep, name = self.final.rstrip("/").rpartition("/")
        if not sep or not name or (not self.local and not parent):
            raise ConfigError(
                f"output {output!r} must be a directory below a parent", hint="e.g. --output out/scores"
            )
        self.parent, self.name = parent or "/", name
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.tmp = f"{self.parent}/.{name}{_TMP}{token}"
        self._old = f"{self.parent}/.{name}{_OLD}{token}"

    def path(self, relative: str) -> str:
        """A path under the temporary directory."""
        return f"{self.tmp}/{relative}"

    def begin(self) -> None:
        """Repair what a killed job left, then create the temporary directory."""
        info = self.fs.get_file_info(self.final)
        if info.type == pafs.FileType.File:
            raise ConfigError(f"output {self.output} is a file", hint="give a directory path for --output")
        self.recover()
        try:
            self.fs.create_dir(self.tmp, recursive=True)
        except OSError as exc:
            raise OutputError(f"cannot create the output beside {self.output}: {exc}") from exc

    def recover(self) -> None:
        """Move back a previous output a killed commit left aside; remove dead jobs' temporary files."""
        prefix = f".{self.name}"
        try:
            siblings = self.fs.get_file_info(pafs.FileSelector(self.parent, allow_not_found=True))
        except OSError:
            return
        final_exists = self.fs.get_file_info(self.final).type != pafs.FileType.NotFound
        for info in sorted(siblings, key=lambda i: i.mtime_ns or 0, reverse=True):
            base = info.base_name
            if not base.startswith(prefix) or info.path == self.tmp:
                continue
            rest = base[len(prefix) :]
            if not rest.startswith((_TMP, _OLD)):
                continue
            parts = rest.split("-")  # ".prodml", "tmp", pid, token
            pid = parts[2] if len(parts) >= 4 else ""
            if self.local and pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue  # another job on this machine is still writing
            if rest.startswith(_OLD) and not final_exists:
                logger.warning("restoring the previous output %s left aside by a killed job", self.output)
                self.fs.move(info.path, self.final)
                final_exists = True
                continue
            logger.info("removing %s, left by a job that did not finish", info.path)
            with contextlib.suppress(OSError):
                self.fs.delete_dir(info.path)

    def commit(self, success: dict[str, Any]) -> None:
        """Write ``_SUCCESS`` and put the temporary directory in place of the output."""
        try:
            with self.fs.open_output_stream(self.path(SUCCESS)) as out:
                out.write((json.dumps(success, indent=2, default=str) + "\n").encode())
            if self.local:
                self._rename()
            else:
                self._copy()
        except OSError as exc:
            self.abort()
            raise OutputError(
                f"committing the output {self.output} failed: {exc}",
                hint="the previous output (if any) is unchanged; free space or fix access and rerun",
            ) from exc

    def _rename(self) -> None:
        if self.fs.get_file_info(self.final).type != pafs.FileType.NotFound:
            Path(self.final).rename(self._old)
        Path(self.tmp).rename(self.final)
        with contextlib.suppress(OSError):
            self.fs.delete_dir(self._old)

    def _copy(self) -> None:
        final = self.final.rstrip("/")
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(f"{final}/{SUCCESS}")  # from here on readers see no complete output
        self.fs.delete_dir_contents(final, missing_dir_ok=True)
        files = self.fs.get_file_info(pafs.FileSelector(self.tmp, recursive=True))
        for info in sorted((i for i in files if i.is_file), key=lambda i: i.path.endswith(SUCCESS)):
            self.fs.move(info.path, f"{final}/{info.path[len(self.tmp) + 1 :]}")  # _SUCCESS last
        with contextlib.suppress(OSError):
            self.fs.delete_dir(self.tmp)

    def abort(self) -> None:
        """Remove the temporary directory (the previous output is untouched)."""
        try:
            self.fs.delete_dir(self.tmp)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("could not remove %s: %s", self.tmp, exc)
