from __future__ import annotations

import json
import math
from pathlib import Path

from autolr.__main__ import main


def test_demo_writes_report_and_plot(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    rc = main(["demo", "--steps", "300", "--grid", "3", "--out", str(out), "--no-progress"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["curves"]["autolrs_lr"]) == 300
    assert len(report["curves"]["cosine_guess_train_loss"]) == 300
    for run in (report["autolrs"], report["cosine_guess"], report["cosine_grid"]["best"]):
        assert math.isfinite(run["val_loss"])
        assert 0.0 <= run["val_accuracy"] <= 1.0
    grid = report["cosine_grid"]
    assert grid["runs"] == 3 and grid["best"]["val_loss"] == min(grid["val_losses"])
    assert report["cosine_guess"]["peak_lr"] == grid["lrs"][1]  # the box's geometric middle
    (stage,) = report["autolrs"]["stages"]
    assert stage["winner_lr"] in [c["lr"] for c in stage["candidates"]]
    # The budget variant: warm-up, one search, the winner's LR decayed to almost 0.
    lrs = report["curves"]["autolrs_lr"]
    assert lrs[-1] < 0.02 * stage["winner_lr"]
    assert (out / "autolrs_demo.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "Schedule found by AutoLRS" in printed and "grid best" in printed and "3 runs" in printed


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
