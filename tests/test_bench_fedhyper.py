"""CI smoke test of ``autolr bench --study fedhyper`` at a tiny size: output complete and finite."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("matplotlib")

from autolr.bench import cli
from autolr.bench import fedhyper as study

from .conftest import json_numbers


def test_fedhyper_study_tiny(tmp_path, monkeypatch):
    tiny = {
        "global_lrs": [0.3, 3.0],
        "local_lrs": [0.3],
        "rounds": 6,
        "seeds": 1,
        "methods": ["fedavg", "fedhyper-g", "fedadam", "fedhyper-adam"],
    }
    monkeypatch.setattr(study, "QUICK", tiny)
    monkeypatch.setattr(study, "TARGET", 0.5)
    out = tmp_path / "fed"
    rc = cli.main(["--study", "fedhyper", "--quick", "--no-progress", "--out", str(out)])
    assert rc == 0
    for name in ("results.json", "results.md", "rounds_to_target.png", "accuracy_gain.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    nums = list(json_numbers(data))
    assert nums and all(math.isfinite(v) for v in nums)
    assert data["meta"]["elapsed_s"] > 0 and data["meta"]["quick"] is True
    assert len(data["runs"]) == 2
    summary = data["summary"]
    # every method is compared with its baseline (FedAdam with FedAvg, as a reference)
    assert set(summary["methods"]) == {"fedhyper-g", "fedadam", "fedhyper-adam"}
    assert summary["methods"]["fedhyper-adam"]["baseline"] == "fedadam"
    assert set(summary["targets"]["fedhyper-g"]) == {"faster_on_most", "never_worse_5pt"}
    for cell in summary["cells"].values():
        for m in tiny["methods"]:
            assert 1 <= cell[m]["rounds_to_target"] <= 7
            assert 0.0 <= cell[m]["final_accuracy"] <= 1.0
    # the verdicts, recomputed from the cells against each method's baseline
    for m, t in summary["targets"].items():
        base = summary["methods"][m]["baseline"]
        cells = list(summary["cells"].values())
        faster = sum(c[m]["rounds_to_target"] < c[base]["rounds_to_target"] for c in cells)
        decided = sum(
            not (c[m]["rounds_to_target"] == c[base]["rounds_to_target"] > tiny["rounds"])
            for c in cells
        )
        drop = max(c[base]["final_accuracy"] - c[m]["final_accuracy"] for c in cells)
        assert t["faster_on_most"] is (faster > decided / 2 if decided else False), m
        assert t["never_worse_5pt"] is (max(drop, 0.0) <= 0.05), m
    md = (out / "results.md").read_text()
    assert "fedhyper-g" in md and ("met" in md)
