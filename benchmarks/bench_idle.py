"""Serving latency and the machine's idle policy: prodml serve and the bare HTTP echoes with guest halt
polling off and on, alternated round by round in one run.

    python benchmarks/bench_idle.py [--poll-us 200] [--duration 4] [--rounds 3]   # as root

On a KVM guest with Linux's ``haltpoll`` cpuidle driver, a vCPU with nothing to run polls for
``guest_halt_poll_ns`` before it halts and exits to the host (the driver's default is 200 µs). The VM
this project is developed on boots with it at 0: a vCPU that goes idle halts at once, the host runs other
work on its core meanwhile, and the next event pays for the exit, the re-entry and caches that the other
work has used — on the server's vCPU and on the load generator's alike. ``bench_serve.py`` prints the
setting it ran under; this benchmark measures what it costs.

Every round runs both settings, 0 and ``--poll-us``, one after the other, in alternating order (writing
the ``haltpoll`` module parameter: root only), and the machine's own value is restored at the end, so
both settings see the same drift of the host. For each setting: one connection sending back to back
(p50, and as a ratio to the in-process ONNX Runtime call timed in the same round) for prodml and the two
echoes, and prodml at half its best 1-row rate on paced connections, as in ``bench_serve.py`` (p50,
p99). Medians over the rounds, and over the quiet ones (host steal under ``--quiet-steal``) where there
are any; and each setting against the other within a round (median and range of the ratios).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_serve import (
    CONCURRENCY,
    ECHO_COMMAND,
    HALT_POLL,
    PRODML_ENV,
    ROOT,
    InProcessFloor,
    build_model,
    free_port,
    idle_policy,
    median_run,
    paced_connections,
    paced_script,
    prodml_command,
    quiet,
    server,
    stolen,
    write_scripts,
    wrk,
)

PRODML, ECHO, POLL_ECHO = "prodml serve", "bare HTTP echo (floor)", "the same echo, busy polling 200 µs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll-us", type=float, default=200.0, help="guest halt polling when on, in µs")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running both settings")
    parser.add_argument("--quiet-steal", type=float, default=1.0, help="a quiet run's most host steal, %%")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 1
    if not HALT_POLL.exists():
        print(
            f"no guest halt polling to switch here ({idle_policy()}): this is for KVM guests", file=sys.stderr
        )
        return 1
    if not os.access(HALT_POLL, os.W_OK):
        print(f"{HALT_POLL} is not writable: run as root", file=sys.stderr)
        return 1
    own = HALT_POLL.read_text().strip()
    settings = (0, round(args.poll_us * 1000))
    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    print(
        f"this machine: {os.cpu_count()} vCPUs, {idle_policy()}\ntraining the benchmark model...", flush=True
    )
    project_dir, package, _, bodies, (model, X) = build_model(work)
    in_process = InProcessFloor(model, X)
    closed = write_scripts(work, {"1 row": bodies["1 row"]})["1 row"]
    paced = paced_script(work)
    ports = {name: free_port() for name in (PRODML, ECHO, POLL_ECHO)}
    commands: dict[str, tuple[list[str], dict[str, str], Path | None]] = {
        PRODML: (prodml_command(project_dir, package, ports[PRODML]), PRODML_ENV, None),
        ECHO: (ECHO_COMMAND, {}, ROOT),
        POLL_ECHO: ([*ECHO_COMMAND, "--busy-poll-us", "200"], {}, ROOT),
    }
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {ns: {} for ns in settings}
    floors: dict[int, list[float]] = {ns: [] for ns in settings}
    try:
        with contextlib.ExitStack() as running:
            for name, (cmd, env, cwd) in commands.items():
                port = ports[name]
                running.enter_context(
                    server([c.replace("{port}", str(port)) for c in cmd], port, bodies["1 row"], env, cwd)
                )
            for port in ports.values():
                wrk(port, closed, 1, 1.0)  # warm-up
            # half of prodml's best 1-row rate under the machine's own setting (as bench_serve.py: the best
            # of its concurrencies): one offered load for both settings
            rates = {c: wrk(ports[PRODML], closed, c, 2.0) for c in CONCURRENCY}
            best = max(r["rps"] for r in rates.values())
            conns = paced_connections(ports[PRODML], paced, best / 2, rates[1]["p50_ms"], args.quiet_steal)
            print(f"half of prodml's best 1-row rate: {best / 2:,.0f} req/s, {conns} paced connections")
            for r in range(args.rounds):
                for ns in settings if r % 2 == 0 else settings[::-1]:  # neither always goes first
                    HALT_POLL.write_text(str(ns))
                    got = runs[ns]
                    floors[ns].append(in_process.measure("1 row"))
                    for name, port in ports.items():
                        got.setdefault(name, []).append(stolen(wrk, port, closed, 1, args.duration))
                    got.setdefault("paced", []).append(
                        stolen(wrk, ports[PRODML], paced, conns, args.duration)
                    )
                    print(
                        f"  round {r + 1}, halt polling {ns / 1000:g} µs: "
                        + ", ".join(f"{n} {got[n][-1]['p50_ms'] * 1000:.0f} µs" for n in ports)
                        + f" at one connection; paced p99 {got['paced'][-1]['p99_ms']:.2f} ms",
                        flush=True,
                    )
    finally:
        HALT_POLL.write_text(own)

    def summary(items: list[dict[str, Any]]) -> tuple[dict[str, float], str]:
        calm = quiet(items, args.quiet_steal)
        return median_run(calm or items), f"{len(calm)} of {len(items)}" if calm else f"none of {len(items)}"

    print(
        f"\nmedians over the quiet rounds (steal under {args.quiet_steal:g}%), or over all where none was\n"
    )
    print("| guest halt polling | server | one connection: p50 µs | x in-process call | req/s | quiet runs |")
    print("|---:|---|---:|---:|---:|---|")
    p50s: dict[tuple[int, str], float] = {}
    for ns in settings:
        floor = statistics.median(floors[ns])
        for name in ports:
            m, calm = summary(runs[ns][name])
            p50s[(ns, name)] = m["p50_ms"]
            print(
                f"| {ns / 1000:g} µs | {name} | {m['p50_ms'] * 1000:.0f} | {m['p50_ms'] / floor:.1f}x | "
                f"{m['rps']:,.0f} | {calm} |"
            )
    print(f"\nprodml at half its best 1-row rate ({conns} paced connections):\n")
    print("| guest halt polling | req/s | p50 ms | p99 ms | quiet runs |\n|---:|---:|---:|---:|---|")
    p99s = {}
    for ns in settings:
        m, calm = summary(runs[ns]["paced"])
        p99s[ns] = m["p99_ms"]
        print(f"| {ns / 1000:g} µs | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {calm} |")
    off, on = settings
    prodml_p50, echo_p50 = (p50s[(on, n)] / p50s[(off, n)] for n in (PRODML, ECHO))
    print(
        f"\nhalt polling on vs off: prodml's one-connection p50 {prodml_p50:.2f}x, the echo's "
        f"{echo_p50:.2f}x, prodml's paced p99 {p99s[on] / p99s[off]:.2f}x; the machine's own setting "
        f"({own} ns) is restored"
    )

    def paired(name: str, key: str) -> str:
        """on / off within each round: the two ran minutes apart at most, so steal that comes and goes
        over the run touches both sides of a ratio alike more often than the medians above."""
        ratios = sorted(a[key] / b[key] for a, b in zip(runs[on][name], runs[off][name], strict=True))
        return f"median {statistics.median(ratios):.2f}x ({ratios[0]:.2f}–{ratios[-1]:.2f}x)"

    print(
        f"round by round, on / off: prodml's one-connection p50 {paired(PRODML, 'p50_ms')}, the echo's "
        f"{paired(ECHO, 'p50_ms')}, prodml's paced p99 {paired('paced', 'p99_ms')}"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
