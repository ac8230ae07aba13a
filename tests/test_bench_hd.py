"""CI smoke test of ``autolr bench --study hd`` at a tiny size: output complete and finite."""

from __future__ import annotations

import json
import math
import statistics

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
pytest.importorskip("prodigyopt")
pytest.importorskip("schedulefree")

from autolr.bench import cli, hd

from .conftest import json_numbers


def test_hd_study_tiny(tmp_path, monkeypatch):
    monkeypatch.setattr(hd, "BUDGET_OVERRIDE", 40)
    monkeypatch.setattr(hd, "TASKS_OVERRIDE", ("logreg",))
    monkeypatch.setattr(hd, "GRID_OVERRIDE", 3)
    out = tmp_path / "hd"
    rc = cli.main(["--study", "hd", "--quick", "--no-progress", "--out", str(out)])
    assert rc == 0
    for name in ("results.json", "results.md", "logreg.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["elapsed_s"] > 0 and data["meta"]["tasks"] == ["logreg"]
    assert all(math.isfinite(v) for v in json_numbers(data))
    task = data["summary"]["tasks"]["logreg"]
    assert task["target"] > 0 and task["tuned_lr"] > 0
    for variant in hd.VARIANTS:
        assert set(task["rows"][variant]) == {str(f) for f in hd.FACTORS}
        assert all(task["rows"][variant][str(f)]["median_val"] is not None for f in hd.FACTORS)
    assert set(data["summary"]["target_met"]) == set(hd.HD_VARIANTS)
    # The verdicts, recomputed from the runs: HD's median final loss at every starting LR
    # within 10 % of the tuned constant LR's.
    for v in hd.HD_VARIANTS:
        medians = [
            statistics.median(
                r["final_val"] for r in data["runs"] if r["variant"] == v and r["factor"] == f
            )
            for f in hd.FACTORS
        ]
        want = all(m <= 1.10 * task["target"] for m in medians)
        assert data["summary"]["target_met"][v] is want, v
        assert [task["rows"][v][str(f)]["median_val"] for f in hd.FACTORS] == pytest.approx(medians)
    # the HD runs carry their LR trajectories and non-finite counters
    hd_runs = [r for r in data["runs"] if r["variant"].startswith("hd-")]
    assert len(hd_runs) == len(hd.HD_VARIANTS) * len(hd.FACTORS) and all(r["lrs"] for r in hd_runs)
    assert all(r["nonfinite"] == 0 for r in hd_runs)
    md = (out / "results.md").read_text()
    assert "within 10 %" in md and "logreg" in md


def test_warmup_variants_are_compared_under_the_same_ramp():
    """An HD warm-up variant is only fair next to the baselines with the same warm-up."""
    hd_wu = [v for v in hd.HD_VARIANTS if hd._HD_KW[v].get("warmup_steps")]
    if hd_wu:
        assert {"constant-wu", "schedulefree-wu"} <= set(hd.VARIANTS)
        assert all(hd._HD_KW[v]["warmup_steps"] == hd.WARMUP for v in hd_wu)
    import torch

    from autolr.bench.tasks import TASKS

    model = torch.nn.Linear(2, 1)
    opt, _ = hd._optimizer(TASKS["logreg"], "constant-wu", model.parameters(), 1.0)
    assert opt.param_groups[0]["lr"] == 1.0 / hd.WARMUP  # step 0 runs at (0 + 1) / WARMUP
    sf, _ = hd._optimizer(TASKS["logreg"], "schedulefree-wu", model.parameters(), 1.0)
    assert sf.param_groups[0]["warmup_steps"] == hd.WARMUP
