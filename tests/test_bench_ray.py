"""The ``ray`` benchmark study runs end to end at a tiny size and writes complete output."""

from __future__ import annotations

import json
import math
import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray.tune")
pytest.importorskip("sklearn")


def test_autolrs_plan_is_the_scheduler_default():
    from autolr import BudgetPolicy
    from autolr.bench.ray_population import POPULATION, autolrs_plan

    plan = autolrs_plan(200)
    assert plan["variant"] == "budget"
    pol = BudgetPolicy(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in plan["policy"].items()}
    )
    from autolr.integrations.ray import AutoLRSScheduler

    sched = AutoLRSScheduler(lr_bounds=(1e-3, 0.3), max_t=200)
    sched.set_search_properties("loss", "min", num_samples=POPULATION)
    assert pol == sched.search.policy
    assert (pol.decay_shape, pol.cooldown_frac) == ("linear", 0.0)  # a population's defaults
    json.dumps(autolrs_plan(8))  # plain values, even when no search fits


@pytest.mark.slow
def test_ray_study_tiny(tmp_path, monkeypatch):
    from autolr.bench import cli, ray_population

    monkeypatch.setattr(ray_population, "QUICK_ITERS", 8)
    monkeypatch.setattr(ray_population, "VAL_EVERY", 4)
    # Two trials per method test the same pipeline as four in half the time (26 s vs 48 s).
    monkeypatch.setattr(ray_population, "POPULATION", 2)
    out = tmp_path / "ray"
    assert cli.main(["--study", "ray", "--quick", "--no-progress", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["iters"] == 8 and data["meta"]["elapsed_s"] > 0
    assert data["meta"]["autolrs"] == json.loads(json.dumps(ray_population.autolrs_plan(8)))
    methods = {r["method"] for r in data["runs"]}
    assert methods == set(ray_population.METHODS)
    for r in data["runs"]:
        assert r["final_val"] is not None and math.isfinite(r["final_val"])
        assert len(r["trials"]) == ray_population.POPULATION and r["trial_starts"] >= 1
    assert set(data["summary"]["targets"]) == {
        "better_than_pbt",
        "better_than_pb2",
        "wall_clock_vs_pbt",
    }
    text = (out / "results.md").read_text()
    assert "Targets" in text and "wall-clock" in text
    assert (out / "ray_population.png").stat().st_size > 0
