"""Data drift on the same frames with prodml, Evidently's DataDriftPreset, a plain per-column scipy loop
and a naive vectorised numpy version.

    python benchmarks/bench_drift.py [--rows 100000 1000000] [--columns 100] [--evidently-max-rows 100000]

Reference and current frames of float32 columns (as the model sees them); in the current frame columns
0–4 are shifted by half a standard deviation and columns 5–9 scaled by 2; the other 90 are unshifted.

- prodml: the window binned against the stored reference profile (``profile.json``, built once at
  training time, timed apart) and every statistic computed for all columns at once (PSI, KS, Wasserstein,
  Jensen–Shannon; ``prodml.monitor.drift.bin_frame`` + ``prodml.export.drift.compare``);
- scipy loop: per column ``ks_2samp`` (exact KS and its p-value), ``wasserstein_distance`` and a PSI
  over the reference's deciles, on the raw reference and current samples;
- naive numpy: the same three statistics vectorised over columns by sorting reference and current
  together (argsort along the rows, in chunks of 10 columns to bound memory);
- Evidently 0.7.23 ``DataDriftPreset`` (Wasserstein distance normed by the reference std above 1,000
  rows), only up to ``--evidently-max-rows`` (it took over 600 s at 1M × 100 here).

Prints seconds per tool and size, speed-ups, the largest difference between each tool's statistic and
scipy's (or Evidently's), and how many unshifted columns each flags (prodml: its effect-size thresholds;
scipy: KS p < 0.05; Evidently: its own verdict).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

SHIFTED = 10


def make_frames(rows: int, columns: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(columns)]
    scale = rng.uniform(0.5, 5, columns)
    ref = {n: (rng.normal(0, scale[i], rows)).astype(np.float32) for i, n in enumerate(names)}
    cur = {}
    for i, n in enumerate(names):
        x = rng.normal(0, scale[i], rows)
        if i < 5:
            x = x + 0.5 * scale[i]
        elif i < SHIFTED:
            x = x * 2
        cur[n] = x.astype(np.float32)
    return pd.DataFrame(ref), pd.DataFrame(cur)


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def run_prodml(profile: dict[str, Any], cur: pd.DataFrame) -> dict[str, np.ndarray]:
    from prodml.export.drift import Reference, compare
    from prodml.monitor.drift import bin_frame

    ref = Reference.from_profile(profile, prediction=False)
    scores = compare(ref, bin_frame(ref, cur))
    by = {s.feature: s for s in scores}
    names = list(cur.columns)
    return {
        "ks": np.array([by[n].ks for n in names]),
        "wasserstein": np.array([by[n].wasserstein for n in names]),
        "psi": np.array([by[n].psi for n in names]),
        "flagged": np.array([by[n].status == "drift" for n in names]),
    }


def run_scipy(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, np.ndarray]:
    from scipy import stats

    ks, p, w, psi = [], [], [], []
    for n in ref.columns:
        a, b = ref[n].to_numpy(np.float64), cur[n].to_numpy(np.float64)
        r = stats.ks_2samp(a, b)
        ks.append(r.statistic)
        p.append(r.pvalue)
        w.append(stats.wasserstein_distance(a, b))
        edges = np.quantile(a, np.linspace(0, 1, 11)[1:-1])
        pa = np.bincount(np.searchsorted(edges, a, side="right"), minlength=10) / a.size
        pb = np.bincount(np.searchsorted(edges, b, side="right"), minlength=10) / b.size
        pa, pb = np.maximum(pa, 1e-4), np.maximum(pb, 1e-4)
        psi.append(float(((pb - pa) * np.log(pb / pa)).sum()))
    return {
        "ks": np.array(ks),
        "wasserstein": np.array(w),
        "psi": np.array(psi),
        "flagged": np.array(p) < 0.05,
    }


def run_naive(ref: pd.DataFrame, cur: pd.DataFrame, chunk: int = 10) -> dict[str, np.ndarray]:
    """KS, Wasserstein and PSI for all columns with array operations only (no per-column statistics)."""
    r_all, c_all = ref.to_numpy(np.float64), cur.to_numpy(np.float64)
    n, m = len(r_all), len(c_all)
    out: dict[str, list[np.ndarray]] = {"ks": [], "wasserstein": [], "psi": []}
    for start in range(0, r_all.shape[1], chunk):
        r, c = r_all[:, start : start + chunk], c_all[:, start : start + chunk]
        z = np.concatenate([r, c], axis=0)
        order = np.argsort(z, axis=0, kind="stable")
        values = np.take_along_axis(z, order, axis=0)
        from_ref = (order < n).astype(np.float64)
        cdf_r = np.cumsum(from_ref, axis=0) / n
        cdf_c = np.cumsum(1 - from_ref, axis=0) / m
        gap = np.abs(cdf_r - cdf_c)
        out["ks"].append(gap.max(axis=0))
        out["wasserstein"].append((gap[:-1] * np.diff(values, axis=0)).sum(axis=0))
        edges = np.quantile(r, np.linspace(0, 1, 11)[1:-1], axis=0)  # (9, chunk)
        pr = np.stack([((r[:, None, :] >= edges[None, k : k + 1, :]).sum(axis=0)) for k in range(9)]).squeeze(
            1
        )
        pc = np.stack([((c[:, None, :] >= edges[None, k : k + 1, :]).sum(axis=0)) for k in range(9)]).squeeze(
            1
        )
        share_r = -np.diff(np.vstack([np.full(r.shape[1], n), pr, np.zeros(r.shape[1])]), axis=0) / n
        share_c = -np.diff(np.vstack([np.full(c.shape[1], m), pc, np.zeros(c.shape[1])]), axis=0) / m
        share_r, share_c = np.maximum(share_r, 1e-4), np.maximum(share_c, 1e-4)
        out["psi"].append(((share_c - share_r) * np.log(share_c / share_r)).sum(axis=0))
    return {k: np.concatenate(v) for k, v in out.items()}


def run_evidently(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, np.ndarray]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    values: dict[str, float] = {}
    methods = set()
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            values[config["column"]] = float(metric["value"])
            methods.add(config["method"])
            threshold = float(config["threshold"])
    score = np.array([values[n] for n in ref.columns])
    print(f"  evidently methods: {sorted(methods)}", file=sys.stderr)
    return {"wasserstein_normed": score, "flagged": score >= threshold}


def sketch_cost(numeric: int = 30, strings: int = 3, requests: int = 50_000) -> None:
    """What the live sketch adds per request on a server: ``observe`` for each request plus its share of
    ``fold`` (binning) and of scoring each window, for 1-row and 100-row requests."""
    from prodml.export.drift import LiveSketch
    from prodml.export.profile import reference_profile

    rng = np.random.default_rng(0)
    cats = np.array(["basic", "pro", "enterprise"], dtype=object)
    train = pd.DataFrame({f"n{i}": rng.normal(size=20_000) for i in range(numeric)})
    for j in range(strings):
        train[f"s{j}"] = cats[rng.integers(0, 3, 20_000)]
    layout = ([f"n{i}" for i in range(numeric)], [f"s{j}" for j in range(strings)])
    profile = reference_profile(train, layout[1], rng.random(20_000))
    print(f"\nlive sketch, {numeric} numeric + {strings} string inputs, windows of 10,000 rows:")
    for rows, cap in ((1, None), (100, None), (100, 10)):
        sketch = LiveSketch(profile, layout, window_rows=10_000, rows_per_request=cap)
        numbers = rng.normal(size=(rows, numeric)).astype(np.float32)
        texts = cats[rng.integers(0, 3, (rows, strings))]
        p = rng.random(rows).astype(np.float32)
        outputs = np.stack([1 - p, p], axis=1)
        n = requests if rows == 1 else requests // 20
        t0 = time.perf_counter()
        for i in range(n):
            sketch.observe(numbers, texts, outputs)
            if i % 1000 == 999:  # the server's 0.1 s housekeeping tick, at ~10k requests/s
                sketch.fold()
        sketch.fold()
        per = (time.perf_counter() - t0) / n * 1e6
        print(f"  {rows:>3}-row requests: {per:.1f} µs per request ({n:,}, {sketch.windows} windows scored)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--columns", type=int, default=100)
    parser.add_argument("--evidently-max-rows", type=int, default=100_000)
    parser.add_argument("--scipy-max-rows", type=int, default=1_000_000)
    parser.add_argument("--sketch-only", action="store_true", help="Only the live sketch's cost per request.")
    args = parser.parse_args()
    if args.sketch_only:
        sketch_cost()
        return

    from prodml.export.profile import reference_profile

    t0 = time.perf_counter()
    import evidently  # noqa: F401  (its import, ~20 s here, is not counted in its time)

    print(f"import evidently: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows_out = []
    for rows in args.rows:
        ref, cur = make_frames(rows, args.columns)
        unshifted = np.arange(args.columns) >= SHIFTED
        t_profile, profile = timed(reference_profile, ref, [], None)
        run_prodml(profile, cur.head(100))  # imports (scipy.special) once, as a warm server or CLI has
        t_prodml, prodml = timed(run_prodml, profile, cur)
        t_naive, naive = timed(run_naive, ref, cur)
        print(
            f"{rows:,} rows: profile {t_profile:.2f} s, prodml {t_prodml:.2f} s, naive {t_naive:.2f} s",
            file=sys.stderr,
        )
        result: dict[str, Any] = {
            "rows": rows,
            "profile_s": t_profile,
            "prodml_s": t_prodml,
            "naive_s": t_naive,
            "prodml_flagged_unshifted": int(prodml["flagged"][unshifted].sum()),
            "prodml_detected_shifted": int(prodml["flagged"][~unshifted].sum()),
        }
        if rows <= args.scipy_max_rows:
            t_scipy, scipy = timed(run_scipy, ref, cur)
            print(f"  scipy loop {t_scipy:.2f} s", file=sys.stderr)
            result |= {
                "scipy_s": t_scipy,
                "scipy_flagged_unshifted": int(scipy["flagged"][unshifted].sum()),
                "max_ks_diff_prodml_vs_scipy": float(np.abs(prodml["ks"] - scipy["ks"]).max()),
                "max_w_diff_prodml_vs_scipy": float(
                    np.abs(prodml["wasserstein"] - scipy["wasserstein"]).max()
                ),
                "max_psi_diff_prodml_vs_scipy": float(np.abs(prodml["psi"] - scipy["psi"]).max()),
                "max_ks_diff_naive_vs_scipy": float(np.abs(naive["ks"] - scipy["ks"]).max()),
            }
        if rows <= args.evidently_max_rows:
            t_ev, ev = timed(run_evidently, ref, cur)
            print(f"  evidently {t_ev:.2f} s", file=sys.stderr)
            std = ref.to_numpy(np.float64).std(axis=0)
            result |= {
                "evidently_s": t_ev,
                "evidently_flagged_unshifted": int(ev["flagged"][unshifted].sum()),
                "max_wnorm_diff_prodml_vs_evidently": float(
                    np.abs(prodml["wasserstein"] / std - ev["wasserstein_normed"]).max()
                ),
            }
        rows_out.append(result)
        del ref, cur
        gc.collect()

    print(f"\n{args.columns} columns ({SHIFTED} shifted); seconds, and speed-up of prodml over each:\n")
    tools = (("naive_s", "naive numpy"), ("scipy_s", "scipy loop"), ("evidently_s", "Evidently"))
    print(
        "| rows | prodml | "
        + " | ".join(t for _, t in tools)
        + " | "
        + " | ".join(f"× {t}" for _, t in tools)
        + " | profile build |"
    )
    print("|---:" * (3 + 2 * len(tools)) + "|")
    for r in rows_out:
        seconds = [f"{r[k]:.2f}" if k in r else "–" for k, _ in tools]
        ratios = [f"{r[k] / r['prodml_s']:.0f}×" if k in r else "–" for k, _ in tools]
        print(
            f"| {r['rows']:,} | {r['prodml_s']:.2f} | "
            + " | ".join([*seconds, *ratios])
            + f" | {r['profile_s']:.2f} |"
        )
    print("\nlargest differences and unshifted columns flagged (of", args.columns - SHIFTED, "):")
    for r in rows_out:
        extras = {
            k: v
            for k, v in r.items()
            if k.startswith(
                ("max_", "prodml_flagged", "prodml_detected", "scipy_flagged", "evidently_flagged")
            )
        }
        print(
            f"  {r['rows']:,} rows: "
            + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in extras.items())
        )

    sketch_cost()


if __name__ == "__main__":
    main()
