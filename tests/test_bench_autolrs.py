"""CI smoke test of ``autolr bench --study autolrs`` at a tiny size: output complete and finite."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("sklearn")

from autolr.bench import autolrs_study, cli


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
