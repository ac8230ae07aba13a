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
    methods = "autolrs,autolrs-best,cosine,schedulefree,prodigy,dadapt"
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
