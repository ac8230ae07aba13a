"""Misuse of the ``autolr`` command line: one argparse-style line, exit code 2, no work done.

Also the bench summary's honesty: a run that touches the target and ends above it is not
reported as reaching it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autolr.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def _misuse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``autolr argv``; it must exit 2 and print exactly one error line after the usage."""
    with pytest.raises(SystemExit) as exc:
        rc = main(argv)
        raise SystemExit(rc)  # errors found after parsing return 2 instead of raising
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "0"], "argument --seeds: must be an int >= 1, got 0"),
        (["--seeds", "-1"], "argument --seeds: must be an int >= 1, got -1"),
        (["--seeds", "2.5"], "argument --seeds: must be an int >= 1, got '2.5'"),
        (["--grid", "-2"], "argument --grid: must be an int >= 2, got -2"),
        (["--grid", "1"], "argument --grid: must be an int >= 2, got 1"),
        (["--jobs", "0"], "argument --jobs: must be an int >= 1, got 0"),
        (["--tasks", ","], "argument --tasks: must name at least one, got ','"),
        (["--study", "nope"], "argument --study: invalid choice: 'nope'"),
    ],
)
def test_bench_numeric_and_choice_arguments(argv, message, capsys, tmp_path) -> None:
    line = _misuse(["bench", *argv, "--out", str(tmp_path / "o")], capsys)
    assert line.startswith("autolr bench: error: " + message), line
    assert not (tmp_path / "o").exists()  # refused before any folder or run


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "quadratic,nope"], "argument --tasks: unknown task nope; choose from "),
        (["--methods", "adam"], "argument --methods: unknown method adam; choose from "),
        (["--study", "hd", "--methods", "cosine"], "argument --methods: not used by --study hd"),
        (["--study", "stn", "--grid", "3"], "argument --grid: not used by --study stn"),
        (["--study", "hd", "--rerender"], "argument --rerender: not used by --study hd"),
        (["--variants", "default"], "argument --variants: not used by --study schedules"),
        (["--study", "autolrs", "--variants", "x"], "argument --variants: unknown variant x;"),
        (["--study", "autolrs", "--tasks", "nope"], "argument --tasks: unknown task nope;"),
    ],
)
def test_bench_names_and_options_checked_for_the_study(argv, message, capsys, tmp_path) -> None:
    line = _misuse(["bench", *argv, "--out", str(tmp_path / "o")], capsys)
    assert line.startswith("autolr bench: error: " + message), line
    assert not (tmp_path / "o").exists()


def test_bench_paths(capsys, tmp_path) -> None:
    missing = tmp_path / "missing"
    line = _misuse(["bench", "--rerender", "--out", str(missing)], capsys)
    assert line == (
        f"autolr bench: error: argument --rerender: no {missing / 'results.json'} to re-render "
        "(run without --rerender first)"
    )
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    line = _misuse(["bench", "--out", str(afile)], capsys)
    assert line == f"autolr bench: error: argument --out: {str(afile)!r} exists and is not a folder"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    line = _misuse(["bench", "--rerender", "--out", str(bad)], capsys)
    assert line.startswith(f"autolr bench: error: argument --rerender: {bad / 'results.json'} ")
    (bad / "results.json").write_text(json.dumps({"something": 1}))
    line = _misuse(["bench", "--rerender", "--out", str(bad)], capsys)
    assert line.endswith("was not written by autolr bench")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "argument --steps: must be an int >= 1, got 0"),
        (["--steps", "ten"], "argument --steps: must be an int >= 1, got 'ten'"),
        (["--grid", "1"], "argument --grid: must be an int >= 2, got 1"),
        (["--seed", "-1"], "argument --seed: must be an int >= 0, got -1"),
        (["--lr-min", "0"], "argument --lr-min: must be a finite number > 0, got 0"),
        (["--lr-max", "inf"], "argument --lr-max: must be a finite number > 0, got inf"),
        (["--lr-min", "0.5", "--lr-max", "0.1"], "argument --lr-min: must be below --lr-max"),
        (["--device", "gpu"], "argument --device: must be a torch device such as cpu or cuda"),
    ],
)
def test_demo_arguments(argv, message, capsys, tmp_path) -> None:
    line = _misuse(["demo", *argv, "--out", str(tmp_path / "o")], capsys)
    assert line.startswith("autolr demo: error: " + message), line
    assert not (tmp_path / "o").exists()


