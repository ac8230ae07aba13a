"""Smoke test of ``autolr bench --study optuna`` at a tiny size: output complete and finite."""

from __future__ import annotations

import json
import math
import os
import statistics

import pytest

pytest.importorskip("optuna")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from autolr.bench import cli
from autolr.bench import optuna_search as study

from .conftest import json_numbers


def test_optuna_study_tiny(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "TASK_NAMES", ("logreg",))
    monkeypatch.setattr(study, "QUICK_BUDGET_RUNS", 3)
    monkeypatch.setattr(study, "QUICK_TIMING_SIZES", (12,))
    monkeypatch.setattr(study, "QUICK_TIMING_REPEATS", 1)
    out = tmp_path / "optuna"
    rc = cli.main(["--study", "optuna", "--quick", "--no-progress", "--out", str(out)])
    assert rc == 0
    for name in ("results.json", "results.md", "logreg.png", "timing.png"):
        assert (out / name).is_file() and os.path.getsize(out / name) > 0, name

    with open(out / "results.json") as fh:
        data = json.load(fh)  # written with allow_nan=False
    assert data["meta"]["elapsed_s"] > 0
    studies = data["studies"]
    assert {s["method"] for s in studies} == set(study.METHODS)
    for s in studies:
        assert s["steps_used"] >= s["budget_steps"] == 3 * study.QUICK_STEPS_PER_RUN
        assert s["best_value"] is not None and math.isfinite(s["best_value"])
        assert s["trace"] and s["n_trials"] == len(s["trace"])
    search = data["summary"]["search"]["logreg"]
    assert set(search["best_value_median"]) == set(study.METHODS)
    assert all(v is not None for v in search["best_value_median"].values())
    timing = data["summary"]["timing"]["rows"]
    assert {(r["objective"], r["n_complete"], r["n_pruned"]) for r in timing} == {
        ("bump", 12, 0),
        ("bump", 12, 6),
        ("smooth", 12, 0),
    }
    assert all(r["autolrs_s"] > 0 for r in timing)
    targets = data["summary"]["targets"]
    # The verdicts, recomputed: no slower than GPSampler wherever nothing was pruned, and a
    # median (over seeds) step ratio to the fastest baseline of at most 0.5.
    plain = [r for r in timing if r["n_pruned"] == 0]
    assert plain and all(r["gpsampler_s"] is not None for r in plain)
    want = all(r["autolrs_s"] <= r["gpsampler_s"] for r in plain)
    assert targets["sampling_time_not_worse_than_gpsampler"] is want
    ratios = [p["ratio_vs_fastest_baseline"]["autolrs"] for p in search["per_seed"]]
    med = statistics.median(math.inf if r is None else r for r in ratios)
    assert targets["match_with_half_the_steps"]["logreg"] is (med <= 0.5)
    text = (out / "results.md").read_text()
    assert "logreg" in text and "Sampling time per trial" in text
    nums = list(json_numbers({k: v for k, v in data.items()}))
    assert nums and all(math.isfinite(v) for v in nums)


def test_same_target_holds_every_method_to_the_others_best():
    # Three methods, two seeds; traces are (cumulative steps, best so far).
    def st(method, seed, best, trace):
        return {"method": method, "seed": seed, "best_value": best, "trace": trace}

    rows = [
        st("a", 0, 1.0, [[100, 2.0], [200, 1.0]]),
        st("b", 0, 1.005, [[400, 1.005]]),  # within 1 % of a's 1.0
        st("c", 0, 3.0, [[50, 3.0]]),
        st("a", 1, 2.0, [[100, 2.0]]),
        st("b", 1, 1.0, [[300, 1.0]]),
        st("c", 1, math.inf, [[50, math.inf]]),
    ]
    got = study._same_target(rows, [0, 1], ["a", "b", "c"])
    # a, seed 0: target = b's 1.005, a reaches it at 200, b (fastest other) at 400 -> 0.5;
    # seed 1: target 1.0, a never within 1 % -> no match. Median of (0.5, inf) is inf.
    assert got["a"]["ratio_median"] is None
    assert got["a"]["matched_seeds"] == 1 and got["a"]["half_seeds"] == 1
    assert got["a"]["gap_median"] == pytest.approx(
        statistics.median([1.0 / 1.005 - 1, 2.0 / 1.0 - 1])
    )
    # b, seed 0: target a's 1.0; b's 1.005 is within 1 % at 400, a got there at 200 -> 2.0;
    # seed 1: target a's 2.0 (c's inf is not a target); b at 300, a at 100 -> 3.0.
    assert got["b"]["ratio_median"] == pytest.approx(2.5)
    assert got["b"]["matched_seeds"] == 2 and got["b"]["half_seeds"] == 0
    assert got["c"]["matched_seeds"] == 0 and got["c"]["n_seeds"] == 2


