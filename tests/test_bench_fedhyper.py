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
    md = (out / "results.md").read_text()
    assert "fedhyper-g" in md and ("met" in md)
