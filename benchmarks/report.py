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
  A run that crosses and then ends above the target is reported as touching it, not reaching
  it: the summary and its tallies judge "reaches the target" on the final val.
  Steps spent before the run proper (``wsd-rt``'s LR range test, ``range_test_steps``) count
  too: ``(R + s)/B`` for one run preceded by ``R`` range-test steps.
* **wall ×**: training wall time (evaluation excluded; a grid sums its runs; a range test is
  included) divided by the median wall time of one cosine grid run of the same seed.
* **overhead**: time inside ``AutoLRS.step`` divided by the total training-step time.
* **median grid point**: for a grid, the median over its LRs of the final validation loss (a
  user's typical untuned pick rather than the best one); for one run, its final val.

AutoLRS methods are those of kind ``"autolrs"`` (recorded in every run, else looked up in
:data:`~autolr.bench.methods.METHODS`). For each of them the summary compares its median final
val per task with the one-run alternatives a user would pick instead of tuning
(:data:`ALTERNATIVES`) and tallies the issue's targets (:data:`TARGETS`).

Over seeds the tables give the median and ``[min, max]``.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

__all__ = ["ALTERNATIVES", "TARGETS", "crossing", "plot_task", "summarise", "to_markdown"]

BASELINE = "cosine"

#: The untuned alternatives each AutoLRS method must beat on final val:
#: (method, metric of its summary compared with AutoLRS's median final val, label).
ALTERNATIVES: tuple[tuple[str, str, str], ...] = (
    ("prodigy", "final_val", "Prodigy"),
    ("schedulefree", "final_val_grid_median", "Schedule-Free (median grid point)"),
    ("cosine-guess", "final_val", "cosine-guess"),
    ("wsd-rt", "final_val", "wsd-rt"),
)

#: The issue's targets, tallied (never asserted) in the summary.
TARGETS = {
    "compute_x": 1.2,  # compute to the grid-best cosine's final val <= 1.2x one run ...
    "final_x": 1.05,  # final val <= 1.05x the grid-best cosine's ...
    "min_tasks": 4,  # ... and lower final val than every alternative, each on >= 4 of 5 tasks
    "of_tasks": 5,
    "overhead_charlm": 0.01,  # tuner overhead <= 1 % of step time on charlm
    "overhead_all": 0.05,  # ... and <= 5 % on every task
}


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


def _kind(name: str, runs: list[dict[str, Any]]) -> str:
    """A method's kind: from its runs, else from METHODS (results.json of older versions)."""
    for r in runs:
        if r.get("kind"):
            return str(r["kind"])
    from .methods import METHODS

    if name in METHODS:
        return METHODS[name].kind
    return "autolrs" if name.startswith("autolrs") else ""


def _autolrs_names(task: dict[str, Any]) -> list[str]:
    return [n for n, m in task["methods"].items() if m.get("kind") == "autolrs"]


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
            grid_medians: list[float] = []
            rt_steps: list[int] = []
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
                grid_medians.append(statistics.median(r["final_val"] for r in rs))
                best_lrs.append(best["lr"])
                grid = [r["lr"] for r in rs if r["lr"] is not None]
                at_edge.append(len(grid) > 1 and best["lr"] in (min(grid), max(grid)))
                tgt = targets[s]
                # steps spent before the run(s) proper: wsd-rt's LR range test
                extra = sum(int(r.get("range_test_steps") or 0) for r in rs)
                rt_steps.append(extra)
                comp = None
                if tgt is not None:
                    cs = [c for c in (crossing(r, tgt) for r in rs) if c is not None]
                    if cs:
                        comp = (len(rs) - 1) + (extra + min(cs)) / budget
                comps.append(comp)
                total_t = sum(r["train_time"] for r in rs)
                walls.append(total_t / base_time[s] if base_time[s] else None)
                if any("stages" in r for r in rs):
                    overheads.append(sum(r["tuner_time"] for r in rs) / total_t)
            mres[mname] = {
                "kind": _kind(mname, [r for rs in per_seed.values() for r in rs]),
                "grid_size": grid_size,
                "final_val": _stats(finals),
                "final_val_grid_median": _stats(grid_medians),
                "compute_to_target": _stats(comps),
                "wall_ratio": _stats(walls),
                "tuner_overhead": _stats(overheads) if overheads else None,
                "best_lr": best_lrs,
                "best_lr_at_grid_edge": at_edge,
                "range_test_steps": rt_steps if any(rt_steps) else None,
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
        if m.get("kind") == "autolrs":
            continue
        med = m["final_val"]["median"]
        if med is not None and med < mine:
            losers.append(other)
    return "**loses to " + ", ".join(losers) + "**" if losers else "best final val"


def _beats(task: dict[str, Any], name: str) -> dict[str, tuple[bool, float | None] | None]:
    """Per alternative: (AutoLRS's median final val is lower, the alternative's value).

    ``None`` when the alternative was not run. A diverged alternative (value ``None``) is beaten
    by any finite AutoLRS result; a diverged AutoLRS beats nothing.
    """
    ms = task["methods"]
    mine = ms[name]["final_val"]["median"]
    out: dict[str, tuple[bool, float | None] | None] = {}
    for other, metric, _ in ALTERNATIVES:
        if other not in ms:
            out[other] = None
            continue
        theirs = ms[other][metric]["median"]
        out[other] = (mine is not None and (theirs is None or mine < theirs), theirs)
    return out


def _ratio_to_cosine(task: dict[str, Any], name: str) -> float | None:
    """Median final val of ``name`` over the grid-best cosine's median final val."""
    ms = task["methods"]
    a = ms[name]["final_val"]["median"]
    c = ms[BASELINE]["final_val"]["median"] if BASELINE in ms else None
    return a / c if a is not None and c else None


def _ends_above(task: dict[str, Any], name: str) -> bool:
    """Whether ``name``'s median final val ends above the target (the grid-best cosine's).

    "Compute to target" counts the first crossing, so a run can reach the target and rise
    again; "reaches the target" is judged on where it ends.
    """
    ratio = _ratio_to_cosine(task, name)
    return ratio is not None and ratio > 1.0 + 1e-9


def _compute_summary_cell(task: dict[str, Any], name: str) -> str:
    """The summary's compute-to-target cell; says so when the run touched the target and rose."""
    m = task["methods"][name]
    cell = _cell(m["compute_to_target"], ".2f", unit="×")
    comp = m["compute_to_target"]["median"]
    if comp is None or not _ends_above(task, name):
        return cell
    final = m["final_val"]["median"]
    ratio = _ratio_to_cosine(task, name)
    step = comp * task["budget"]
    return (
        f"touched the target at step {step:.0f} ({cell}) but ended at {final:.4g} "
        f"({ratio:.2f}× target)"
    )


def _overhead(m: dict[str, Any]) -> float | None:
    ov = m.get("tuner_overhead")
    return ov["median"] if ov else None


def _targets(summary: dict[str, Any]) -> list[str]:
    """Tallies against the targets of the benchmark issue (reported, never asserted)."""
    out = []
    n = len(summary)
    want = f"target ≥ {TARGETS['min_tasks']} of {TARGETS['of_tasks']}"
    names: list[str] = []
    for t in summary.values():
        names += [x for x in _autolrs_names(t) if x not in names]
    for name in names:
        tasks = {k: t for k, t in summary.items() if name in t["methods"]}
        fast = held = close = cheap = 0
        beats = dict.fromkeys((o for o, _, _ in ALTERNATIVES), 0)
        missing: set[str] = set()
        for t in tasks.values():
            m = t["methods"][name]
            comp = m["compute_to_target"]["median"]
            quick = comp is not None and comp <= TARGETS["compute_x"]
            fast += quick
            held += quick and not _ends_above(t, name)
            ratio = _ratio_to_cosine(t, name)
            close += ratio is not None and ratio <= TARGETS["final_x"]
            verdicts = _beats(t, name)
            missing |= {o for o, v in verdicts.items() if v is None}
            for other, v in verdicts.items():
                beats[other] += v is not None and v[0]
            ov = _overhead(m)
            cheap += ov is not None and ov <= TARGETS["overhead_all"]
        # The target counts each alternative separately: beaten on >= 4 of 5 tasks.
        each = ", ".join(
            f"{lab} {beats[o]}/{len(tasks)}" for o, _, lab in ALTERNATIVES if o not in missing
        )
        not_run = f"; {', '.join(sorted(missing))} not run" if missing else ""
        if "charlm" in tasks:
            ov = _overhead(tasks["charlm"]["methods"][name])
            ok = ov is not None and ov <= TARGETS["overhead_charlm"]
            charlm = f"{'yes' if ok else 'no'} ({_fmt(ov, '.1%')})"
        else:
            charlm = "not run"
        out.append(
            f"- `{name}` ({len(tasks)}/{n} tasks): reaches the grid-best cosine's final val "
            f"within {TARGETS['compute_x']:g}× one run and ends at or below it on "
            f"{held}/{len(tasks)} ({want}; first crossing "
            f"≤ {TARGETS['compute_x']:g}× one run on {fast}/{len(tasks)}, "
            f"{fast - held} of them ending above the target); final val "
            f"≤ {TARGETS['final_x']:g}× the grid-best cosine's on {close}/{len(tasks)} ({want}); "
            f"lower final val than {each or 'no alternative'} (each: {want}{not_run}); "
            f"tuner overhead "
            f"≤ {TARGETS['overhead_charlm']:.0%} of step time on charlm: {charlm}, "
            f"≤ {TARGETS['overhead_all']:.0%} on {cheap}/{len(tasks)} (target: every task)."
        )
    return out


def _beat_cell(v: tuple[bool, float | None] | None) -> str:
    if v is None:
        return "—"
    ok, theirs = v
    return ("✓ " if ok else "✗ ") + ("diverged" if theirs is None else _fmt(theirs))


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
        "included; a grid counts all its runs; wsd-rt counts its LR range test). It is the "
        "*first* crossing; a run that dips below the target and ends above it is shown as "
        '"touched the target at step X but ended at Y (Z× target)" in the summary, and '
        '"(ends above target)" in the task tables; reaching the target is judged on the '
        "final val. "
        "Wall × = training time / one cosine run. A best LR marked (edge) lies at the end of "
        "the grid (the grid would need widening). One-run schedules show the LR they used: "
        "cosine-guess the geometric middle of the LR range, wsd-rt its range test's pick. "
        "Medians over seeds, [min–max].",
        "",
        "## Summary",
        "",
        "Per AutoLRS method and task. Alternatives: the alternative's median final val, ✓ when "
        "AutoLRS's is lower (Schedule-Free: the median grid point, an untuned user's pick).",
        "",
        "| task | method | compute to target | final val vs grid-best cosine | overhead "
        "| vs Prodigy | vs Schedule-Free (median) | vs cosine-guess | vs wsd-rt |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, t in summary.items():
        ms = t["methods"]
        for name in _autolrs_names(t):
            m = ms[name]
            a = m["final_val"]["median"]
            c = ms[BASELINE]["final_val"]["median"] if BASELINE in ms else None
            ratio = _ratio_to_cosine(t, name)
            vs = "—"
            if a is None:
                vs = "diverged"
            elif c is not None:
                vs = f"{a:.4g} vs {c:.4g} ({ratio:.2f}×)" if ratio is not None else "—"
            verdicts = _beats(t, name)
            row = [
                task,
                name,
                _compute_summary_cell(t, name),
                vs,
                _cell(m["tuner_overhead"], ".1%") if m["tuner_overhead"] else "—",
                *(_beat_cell(verdicts[o]) for o, _, _ in ALTERNATIVES),
            ]
            lines.append("| " + " | ".join(row) + " |")
    if not any(_autolrs_names(t) for t in summary.values()):
        lines.append("| — | no AutoLRS method was run | | | | | | | |")
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
            "| LR (per seed; grid: best) | vs baselines |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, m in t["methods"].items():
            if m["grid_size"] > 1:
                lrs = ", ".join(
                    _fmt(v, ".3g") + (" (edge)" if e else "")
                    for v, e in zip(m["best_lr"], m["best_lr_at_grid_edge"])
                )
            elif any(v is not None for v in m["best_lr"]):
                lrs = ", ".join(_fmt(v, ".3g") for v in m["best_lr"])
            else:
                lrs = "—"
            runs = str(m["grid_size"])
            rt = m.get("range_test_steps")
            if rt:
                runs += f" + {statistics.median(rt):g} range-test steps"
            comp = _cell(m["compute_to_target"], ".2f", unit="×")
            if m["compute_to_target"]["median"] is not None and _ends_above(t, name):
                comp += " (ends above target)"
            row = [
                name,
                runs,
                _cell(m["final_val"], missing="diverged"),
                comp,
                _cell(m["wall_ratio"], ".2f", unit="×"),
                _cell(m["tuner_overhead"], ".1%") if m["tuner_overhead"] else "—",
                lrs,
                _verdict(t, name) if m.get("kind") == "autolrs" else "",
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
        style = "-" if _kind(name, [r]) == "autolrs" else "--"
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
    save_figure(fig, path, dpi=90)


def save_figure(fig: Any, path: str, dpi: int = 110) -> None:
    """Lay out ``fig``, write it to ``path`` and free it (every study's last plotting step)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
