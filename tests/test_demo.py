from __future__ import annotations

import json
import math
from pathlib import Path

from autolr.__main__ import main


def test_demo_writes_report_and_plot(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    rc = main(
        ["demo", "--steps", "300", "--tau", "60", "--k", "3", "--out", str(out), "--no-progress"]
    )
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["curves"]["autolrs_lr"]) == 300
    assert len(report["curves"]["constant_train_loss"]) == 300
    for run in ("autolrs", "constant"):
        assert math.isfinite(report[run]["val_loss"])
        assert 0.0 <= report[run]["val_accuracy"] <= 1.0
    assert report["autolrs"]["stages"][0]["winner_lr"] > 0
    assert (out / "autolrs_demo.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "Schedule found by AutoLRS" in printed and "constant lr=0.01" in printed


def test_plain_pytorch_example_resumes_identically() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "autolrs_plain_pytorch.py"),
            "--steps",
            "700",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "resumed schedule equals the uninterrupted one: True" in out.stdout
