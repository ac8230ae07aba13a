"""Metrics, Markdown table and plots from the raw runs of one benchmark invocation.

Definitions (per task and seed, side by side in one invocation):

* **target**: the final validation loss of the best cosine grid point of that seed.
* **final val**: validation loss after the fixed step budget; for a grid, its best point.
* **compute to target**: optimizer steps until the validation loss first reaches the target,
  as a multiple of one run's budget ``B``. Validation is measured every ``B/20`` steps, only on
  the trajectory training continues from (never on an AutoLRS search candidate), so the
  crossing is found to within ``B/20`` steps. Search steps count. A grid counts all its runs:
  ``(G - 1) + s/B`` where ``s`` is the earliest crossing among its ``G`` points (so the cosine
  grid itself costs at most ``G``). "not reached" when no crossing happened in the budget.
* **wall ×**: training wall time (evaluation excluded; a grid sums its runs) divided by the
  median wall time of one cosine grid run of the same seed.
* **overhead**: time inside ``AutoLRS.step`` divided by the total training-step time.

Over seeds the tables give the median and ``[min, max]``.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

__all__ = ["crossing", "plot_task", "summarise", "to_markdown"]

BASELINE = "cosine"


def crossing(run: dict[str, Any], target: float) -> float | None:
    """First evaluated step (on the training trajectory) with ``val <= target``."""
    tol = 1e-9 * max(1.0, abs(target))
    for step, val, on_traj in run["evals"]:
        if on_traj and val <= target + tol:
            return float(step)
    return None


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _stats(values: list[float | None]) -> dict[str, Any]:
    """Median and range over seeds; ``None`` (not reached / diverged) counts as +inf."""
    n = len(values)
    ok = [v for v in values if v is not None and math.isfinite(v)]
    vals = sorted(v if v is not None and math.isfinite(v) else math.inf for v in values)
    med = statistics.median(vals) if vals else math.inf
    return {
        "median": _finite(med),
        "min": _finite(vals[0]) if vals else None,
        "max": _finite(vals[-1]) if vals else None,
        "n_ok": len(ok),
        "n": n,
        "per_seed": [_finite(v) for v in values],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-task, per-method metrics from the raw runs (see the module docstring)."""
    by: dict[str, dict[str, dict[int, list[dict[str, Any]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in runs:
        by[r["task"]][r["method"]][r["seed"]].append(r)
    out: dict[str, Any] = {}
    for task, methods in by.items():
        seeds = sorted({s for m in methods.values() for s in m})
        budget = next(iter(next(iter(methods.values())).values()))[0]["budget"]
        targets: dict[int, float | None] = {}
        base_time: dict[int, float | None] = {}
        for s in seeds:
            cos = methods.get(BASELINE, {}).get(s, [])
            finals = [r["final_val"] for r in cos if math.isfinite(r["final_val"])]
            targets[s] = min(finals) if finals else None
            times = [r["train_time"] for r in cos]
            base_time[s] = statistics.median(times) if times else None
        mres: dict[str, Any] = {}
        for mname, per_seed in methods.items():
            finals, comps, walls, overheads, best_lrs, best_runs = [], [], [], [], [], {}
            at_edge: list[bool] = []
            grid_size = 0
            for s in seeds:
                rs = per_seed.get(s, [])
                if not rs:
                    continue
                grid_size = len(rs)
                best = min(rs, key=lambda r: r["final_val"])
                best_runs[s] = best
                finals.append(best["final_val"])
                best_lrs.append(best["lr"])
                grid = [r["lr"] for r in rs if r["lr"] is not None]
                at_edge.append(len(grid) > 1 and best["lr"] in (min(grid), max(grid)))
                tgt = targets[s]
                comp = None
                if tgt is not None:
                    cs = [c for c in (crossing(r, tgt) for r in rs) if c is not None]
                    if cs:
                        comp = (len(rs) - 1) + min(cs) / budget
                comps.append(comp)
                total_t = sum(r["train_time"] for r in rs)
                walls.append(total_t / base_time[s] if base_time[s] else None)
                if any("stages" in r for r in rs):
                    overheads.append(sum(r["tuner_time"] for r in rs) / total_t)
            mres[mname] = {
                "grid_size": grid_size,
                "final_val": _stats(finals),
                "compute_to_target": _stats(comps),
                "wall_ratio": _stats(walls),
                "tuner_overhead": _stats(overheads) if overheads else None,
                "best_lr": best_lrs,
                "best_lr_at_grid_edge": at_edge,
                "stages": [
                    best_runs[s].get("stages")
                    for s in sorted(best_runs)
                    if "stages" in best_runs[s]
                ],
            }
        out[task] = {
            "budget": budget,
            "seeds": seeds,
            "target": [_finite(targets[s]) for s in seeds],
            "baseline_run_time_s": [base_time[s] for s in seeds],
            "methods": mres,
        }
    return out


# ---------------------------------------------------------------------- Markdown
def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "—" if x is None else format(x, spec)


def _cell(
    st: dict[str, Any] | None, spec: str = ".4g", *, unit: str = "", missing: str = "not reached"
) -> str:
    if st is None or st["n"] == 0:
        return "—"
    med = st["median"]
    if med is None:
        return f"{missing} ({st['n'] - st['n_ok']}/{st['n']})" if st["n_ok"] < st["n"] else "—"
    s = f"{med:{spec}}{unit}"
    if st["n"] > 1:
        hi = "∞" if st["max"] is None and st["n_ok"] < st["n"] else _fmt(st["max"], spec)
        s += f" [{_fmt(st['min'], spec)}–{hi}]"
    if st["n_ok"] < st["n"]:
        s += f" ({st['n'] - st['n_ok']}/{st['n']} {missing})"
    return s


def _verdict(task: dict[str, Any], name: str) -> str:
    """For AutoLRS rows: the baselines with a lower median final validation loss."""
    mine = task["methods"][name]["final_val"]["median"]
    if mine is None:
        return "**diverged**"
    losers = []
    for other, m in task["methods"].items():
        if other.startswith("autolrs"):
            continue
        med = m["final_val"]["median"]
        if med is not None and med < mine:
            losers.append(other)
    return "**loses to " + ", ".join(losers) + "**" if losers else "best final val"


def _targets(summary: dict[str, Any]) -> list[str]:
    """Tallies against the targets of the benchmark issue (reported, never asserted)."""
    out = []
    n = len(summary)
    for name in ("autolrs", "autolrs-best"):
        rows = [t["methods"][name] for t in summary.values() if name in t["methods"]]
        if not rows:
            continue
        fast = sum(
            1
            for m in rows
            if m["compute_to_target"]["median"] is not None
            and m["compute_to_target"]["median"] <= 1.2
        )
        beats = 0
        for t in summary.values():
            ms = t["methods"]
            mine = ms.get(name, {}).get("final_val", {}).get("median")
            others = [ms[o]["final_val"]["median"] for o in ("prodigy", "schedulefree") if o in ms]
            if mine is not None and others and all(o is None or mine < o for o in others):
                beats += 1
        cheap = sum(
            1
            for m in rows
            if m["tuner_overhead"] and (m["tuner_overhead"]["median"] or 1.0) <= 0.01
        )
        out.append(
            f"- `{name}`: reaches the cosine target within 1.2× one run on {fast}/{n} tasks "
            f"(target ≥ 3); lower final val than both Prodigy and Schedule-Free on {beats}/{n} "
            f"(target ≥ 3); tuner overhead ≤ 1 % of step time on {cheap}/{n}."
        )
    return out


def to_markdown(summary: dict[str, Any], meta: dict[str, Any], descriptions: dict) -> str:
    """Markdown report: one summary table, then one table per task."""
    lines = [
        "# autolr benchmark",
        "",
        f"Command: `{meta['command']}`  ",
        f"Seeds: {meta['seeds']}, grid size: {meta['grid_size']}, torch threads: 1, "
        f"total time: {meta['elapsed_s']:.0f} s",
        "",
        "Compute to target = optimizer steps until the validation loss reaches the best cosine "
        "grid point's final validation loss, in units of one run's budget (search steps "
        "included; a grid counts all its runs). It is the *first* crossing: a run that dips below "
        "the target and rises again still counts, so read it next to the final val. "
        "Wall × = training time / one cosine run. A best LR marked (edge) lies at the end of "
        "the grid (the grid would need widening). "
        "Medians over seeds, [min–max].",
        "",
        "## Summary",
        "",
        "| task | budget | AutoLRS compute to target | AutoLRS-best compute to target "
        "| AutoLRS final val vs cosine grid | overhead | AutoLRS verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, t in summary.items():
        ms = t["methods"]
        row = [task, str(t["budget"])]
        for name in ("autolrs", "autolrs-best"):
            row.append(_cell(ms[name]["compute_to_target"], ".2f", unit="×") if name in ms else "—")
        if "autolrs" in ms and BASELINE in ms:
            a = ms["autolrs"]["final_val"]["median"]
            c = ms[BASELINE]["final_val"]["median"]
            row.append(f"{a:.4g} vs {c:.4g}" if a is not None and c is not None else "—")
        else:
            row.append("—")
        ov = ms.get("autolrs", {}).get("tuner_overhead")
        row.append(_cell(ov, ".1%") if ov else "—")
        row.append(_verdict(t, "autolrs") if "autolrs" in ms else "—")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", *_targets(summary)]
    for task, t in summary.items():
        lines += [
            "",
            f"## {task}",
            "",
            f"{descriptions.get(task, '')}; budget {t['budget']} steps; target (best cosine) "
            f"{', '.join(_fmt(v) for v in t['target'])} per seed.",
            "",
            "| method | runs | final val | compute to target | wall × | tuner overhead "
            "| best LR (per seed) | vs baselines |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, m in t["methods"].items():
            lrs = (
                ", ".join(
                    _fmt(v, ".3g") + (" (edge)" if e else "")
                    for v, e in zip(m["best_lr"], m["best_lr_at_grid_edge"])
                )
                if m["grid_size"] > 1
                else "—"
            )
            row = [
                name,
                str(m["grid_size"]),
                _cell(m["final_val"], missing="diverged"),
                _cell(m["compute_to_target"], ".2f", unit="×"),
                _cell(m["wall_ratio"], ".2f", unit="×"),
                _cell(m["tuner_overhead"], ".1%") if m["tuner_overhead"] else "—",
                lrs,
                _verdict(t, name) if name.startswith("autolrs") else "",
            ]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- plots
def plot_task(task: str, runs: list[dict[str, Any]], path: str) -> None:
    """Validation loss and LR against step, per method (seed 0; grids: their best point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = min(r["seed"] for r in runs)
    best: dict[str, dict[str, Any]] = {}
    for r in runs:
        if r["task"] != task or r["seed"] != seed:
            continue
        cur = best.get(r["method"])
        if cur is None or r["final_val"] < cur["final_val"]:
            best[r["method"]] = r
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, r in best.items():
        pts = [(s, v) for s, v, ok in r["evals"] if ok and math.isfinite(v)]
        label = name if r["lr"] is None else f"{name} (lr={r['lr']:.3g})"
        style = "-" if name.startswith("autolrs") else "--"
        if pts:
            ax1.plot(*zip(*pts), style, label=label, lw=2 if style == "-" else 1.2)
        lp = [(s, v) for s, v in r["lrs"] if v > 0 and math.isfinite(v)]
        if lp:
            ax2.plot(*zip(*lp), style, label=label, lw=1.5 if style == "-" else 1.0)
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("validation loss")
    ax1.set_title(f"{task}: validation loss (seed {seed})")
    ax1.legend(fontsize=7)
    ax2.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("learning rate (Prodigy/D-Adapt: d·lr)")
    ax2.set_title(f"{task}: LR used at each step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
