"""CI run of ``autolr bench --study stn`` at a tiny size: output complete and finite."""

from __future__ import annotations

import json
import math
import os

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from autolr.bench import cli
from autolr.bench import stn as study

from .conftest import json_numbers


def test_bench_stn_tiny(tmp_path, monkeypatch):
    tiny = dict(study.CONFIG["quick"], width=32, steps=60, eval_every=20, dropouts=[0.0, 0.3])
    tiny.update(cost_repeats=1, cost_steps=2)
    monkeypatch.setitem(study.CONFIG, "quick", tiny)
    out = tmp_path / "stn"
    rc = cli.main(["--study", "stn", "--quick", "--no-progress", "--out", str(out)])
    assert rc == 0
    for name in ("results.json", "results.md", "schedules.png"):
        assert (out / name).is_file() and os.path.getsize(out / name) > 0, name
    with open(out / "results.json") as fh:
        data = json.load(fh)  # written with allow_nan=False
    nums = list(json_numbers(data))
    assert nums and all(math.isfinite(v) for v in nums)
    kinds = sorted(r["kind"] for r in data["runs"])
    assert kinds == ["delta", "plain", "plain", "replay", "stn"]
    agg = data["summary"]["aggregate"]
    for key in ("grid_best_val", "stn_val", "delta_val", "replay_val", "stn_flops_x_plain"):
        assert math.isfinite(agg[key]), key
    # STN doubles the layer weights: about 2x the FLOPs of a plain run, never less
    assert 1.5 < agg["stn_flops_x_plain"] < 4
    assert set(data["summary"]["targets"]) == {"stn", "delta"}
    for k in ("stn", "delta"):  # the verdicts, recomputed from the aggregate
        t = data["summary"]["targets"][k]
        assert t["val_at_most_grid_best"] is (agg[f"{k}_val"] <= agg["grid_best_val"])
        assert t["flops_at_most_2.5x"] is (agg[f"{k}_flops_x_plain"] <= 2.5)
        assert t["lower_val_than_no_dropout"] is (agg[f"{k}_val"] < agg["no_reg_val"])
        assert t["met"] is (t["val_at_most_grid_best"] and t["flops_at_most_2.5x"])
    stn_run = next(r for r in data["runs"] if r["kind"] == "stn")
    sched = stn_run["schedule"]
    assert sched["names"] == ["drop_in", "drop1", "drop2", "wd"]
    assert len(sched["steps"]) == len(sched["values"]) > 1
    md = (out / "results.md").read_text()
    assert "Targets" in md and "grid best" in md
