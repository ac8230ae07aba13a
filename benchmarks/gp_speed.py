"""Cost of one ``GPSearcher.suggest(1)`` in the 1-D AutoLRS setting: fast path vs general path.

Each run minimises a noisy 1-D objective ``(log10(lr) - c)^2 + N(0, sigma^2)`` over
``lr`` in ``[1e-5, 1]`` (log scale), observing with ``noise=sigma`` and alternating
``suggest(1)`` and ``observe`` as AutoLRS does; every ``suggest(1)`` is timed. For each
``n`` the table gives the median and p90 over all runs of the calls made with ``n - 4 .. n``
observations (GP steps only, not the Sobol start): a window rather than exactly ``n`` because
the fast path refits the hyperparameters every few observations, and a window weighs those
refits in as a run does. ``fast_1d=False`` (the general path: full fit and multi-start
L-BFGS on every call) and ``fast_1d=True`` run interleaved, run by run, on the same seeds
and objectives, in this process with torch's thread settings as they are. Wall time is what
is reported; on a shared machine compare runs at similar load (printed), and see the process
CPU times in the JSON.

Usage: ``python benchmarks/gp_speed.py [--repeats 8] [--sigma 0.1] [--paths general,fast]
[--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import time
import warnings

import torch

from autolr.searchers import GPSearcher, Param

NS = (5, 10, 20, 30)
WINDOW = 5
PARAMS = [Param("lr", 1e-5, 1.0, log=True)]


Call = tuple[int, float, float]  # observations before the call, wall and CPU seconds


def run(fast_1d: bool, seed: int, c: float, sigma: float, n_max: int) -> list[Call]:
    """The GP-step ``suggest(1)`` calls of one run."""
    rng = random.Random(seed)
    s = GPSearcher(PARAMS, seed=seed, fast_1d=fast_1d)
    out = []
    for _ in range(n_max + 1):
        n_obs = len(s)
        t0, c0 = time.perf_counter(), time.process_time()
        (cfg,) = s.suggest()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if n_obs >= s.n_initial:
            out.append((n_obs, dt, dc))
        value = (math.log10(cfg["lr"]) - c) ** 2 + rng.gauss(0.0, sigma)
        s.observe(cfg, value, noise=sigma)
    return out


def _p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def summarise(calls: list[Call]) -> dict[str, dict[str, float | int]]:
    """Median / p90 in milliseconds per ``n`` of :data:`NS` (window ``n - WINDOW < k <= n``)."""
    out = {}
    for n in NS:
        window = [(1e3 * dt, 1e3 * dc) for k, dt, dc in calls if n - WINDOW < k <= n]
        if not window:
            continue
        wall, cpu = [w for w, _ in window], [c for _, c in window]
        out[str(n)] = {
            "median_ms": statistics.median(wall),
            "p90_ms": _p90(wall),
            "cpu_median_ms": statistics.median(cpu),
            "cpu_p90_ms": _p90(cpu),
            "calls": len(window),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=8, help="runs per path (seeds 0..repeats-1)")
    ap.add_argument("--sigma", type=float, default=0.1, help="observation noise std")
    ap.add_argument(
        "--paths", default="general,fast", help="comma-separated subset of general,fast"
    )
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    paths = [p for p in ("general", "fast") if p in args.paths.split(",")]
    if not paths:
        ap.error(f"--paths must name general and/or fast, got {args.paths!r}")
    calls: dict[str, list[Call]] = {p: [] for p in paths}
    warnings.simplefilter("ignore")  # botorch's fitting chatter is not what is measured
    load_before = os.getloadavg()[0]
    for seed in range(args.repeats):
        c = -4.5 + 4.0 * ((seed * 0.618034) % 1.0)  # optimum spread over the range
        for name in paths:
            calls[name] += run(name == "fast", seed, c, args.sigma, max(NS))
    stats = {name: summarise(v) for name, v in calls.items()}
    meta = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "repeats": args.repeats,
        "sigma": args.sigma,
        "window": WINDOW,
    }
    print(
        f"GPSearcher.suggest(1), 1-D: wall ms per call ({args.repeats} runs per path, calls "
        f"with n-{WINDOW - 1}..n observations; torch threads {meta['torch_threads']}, "
        f"{meta['cpus']} CPUs, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f})\n"
    )
    cols = [f"{p} {q}" for p in paths for q in ("median", "p90")]
    speedup = len(paths) == 2
    print("| n obs | " + " | ".join(cols) + (" | speed-up (median) |" if speedup else " |"))
    print("|---" * (1 + len(cols) + speedup) + "|")
    for n in map(str, NS):
        rows = [stats[p].get(n) for p in paths]
        if any(r is None for r in rows):
            continue
        cells = [f"{r[q]:.1f}" for r in rows for q in ("median_ms", "p90_ms")]
        if speedup:
            cells.append(f"{rows[0]['median_ms'] / rows[1]['median_ms']:.0f}x")
        print(f"| {n} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": stats}, fh, indent=2)


if __name__ == "__main__":
    main()
