"""The ``ray`` benchmark study runs end to end at a tiny size and writes complete output."""

from __future__ import annotations

import json
import math
import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray.tune")
pytest.importorskip("sklearn")


def test_autolrs_settings_two_stages_with_fifth_searched():
    from autolr.bench.ray_population import autolrs_settings

    s = autolrs_settings(200)
    assert (s["tau"], s["tau_prime"], s["max_t"]) == (100, 20, 200)
    tiny = autolrs_settings(8)  # the CI size must still be a valid StageSearch
    assert 1 <= tiny["tau_prime"] < tiny["tau"] <= tiny["tau_max"]


@pytest.mark.slow
def test_ray_study_tiny(tmp_path, monkeypatch):
    from autolr.bench import cli, ray_population

    monkeypatch.setattr(ray_population, "QUICK_ITERS", 8)
    monkeypatch.setattr(ray_population, "VAL_EVERY", 4)
    out = tmp_path / "ray"
    assert cli.main(["--study", "ray", "--quick", "--no-progress", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["iters"] == 8 and data["meta"]["elapsed_s"] > 0
    assert data["meta"]["autolrs"] == ray_population.autolrs_settings(8)
    methods = {r["method"] for r in data["runs"]}
    assert methods == set(ray_population.METHODS)
    for r in data["runs"]:
        assert r["final_val"] is not None and math.isfinite(r["final_val"])
        assert len(r["trials"]) == ray_population.POPULATION
    assert set(data["summary"]["targets"]) == {"better_than_pbt", "better_than_pb2"}
    assert "Targets" in (out / "results.md").read_text()
    assert (out / "ray_population.png").stat().st_size > 0
