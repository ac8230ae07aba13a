"""AutoLRS under torch.distributed: two CPU processes (gloo), one decision for both ranks.

Each rank trains a DDP-wrapped model on its own data (different inputs and targets), so the
ranks' losses differ; the tuner must average them, decide identically on both ranks and
restore each rank's snapshots, leaving identical LRs and weights. One spawn runs three
configurations to keep the test short (two processes start once).
"""

from __future__ import annotations

import datetime
import json
import math
import pathlib
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from autolr import AutoLRS, ConfigTypeError, StateError


def _train(
    rank: int, tuner_kw: dict, *, tensor_loss: bool, val: bool, skip_at: int | None = None,
    save: str | None = None,
) -> dict:  # fmt: skip
    """One rank's run. ``skip_at``: at that loop iteration neither rank steps the optimizer,
    and only rank 0 reports the step as skipped (as a rank-local GradScaler check would).
    ``save``: rank 0 saves its tuner's state there at the end."""
    torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts them)
    model = DDP(nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
    xv = torch.randn(32, 4, generator=torch.Generator().manual_seed(7 + rank))

    val_calls: list[float] = []

    def val_fn() -> torch.Tensor:  # a rank-dependent validation loss: averaged by the tuner
        out = (model.module(xv) - xv.sum(1, keepdim=True) * (1 + rank)).pow(2).mean()
        val_calls.append(float(out))
        return out

    tuner = AutoLRS(model, opt, **tuner_kw, val_fn=val_fn if val else None)
    local = []
    while not tuner.done:
        x = torch.randn(16, 4, generator=data)
        loss = (model(x) - x.sum(1, keepdim=True) * (1 + rank)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        skip = len(local) == skip_at
        if not skip:
            opt.step()
        local.append(loss.item())
        tuner.step(loss if tensor_loss else loss.item(), skipped=skip and rank == 0)
    if save is not None and rank == 0:
        torch.save(tuner.state_dict(), save)
    h = tuner.history
    return {
        "lrs": [r.lr for r in h],
        "losses": [r.loss for r in h],
        "phases": [r.phase for r in h],
        "local": local,
        "weights": [float(v) for v in model.module.weight.detach().flatten()]
        + [float(model.module.bias.detach())],
        "candidates": [len(s.candidates) for s in tuner.stages],
        "export": tuner.export_schedule().per_step(),
        "val_calls": val_calls,
        "scores": [c.forecast for st in tuner.stages for c in st.candidates],
        "skipped_steps": tuner.skipped_steps,
    }


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )  # fmt: skip
    try:
        res = {
            "budget": _train(rank, {"lr_bounds": (1e-3, 0.3), "max_steps": 80},
                             tensor_loss=True, val=False, save=f"{out}/budget_tuner.pt"),
            "paper": _train(rank, {"lr_bounds": (1e-3, 0.3), "variant": "paper", "tau": 20,
                                   "tau_prime": 4, "k": 3, "max_steps": 40, "sync_every": 4},
                            tensor_loss=True, val=True),
            "budget-val": _train(rank, {"lr_bounds": (1e-3, 0.3), "max_steps": 80},
                                 tensor_loss=False, val=True, skip_at=10),
        }  # fmt: skip
        # Built with other arguments on rank 1: the first step's check must refuse on both.
        try:
            _train(rank, {"lr_bounds": (1e-3, 0.3 if rank == 0 else 0.1), "max_steps": 100},
                   tensor_loss=False, val=False)  # fmt: skip
            res["mismatch"] = ""
        except StateError as exc:
            res["mismatch"] = str(exc)
        (pathlib.Path(out) / f"r{rank}.json").write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


def _spawn_ranks(tmp_path: pathlib.Path) -> pathlib.Path:
    """Runs both ranks; returns the folder holding their results.

    A rank process sometimes aborts after its work is done, in gloo's teardown at exit
    ("terminate called without an active exception", SIGABRT; a known PyTorch issue, seen in
    about one full-suite run in ten under load). That is not the tuner's failure: it is
    accepted once the aborted rank has written its results. If the abort cut the other rank
    short, both run again once. An abort before the aborted rank's results exist fails.
    """
    for attempt in range(2):
        out = tmp_path / f"run{attempt}"
        out.mkdir()
        try:
            mp.spawn(_worker, args=(2, f"file://{out}/rdzv", str(out)), nprocs=2, join=True)
        except mp.ProcessExitedException as exc:
            if exc.signal_name != "SIGABRT" or not (out / f"r{exc.error_index}.json").exists():
                raise
        if all((out / f"r{i}.json").exists() for i in range(2)):
            return out
    raise AssertionError("both attempts lost a rank to gloo's teardown abort")


def test_two_ranks_take_one_decision(tmp_path) -> None:
    out = _spawn_ranks(tmp_path)
    r0, r1 = (json.loads((out / f"r{i}.json").read_text()) for i in range(2))
    for name in ("budget", "paper"):
        a, b = r0[name], r1[name]
        assert a["local"] != b["local"]  # the ranks saw different data
        assert a["lrs"] == b["lrs"] and a["phases"] == b["phases"]
        assert a["weights"] == b["weights"]
        assert a["export"] == b["export"]
        assert "search" in a["phases"] and len(a["export"]) < len(a["lrs"])  # restores ran
        # the tuner saw the mean of the ranks' losses (float32 read-back when deferred)
        for t, loss in enumerate(a["losses"]):
            assert loss == pytest.approx((a["local"][t] + b["local"][t]) / 2, rel=1e-6)
    # The budget variant scores a candidate by its validation loss at the end of its window:
    # the mean of the ranks' val_fn values, the same on every rank.
    a, b = r0["budget-val"], r1["budget-val"]
    assert a["scores"] == b["scores"] and len(a["scores"]) == 4
    assert len(a["val_calls"]) == len(b["val_calls"]) == 4
    assert a["val_calls"] != b["val_calls"]  # rank-dependent
    for score, va, vb in zip(a["scores"], a["val_calls"], b["val_calls"]):
        assert score == pytest.approx((va + vb) / 2, rel=1e-6)
    # A step skipped on rank 0 only is skipped on both (the ranks OR their verdicts): not
    # counted, so each rank's loop ran one more time than the budget.
    assert a["skipped_steps"] == b["skipped_steps"] == 1
    assert len(a["lrs"]) == 80 and len(a["local"]) == 81 and a["weights"] == b["weights"]
    assert r0["budget"]["skipped_steps"] == 0
    assert r0["budget"]["candidates"] == [4]
    assert r0["paper"]["candidates"][0] == 3
    for r in (r0, r1):
        assert "ranks of the process group disagree" in r["mismatch"]
    # A tuner checkpoint taken under DDP resumes in one process on the bare model: the
    # snapshots keep the module's own names, without DDP's "module." prefix.
    state = torch.load(out / "budget_tuner.pt", weights_only=True)
    assert list(state["snapshot"]["state"]["model"]) == ["weight", "bias"]
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    alone = AutoLRS(model, opt, lr_bounds=(1e-3, 0.3), max_steps=80)
    alone.load_state_dict(state)
    assert alone.done and alone.schedule == r0["budget"]["lrs"]


def test_process_group_misuse() -> None:
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigTypeError, match="process_group must be None"):
        AutoLRS(model, opt, max_steps=100, process_group=True)
    with pytest.raises(ConfigTypeError, match=r"while torch\.distributed is not initialised"):
        AutoLRS(model, opt, max_steps=100, process_group=object())
    # not initialised: None and False both tune alone
    assert AutoLRS(model, opt, max_steps=100)._sync is None
    assert not math.isnan(AutoLRS(model, opt, max_steps=100, process_group=False).lr)
