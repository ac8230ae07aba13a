"""CI smoke test of ``autolr bench --study autolrs`` at a tiny size: output complete and finite."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("sklearn")

import torch

from autolr.bench import autolrs_study, cli, tasks


def test_autolrs_study_tiny(tmp_path):
    out = tmp_path / "autolrs"
    argv = ["--study", "autolrs", "--quick", "--no-progress", "--out", str(out)]
    argv += ["--tasks", "logreg,softmax", "--variants", "default,no-decay,paper"]
    assert cli.main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["tasks"] == ["logreg", "softmax"]
    assert data["meta"]["variants"] == ["default", "no-decay", "paper"]
    grid = autolrs_study.QUICK_GRID
    runs = data["runs"]
    assert len(runs) == 2 * (grid + 3)
    for r in runs:
        assert r["final_val"] is None or r["final_val"] > 0
    table = data["table"]
    for variant in ("default", "no-decay", "paper"):
        ratios = table[variant]["median_ratio"]
        assert set(ratios) == {"logreg", "softmax"}
        assert all(math.isfinite(x) and x > 0 for x in ratios.values())
    # The budget variants ran one search; the paper variant several stages.
    by = {(r["task"], r["variant"]): r for r in runs if r["variant"] != "cosine"}
    assert len(by["logreg", "default"]["winners"]) == 1
    assert len(by["logreg", "paper"]["winners"]) > 1
    md = (out / "results.md").read_text()
    assert "| `default` |" in md and "held-out" in md and "softmax" in md


@pytest.mark.parametrize("name", list(tasks.HOLDOUT))
def test_held_out_tasks_are_deterministic_and_train(name):
    """Each held-out task builds the same model and batches from a seed, and 50 steps at the
    geometric middle of its LR box lower its validation loss."""
    task = tasks.get_task(name)
    lr = math.sqrt(task.lr_range[0] * task.lr_range[1])

    def run() -> tuple[float, float]:
        inst = task.make(0)
        opt = task.make_optimizer(inst.model.parameters(), lr)
        torch.manual_seed(1)
        start = inst.val_loss()
        for _ in range(50):
            inst.step(opt)
        return start, inst.val_loss()

    first = run()
    assert run() == first
    assert math.isfinite(first[1]) and first[1] < first[0]


def test_fresh_tasks_have_their_own_column():
    assert set(tasks.FRESH) <= set(tasks.HOLDOUT)
    table = {"default": {"median_ratio": {}, "ratios": {"wine": [1.2], "logreg": [1.1]}}}
    table["default"]["overhead"] = {}
    md = autolrs_study._markdown(
        table,
        ["logreg", "wine"],
        {"seeds": 1, "grid": 2, "quick": True, "elapsed_s": 1, "cpu_count": 2},
    )
    row = next(line for line in md.splitlines() if line.startswith("| `default`"))
    # variant, 2 tasks, bench, held-out (first four: none here), fresh, ≤1.05, overhead
    assert row.split(" | ")[3:6] == ["1.100", "—", "1.200"]


def test_nqm_horizon_recursion_and_table():
    """The exact second-moment recursion reaches SGD's stationary variance, and the table's
    picks lie in each task's box (the picks are what the README's diagnosis quotes)."""
    import numpy as np

    from autolr.bench import nqm_horizon

    h = np.array([1.0, 0.1])
    m = nqm_horizon._moments(np.full((3000, 1), 0.5), h, 4, np.ones((1, 2)))
    # stationary: m = η² h/B / (1 − (1 − ηh)²) = η / (B (2 − ηh))
    assert np.allclose(m[0], 0.5 / (4 * (2 - 0.5 * h)), rtol=1e-6)
    rows = nqm_horizon.horizon_table(points=12)
    assert [r["task"].split()[0] for r in rows] == list(tasks.NQM)
    for r in rows:
        lo, hi = tasks.get_task(r["task"].split()[0]).lr_range
        for key in ("cosine_best_lr", "schedule_best_lr", "pick", "pick_cooled"):
            assert lo <= r[key] <= hi
        assert r["schedule_best_vs_cosine"] >= 1.0  # the tuner's lineage is shorter
        assert r["schedule_at_pick_vs_cosine"] >= r["schedule_best_vs_cosine"] * 0.999