def test_optuna_study_tasks_flag(tmp_path, capsys):
    """``--tasks`` takes any SGD task, held-out ones included; AdamW tasks and unknown names
    are refused before any training, naming the tasks it accepts."""
    out = str(tmp_path / "o")
    assert cli.main(["--study", "optuna", "--tasks", "cnn", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "cnn is an AdamW task" in err and "wine" in err and "cnn," not in err
    assert cli.main(["--study", "optuna", "--tasks", "nope", "--out", out]) == 2
    assert "unknown task nope" in capsys.readouterr().err
    assert not os.path.exists(out) or not os.listdir(out)

    # A held-out task trains as the bench tasks do.
    res = study.run_study("wine", "tpe-median", 0, 40, 2)
    assert res["task"] == "wine" and res["steps_used"] >= 80
    assert math.isfinite(res["best_value"])


def test_optuna_study_runs_the_named_tasks(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "QUICK_BUDGET_RUNS", 2)
    monkeypatch.setattr(study, "QUICK_STEPS_PER_RUN", 40)
    monkeypatch.setattr(study, "QUICK_TIMING_SIZES", (6,))
    monkeypatch.setattr(study, "QUICK_TIMING_REPEATS", 1)
    out = tmp_path / "optuna"
    argv = ["--study", "optuna", "--quick", "--tasks", "wine", "--no-progress", "--no-plots"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    with open(out / "results.json") as fh:
        data = json.load(fh)
    assert {s["task"] for s in data["studies"]} == {"wine"}
    assert data["meta"]["tasks"] == ["wine"]
    assert data["meta"]["command"] == "autolr bench --study optuna --quick --tasks wine"
    assert "## wine" in (out / "results.md").read_text()


def test_optuna_study_workers_share_one_budget(capsys, tmp_path):
    """``--workers``: the processes of one study share its step budget through one storage
    (each worker overruns it by at most the trial it is in); a failing worker is an error."""
    res = study.run_study("logreg", "autolrs", 0, 40, 4, workers=2)
    budget = 4 * 40
    assert res["workers"] == 2
    # Separate budgets would train >= 2 x 160 steps; a shared one stops below 160 + 2 x 40.
    assert budget <= res["steps_used"] < budget + 2 * 40
    steps = [s for s, _ in res["trace"]]
    best = [b for _, b in res["trace"]]
    assert (
        len(steps) == res["n_trials"] and steps == sorted(steps) and steps[-1] == res["steps_used"]
    )
    assert best == sorted(best, reverse=True) and math.isfinite(res["best_value"])
    assert res["best_value"] == best[-1]
    with pytest.raises(RuntimeError, match=r"worker\(s\) \[0, 1\] exited"):
        study.run_study("logreg", "no-such-method", 0, 40, 1, workers=2)

    out = str(tmp_path / "o")
    assert cli.main(["--study", "optuna", "--workers", "2", "--jobs", "2", "--out", out]) == 2
    assert "leave --jobs out" in capsys.readouterr().err
    assert cli.main(["--study", "autolrs", "--workers", "2", "--out", out]) == 2
    assert "--workers: not used by --study autolrs (used by: optuna)" in capsys.readouterr().err