def test_demo_out_is_checked_before_training(capsys, tmp_path) -> None:
    afile = tmp_path / "f"
    afile.write_text("")
    line = _misuse(["demo", "--out", str(afile)], capsys)
    assert line == f"autolr demo: error: argument --out: {str(afile)!r} exists and is not a folder"


def test_an_out_folder_that_cannot_be_created_is_an_error_before_any_work(capsys, tmp_path):
    # A folder under a file cannot be made (as root too): it ended in a raw traceback.
    afile = tmp_path / "f"
    afile.write_text("")
    out = str(afile / "sub")
    for cmd in (["demo"], ["bench", "--quick"], ["bench", "--study", "autolrs", "--quick"]):
        line = _misuse([*cmd, "--out", out], capsys)
        assert line.startswith(f"autolr {cmd[0]}: error: argument --out: cannot create {out!r}: ")


def test_demo_config_checked_for_programmatic_callers() -> None:
    import autolr
    from autolr._demo import DemoConfig

    with pytest.raises(autolr.ConfigError, match=r"DemoConfig.steps must be an int >= 1, got 0"):
        DemoConfig(steps=0)
    with pytest.raises(autolr.ConfigError, match=r"lr_bounds .* got \(0.1, 0.01\)"):
        DemoConfig(lr_bounds=(0.1, 0.01))


def test_help_shows_defaults(capsys) -> None:
    for argv, expected in (
        (["demo", "--help"], ["(default: 3000)", "(default: 5)", "(default: autolr-demo)"]),
        (["bench", "--help"], ["(default: schedules)", "(default: 3; --quick: 1", "(default: 1)"]),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
        for text in expected:
            assert text in out, (argv, text)


def test_console_exit_code_and_no_traceback(tmp_path) -> None:
    """As a user sees it: the process exits 2 with the usage and one error line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "autolr", "bench", "--seeds", "0", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        "autolr bench: error: argument --seeds: must be an int >= 1, got 0"
    )
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ the summary's wording
def _run(method: str, kind: str, evals: list[tuple[int, float]], seed: int = 0) -> dict:
    return {
        "task": "logreg",
        "method": method,
        "kind": kind,
        "seed": seed,
        "lr": None,
        "budget": 1000,
        "evals": [[s, v, True] for s, v in evals],
        "lrs": [],
        "final_val": evals[-1][1],
        "diverged": False,
        "train_time": 1.0,
        "tuner_time": 0.01,
        **({"stages": []} if kind == "autolrs" else {}),
    }


def test_summary_judges_reaching_the_target_on_the_final_val() -> None:
    """AutoLRS dips to 0.07 < target 0.08 at step 350, then ends at 0.15 (1.875x): no win."""
    from autolr.bench import report

    runs = [
        _run("cosine", "schedule", [(0, 1.0), (500, 0.2), (1000, 0.08)]),
        _run("autolrs", "autolrs", [(0, 1.0), (350, 0.07), (1000, 0.15)]),
        # a second AutoLRS-kind method that reaches the target and stays below it
        _run("autolrs-paper", "autolrs", [(0, 1.0), (500, 0.079), (1000, 0.075)]),
    ]
    summary = report.summarise(runs)
    md = report.to_markdown(
        summary, {"command": "x", "seeds": 1, "grid_size": 1, "elapsed_s": 0}, {}
    )
    row = next(ln for ln in md.splitlines() if ln.startswith("| logreg | autolrs |"))
    # first crossing at 350 of 1000 steps = 0.35x; final 0.15 / 0.08 = 1.875x
    assert "| touched the target at step 350 (0.35×) but ended at 0.15 (1.88× target) |" in row
    row = next(ln for ln in md.splitlines() if ln.startswith("| logreg | autolrs-paper |"))
    assert "| 0.50× |" in row and "touched" not in row
    tally = next(ln for ln in md.splitlines() if ln.startswith("- `autolrs` "))
    assert "ends at or below it on 0/1" in tally
    assert "first crossing ≤ 1.2× one run on 1/1, 1 of them ending above the target" in tally
    tally = next(ln for ln in md.splitlines() if ln.startswith("- `autolrs-paper` "))
    assert "ends at or below it on 1/1" in tally and "0 of them ending above" in tally
    # the per-task table marks it too, and the win column names who beats it on final val
    row = next(ln for ln in md.splitlines() if ln.startswith("| autolrs | 1 |"))
    assert "| 0.35× (ends above target) |" in row and "**loses to cosine**" in row
    row = next(ln for ln in md.splitlines() if ln.startswith("| autolrs-paper | 1 |"))
    assert "ends above" not in row and "best final val" in row
