"""Atomic output under a full disk and SIGKILL, and an input larger than the memory a job may use."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prodml.batch import score
from prodml.batch.commit import OutputError, Staging
from tests.batch.conftest import Trained

AT = datetime(2026, 12, 1, tzinfo=UTC)


def files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def repeated(table: pa.Table, rows: int) -> pa.Table:
    """``rows`` rows cycling through ``table``, with unique ids."""
    reps = -(-rows // table.num_rows)
    out = pa.concat_tables([table] * reps).slice(0, rows).combine_chunks()
    return out.set_column(0, "customer_id", pa.array(np.arange(rows)))


@contextlib.contextmanager
def small_disk(directory: Path) -> Iterator[bool]:
    """A 512 KiB tmpfs at ``directory`` when this process may mount one (as root); yields whether it did."""
    directory.mkdir()
    mounted = os.geteuid() == 0 and (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(directory)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], check=False)


def _patch_enospc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a small disk to fill: every output file's second write fails with ENOSPC."""
    from prodml.batch import outputs

    original = outputs._File.write
    calls = {"n": 0}

    def failing(self: outputs._File, batch: pa.RecordBatch) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, batch)

    monkeypatch.setattr(outputs._File, "write", failing)


def test_full_disk_leaves_the_previous_output_and_no_temporary_files(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmp_path / "disk"
    small = trained.write(tmp_path / "small.parquet", rows=200)
    big = tmp_path / "big.parquet"
    pq.write_table(repeated(trained.table, 60_000), big)
    kwargs = {"package": trained.package, "id_column": "customer_id", "scored_at": AT, "batch_rows": 2_000}
    with small_disk(disk) as real:
        score(str(small), str(disk / "out"), **kwargs)  # type: ignore[arg-type]
        before = files(disk / "out")
        assert "_SUCCESS" in before
        if not real:
            _patch_enospc(monkeypatch)
        with pytest.raises(OutputError) as info:
            score(str(big), str(disk / "out"), **kwargs)  # type: ignore[arg-type]
        assert "disk is full" in str(info.value) and info.value.exit_code != 0
        assert files(disk / "out") == before  # the complete previous output, marker included
        assert hidden(disk) == []  # no temporary files
        monkeypatch.undo()
        score(str(small), str(disk / "out"), **kwargs)  # type: ignore[arg-type]
        assert {k: v for k, v in files(disk / "out").items() if k != "_SUCCESS"} == {
            k: v for k, v in before.items() if k != "_SUCCESS"
        }


JOB = textwrap.dedent(
    """
    import sys
    from datetime import datetime, UTC
    from pathlib import Path
    from prodml.batch import score
    source, output, package = sys.argv[1:4]
    score(source, output, package=Path(package), id_column="customer_id", batch_rows=1_000,
          scored_at=datetime(2026, 12, 1, tzinfo=UTC), profile=False)
    """
)


def test_sigkill_leaves_the_previous_output_and_a_rerun_repairs(trained: Trained, tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(repeated(trained.table, 200_000), source, row_group_size=5_000)
    out = tmp_path / "out"
    small = trained.write(tmp_path / "small.parquet", rows=100)
    score(str(small), str(out), package=trained.package, id_column="customer_id", scored_at=AT, profile=False)
    before = files(out)
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(source), str(out), str(trained.package)])
    try:
        deadline = time.monotonic() + 120
        while not any(tmp_path.glob(".out.prodml-tmp-*/part-00000.parquet")):
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "the job wrote nothing in 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert files(out) == before  # the previous output, complete, marker included
    assert [n.split(".prodml-")[1].split("-")[0] for n in hidden(tmp_path)] == [
        "tmp"
    ]  # hidden, skipped by readers
    rerun = subprocess.run(
        [sys.executable, "-c", JOB, str(source), str(out), str(trained.package)], timeout=300, check=False
    )
    assert rerun.returncode == 0
    assert hidden(tmp_path) == []  # the rerun removed what the killed job left
    score(
        str(source),
        str(tmp_path / "fresh"),
        package=trained.package,
        id_column="customer_id",
        batch_rows=1_000,
        scored_at=AT,
        profile=False,
    )
    strip = lambda d: {k: v for k, v in files(d).items() if k != "_SUCCESS"}  # noqa: E731
    assert strip(out) == strip(tmp_path / "fresh")


