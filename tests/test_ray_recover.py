"""Ray scheduler: a non-finite loss that left the trial's state finite cuts the box only once.

The same rule as the in-loop AutoLRS (StageSearch.recover(transient=...)): the trainable says
whether its weights and optimizer state stayed finite (``STATE_FINITE_KEY``, sent by
TuneCheckpointer with every loss); then the upper bound comes back once a stage ends with
finite losses. Without that word from the trainable, the cut stays.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytest.importorskip("ray.tune")

from ray import tune

from autolr.integrations.ray import STATE_FINITE_KEY, TuneCheckpointer

from .test_ray_scheduler import PAUSE, curve, searched


def _nan_while_exploiting(**extra):
    """Paper variant, stage 0 decided; the winner reports NaN (with ``extra``) while exploiting.

    Returns the scheduler, the controller, the box before the cut, the winner's LR and the
    warning's text.
    """
    sched, tc, owner = searched()
    winner = next(t for t in tc.trials if t.trial_id == owner)
    tc.round(curve(0.05))  # the losers pause
    box, lr = sched.search.lr_bounds, sched.winner_lr
    with pytest.warns(RuntimeWarning, match="non-finite") as record:
        assert tc.report(winner, math.nan, **extra) == PAUSE
    return sched, tc, box, lr, str(record[0].message)


def _end_stage_zero(sched, tc) -> None:
    """Search stage 0 again from its start and train the new winner to the stage end."""
    tc.resume_all()
    assert sched.phase == "search" and sched.stage == 0
    for _ in range(30):  # 5 candidate iterations + 15 exploiting, with margin
        tc.round(curve(0.05))
        if sched.stage == 1:
            return
    raise AssertionError("stage 0 did not end")


def test_nonfinite_loss_with_finite_state_cuts_the_box_until_the_stage_ends():
    sched, tc, box, lr, msg = _nan_while_exploiting(**{STATE_FINITE_KEY: True})
    assert sched.recoveries == 1 and sched.search.lr_bounds[1] <= lr / 3 * 1.0001
    assert sched.search.pending_restore == box
    assert f"returns to {box[1]:.3g}" in msg
    _end_stage_zero(sched, tc)
    assert sched.search.lr_bounds == box and sched.search.restored == 1
    assert sched.search.pending_restore is None


@pytest.mark.parametrize("extra", [{}, {STATE_FINITE_KEY: False}], ids=["no key", "not finite"])
def test_nonfinite_loss_without_a_finite_state_keeps_the_cut(extra):
    sched, tc, box, lr, msg = _nan_while_exploiting(**extra)
    assert sched.search.pending_restore is None and "returns to" not in msg
    _end_stage_zero(sched, tc)
    assert sched.search.lr_bounds[1] <= lr / 3 * 1.0001 < box[1]
    assert sched.search.restored == 0


def test_a_provisional_cut_survives_a_scheduler_state_round_trip():
    sched, _, box, _, _ = _nan_while_exploiting(**{STATE_FINITE_KEY: True})
    other, _, _ = searched()
    other.load_state_dict(sched.state_dict())
    assert other.search.pending_restore == box


def _glitching(config):
    """Iteration 2: a bad batch (NaN loss, step skipped); iteration 3: the weights go NaN."""
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    ckpt = TuneCheckpointer(model, opt, config, rng=False)
    while ckpt.iteration < 4:
        if ckpt.iteration == 1:
            ckpt.report(math.nan)  # as a GradScaler-skipped step: the weights are untouched
            continue
        if ckpt.iteration == 2:
            with torch.no_grad():
                model.weight.fill_(math.nan)
        loss = model(torch.ones(1, 2)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ckpt.report(loss)


@pytest.mark.slow
def test_tune_checkpointer_reports_whether_the_state_is_finite(ray_session, tmp_path):
    grid = tune.Tuner(
        tune.with_resources(_glitching, {"cpu": 0.5}),
        param_space={"lr": 0.1},
        run_config=tune.RunConfig(name="finite", storage_path=str(tmp_path), verbose=0),
    ).fit()
    (result,) = grid
    assert result.error is None
    df = result.metrics_dataframe
    assert list(df[STATE_FINITE_KEY]) == [True, True, False, False]
    assert [math.isfinite(v) for v in df["loss"]] == [True, False, False, False]
