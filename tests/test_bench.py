"""Smoke test of the benchmark CLI: ``--quick`` on the fastest task, output complete and finite."""

from __future__ import annotations

import json
import math
import os

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
pytest.importorskip("prodigyopt")
pytest.importorskip("schedulefree")
pytest.importorskip("dadaptation")

from autolr.bench import cli

from .conftest import json_numbers


def test_bench_quick_smoke(tmp_path):
    out = tmp_path / "bench"
    methods = "autolrs,autolrs-paper,cosine,schedulefree,prodigy,dadapt"
    argv = ["--quick", "--tasks", "quadratic", "--methods", methods, "--grid", "3"]
    rc = cli.main([*argv, "--out", str(out), "--no-progress"])
    assert rc == 0
    for name in ("results.json", "results.md", "quadratic.png"):
        assert (out / name).is_file() and os.path.getsize(out / name) > 0, name

    with open(out / "results.json") as fh:
        data = json.load(fh)  # the writer uses allow_nan=False: no NaN/inf can be in it
    nums = list(json_numbers(data))
    assert nums and all(math.isfinite(v) for v in nums)

    task = data["summary"]["quadratic"]
    assert set(task["methods"]) == set(methods.split(","))
    assert task["target"][0] is not None
    for name, m in task["methods"].items():
        assert m["final_val"]["median"] is not None, name
        assert m["wall_ratio"]["median"] is not None, name
        assert m["grid_size"] == (3 if name in ("cosine", "schedulefree") else 1)
    assert task["methods"]["autolrs"]["tuner_overhead"]["median"] is not None
    # the reference reaches its own target within its grid's compute
    assert task["methods"]["cosine"]["compute_to_target"]["median"] <= 3.0 + 1e-9

    # one run per (method, grid point); every run trained the full quick budget
    runs = data["runs"]
    assert len(runs) == 2 + 3 + 3 + 1 + 1
    budget = cli.TASKS["quadratic"].quick_budget
    for r in runs:
        assert r["budget"] == budget and r["evals"][-1][0] <= budget

    md = (out / "results.md").read_text()
    assert "| autolrs |" in md and "## quadratic" in md

    # the report can be re-rendered from results.json alone
    (out / "results.md").unlink()
    assert cli.main(["--rerender", "--out", str(out), "--no-plots"]) == 0
    assert (out / "results.md").read_text() == md


