"""Every runnable example in ``examples/`` runs end to end at a small size, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: int = 300) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def test_hypergradient_example() -> None:
    out = _run("hypergradient.py", "--steps", "100", "--boost", "10")
    assert "plain AdamW" in out and "HD (multiplicative" in out
    assert "non-finite hypergradients: 0" in out


def test_stn_example() -> None:
    out = _run("stn.py", "--steps", "150")
    assert "hyper steps" in out and "replayed schedule" in out


def test_optuna_example(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    out = _run("optuna_search.py", "--trials", "4", "--storage", str(tmp_path / "journal.log"))
    assert "4 trials" in out and "best validation loss" in out


@pytest.mark.slow
def test_ray_tune_example() -> None:
    pytest.importorskip("ray.tune")
    out = _run("ray_tune.py", "--trials", "2", "--iters", "24", timeout=600)
    assert "winner" in out and "schedule" in out


def test_lightning_example() -> None:
    pytest.importorskip("lightning")
    out = _run("lightning_autolrs.py", "--steps", "200")
    assert "search at step" in out and "identical run: True" in out


def test_hf_trainer_example() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    out = _run("hf_trainer_autolrs.py", "--steps", "100")
    assert "search at step" in out and "identical run: True" in out