def test_a_commit_killed_between_its_renames_is_repaired(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"previous")
    (out / "_SUCCESS").write_text("{}")
    dead = tmp_path / ".out.prodml-old-999999999-0badc0de"
    out.rename(dead)  # as a job killed after moving the old output aside, before the new one moved in
    (tmp_path / ".out.prodml-tmp-999999999-0badc0de").mkdir()
    Staging(str(out)).recover()
    assert (out / "part-00000.parquet").read_bytes() == b"previous"
    assert hidden(tmp_path) == []


CAPPED = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    import pyarrow.parquet as pq
    from prodml.batch import score

    def vmdata():  # private writable memory: what RLIMIT_DATA caps (not reserved, PROT_NONE arenas)
        for line in open("/proc/self/status"):
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024

    mode, source, small, output, package, headroom = sys.argv[1:7]
    import pyarrow as pa
    # Arrow's I/O pool starts up to 8 threads as it needs them, each reserving an 8 MiB stack: fixed at 2
    # here, the warm job below starts them, and the cap then measures data, not late thread reservations
    pa.set_io_thread_count(2)
    # pay the imports, ONNX Runtime and the thread pool on a tiny job before the cap
    score(small, output + "-warm", package=Path(package), id_column="customer_id", profile=False)
    cap = vmdata() + int(headroom) * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    if mode == "whole":
        try:
            pq.read_table(source)
        except MemoryError:
            sys.exit(3)
        sys.exit(0)
    result = score(source, output, package=Path(package), id_column="customer_id", batch_rows=4096)
    print(result.rows)
    """
)


def test_an_input_larger_than_the_memory_cap_is_processed(trained: Trained, tmp_path: Path) -> None:
    # RLIMIT_DATA caps private writable memory: glibc's lazily reserved arenas (64 MiB of PROT_NONE
    # address space each) do not count against it, as they did against RLIMIT_AS
    rows, headroom_mib = 450_000, 250
    table = repeated(trained.table, rows)
    # 1,000-byte ids: the table takes ~515 MiB in memory, ~2x what the job may add to its data (the
    # margin holds under load: a starved consumer lets the reader threads run further ahead)
    ids = pc.binary_join_element_wise(pc.cast(table.column(0), pa.string()), pa.scalar("x" * 990), "")
    table = table.set_column(0, "customer_id", ids)
    assert table.nbytes > 1.8 * headroom_mib * 2**20
    source = tmp_path / "big.parquet"
    pq.write_table(table, source, row_group_size=8_192)
    del table, ids
    small = trained.write(tmp_path / "small.parquet", rows=50)
    # the system allocator, with buffers over 1 MiB always mapped and unmapped: glibc's sliding mmap
    # threshold would otherwise keep freed 8 MiB batches in fragmented heaps, and the cap would measure that
    env = {
        **os.environ,
        "ARROW_DEFAULT_MEMORY_POOL": "system",
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    }
    args = [str(source), str(small), str(tmp_path / "out"), str(trained.package), str(headroom_mib)]
    whole = subprocess.run([sys.executable, "-c", CAPPED, "whole", *args], env=env, timeout=300, check=False)
    assert whole.returncode == 3  # the control: reading the input whole does not fit under the cap
    job = subprocess.run(
        [sys.executable, "-c", CAPPED, "job", *args],
        env=env,
        timeout=600,
        capture_output=True,
        text=True,
        check=False,
    )
    assert job.returncode == 0, job.stderr[-2000:]
    assert int(job.stdout.split()[-1]) == rows
    assert pq.ParquetFile(tmp_path / "out" / "part-00000.parquet").metadata.num_rows == rows