def test_bench_rejects_unknown_task(tmp_path, capsys):
    assert cli.main(["--quick", "--tasks", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown" in capsys.readouterr().err


def test_bench_one_run_baselines(tmp_path):
    """cosine-guess and wsd-rt end to end; wsd-rt's compute counts its range-test steps."""
    from autolr.bench import report
    from autolr.bench.methods import guess_lr, range_test_steps

    out = tmp_path / "bench"
    argv = ["--quick", "--tasks", "quadratic", "--methods", "cosine-guess,wsd-rt", "--grid", "3"]
    assert cli.main([*argv, "--out", str(out), "--no-progress", "--no-plots"]) == 0
    with open(out / "results.json") as fh:
        data = json.load(fh)
    task = cli.TASKS["quadratic"]
    budget = task.quick_budget
    runs = {r["method"]: r for r in data["runs"] if r["method"] != "cosine"}
    assert set(runs) == {"cosine-guess", "wsd-rt"}
    summ = data["summary"]["quadratic"]["methods"]
    assert summ["cosine-guess"]["grid_size"] == summ["wsd-rt"]["grid_size"] == 1

    guess = runs["cosine-guess"]
    assert guess["lr"] == pytest.approx(guess_lr(task)) == pytest.approx(math.sqrt(0.02 * 1.9))
    assert "range_test_steps" not in guess and summ["cosine-guess"]["range_test_steps"] is None

    wsd = runs["wsd-rt"]
    rt = wsd["range_test_steps"]
    assert 2 <= rt <= range_test_steps(budget) == 50
    assert wsd["range_test"]["steps"] == rt and wsd["lr"] == wsd["range_test"]["suggested_lr"]
    assert wsd["range_test"]["reason"]
    assert summ["wsd-rt"]["range_test_steps"] == [rt]
    # compute to target = (range-test steps + first crossing) / budget, for one run
    target = data["summary"]["quadratic"]["target"][0]
    cross = report.crossing(wsd, target)
    comp = summ["wsd-rt"]["compute_to_target"]["median"]
    if cross is None:
        assert comp is None
    else:
        assert comp == pytest.approx((rt + cross) / budget)
    # the WSD schedule: warm-up over 5 %, constant, linear decay to 0 over the last 20 %
    lrs = dict((int(s), v) for s, v in wsd["lrs"])
    peak = wsd["lr"]
    assert lrs[0] == pytest.approx(peak / (budget // 20))
    assert lrs[budget // 2] == pytest.approx(peak)
    assert lrs[budget - budget // 10] == pytest.approx(peak * 0.5)

    md = (out / "results.md").read_text()
    assert f"| wsd-rt | 1 + {rt} range-test steps |" in md
    assert "| cosine-guess | 1 |" in md


def test_wsd_rt_run_is_seeded_like_any_other_run():
    """The range test leaves no trace: wsd-rt equals a plain WSD run at the same LR."""
    from autolr.bench.methods import METHODS, Method, run_once

    task = cli.TASKS["quadratic"]
    rt_run = run_once(task, METHODS["wsd-rt"], 1, 120, n_evals=12)
    plain = Method("wsd", "schedule", True, "WSD at a given LR", schedule="wsd")
    ref = run_once(task, plain, 1, 120, lr=rt_run["lr"], n_evals=12)
    assert rt_run["evals"] == ref["evals"] and rt_run["lrs"] == ref["lrs"]
    assert rt_run["range_test_steps"] >= 2 and "range_test_steps" not in ref
    # the same initial weights as every method of that seed
    cos = run_once(task, METHODS["cosine-guess"], 1, 120, n_evals=12)
    assert cos["evals"][0] == ref["evals"][0]


def _fake(task, method, kind, final, overhead=None, mid=10.0):
    run = {
        "task": task,
        "method": method,
        "kind": kind,
        "seed": 0,
        "lr": None,
        "budget": 100,
        "evals": [[0, 10.0, True], [50, mid, True], [100, final, True]],
        "lrs": [],
        "final_val": final,
        "diverged": False,
        "train_time": 1.0,
        "tuner_time": 0.0 if overhead is None else overhead,
    }
    if overhead is not None:
        run["stages"] = []
    return run


def test_summary_tallies_every_autolrs_kind_method_against_the_alternatives():
    from autolr.bench import report

    runs = []
    tasks = ["quadratic", "logreg", "mlp", "cnn", "charlm"]
    for i, t in enumerate(tasks):
        runs.append(_fake(t, "cosine", "schedule", 1.0))
        runs.append(_fake(t, "prodigy", "adaptive", 1.2))
        runs += [_fake(t, "schedulefree", "schedulefree", v) for v in (0.5, 1.1, 3.0)]
        runs.append(_fake(t, "cosine-guess", "schedule", 1.3))
        wsd = _fake(t, "wsd-rt", "schedule", 0.9 if i == 0 else 1.4)  # beats autolrs on task 0
        wsd["range_test_steps"] = 10
        runs.append(wsd)
        # a new autolrs-kind method under a name the report does not know
        ov = 0.004 if i else 0.08  # <= 1 % on charlm, > 5 % on quadratic
        runs.append(_fake(t, "autolrs-paper", "autolrs", 1.04, overhead=ov, mid=0.99))
    summary = report.summarise(runs)
    # Schedule-Free is judged by its median grid point (1.1), not its best (0.5)
    sf = summary["mlp"]["methods"]["schedulefree"]
    assert sf["final_val"]["median"] == 0.5 and sf["final_val_grid_median"]["median"] == 1.1
    meta = {"command": "x", "seeds": 1, "grid_size": 3, "elapsed_s": 1.0}
    md = report.to_markdown(summary, meta, {})
    line = next(ln for ln in md.splitlines() if ln.startswith("- `autolrs-paper`"))
    # each alternative counted on its own: wsd-rt wins on one task, the others on none
    assert "lower final val than Prodigy 5/5, Schedule-Free (median grid point) 5/5, " in line
    assert "cosine-guess 5/5, wsd-rt 4/5 (each: target ≥ 4 of 5)" in line
    assert "≤ 1.05× the grid-best cosine's on 5/5" in line
    assert "charlm: yes" in line and "≤ 5% on 4/5" in line
    # autolrs-paper dips below the target (1.0) at step 50 of 100; wsd-rt never reaches it
    assert "≤ 1.2× one run on 5/5" in line
    assert summary["mlp"]["methods"]["autolrs-paper"]["compute_to_target"]["median"] == 0.5
    assert summary["mlp"]["methods"]["wsd-rt"]["compute_to_target"]["median"] is None
    # ... and on quadratic it does, at the end, after its 10 range-test steps: (10 + 100) / 100
    assert summary["quadratic"]["methods"]["wsd-rt"]["compute_to_target"]["median"] == 1.1
    # one summary row per task, with per-alternative verdicts
    assert all(md.count(f"\n| {t} | autolrs-paper |") == 1 for t in tasks)
    assert "| quadratic | autolrs-paper |" in md and "| ✗ 0.9 |" in md and "| ✓ 1.4 |" in md


def test_grid_best_skips_diverged_runs_in_memory_and_from_json():
    from autolr.bench._study import grid_best

    runs = [
        {"kind": "cosine", "task": "t", "seed": 0, "final_val": None},  # diverged, from JSON
        {"kind": "cosine", "task": "t", "seed": 0, "final_val": 0.5},
        {"kind": "cosine", "task": "t", "seed": 0, "final_val": float("nan")},
        {"kind": "autolrs", "task": "t", "seed": 0, "final_val": 0.1},  # not a grid run
        {"kind": "cosine", "task": "t", "seed": 1, "final_val": None},
    ]
    assert grid_best(runs, "kind") == {("t", 0): 0.5, ("t", 1): math.inf}
