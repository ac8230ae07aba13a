"""AutoLRSCallback under a real ``lightning.Trainer.fit`` on CPU (tiny models, few steps)."""

from __future__ import annotations

import csv
import math
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

# Lightning 2.6's own deprecation notices (torch's pytree API).
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")
L = pytest.importorskip("lightning")
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.plugins.precision import MixedPrecision  # noqa: E402

from autolr import (  # noqa: E402
    AutoLRS,
    ConfigError,
    ConfigTypeError,
    HypergradientLR,
    StateError,
    stn,
)
from autolr.integrations.lightning import AutoLRSCallback  # noqa: E402

N = 90  # budget: warm-up, one search of 4 candidates, exploitation and decay
BOUNDS = (1e-3, 0.5)

X = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
Y = torch.tanh(X.sum(1, keepdim=True))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def _loader(batch: int = 8) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=batch)


class Reg(L.LightningModule):
    """Regression with a configurable optimizer; records every micro-batch loss."""

    def __init__(self, make_opt: Any = None) -> None:
        super().__init__()
        self.net = _net()
        self.make_opt = make_opt or (
            lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        )
        self.losses: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = (self.net(x) - y).pow(2).mean()
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self) -> Any:
        return self.make_opt(self)


def _trainer(cb: Any, *extra: Any, max_steps: int = N, **kw: Any) -> Any:
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(
        max_steps=max_steps,
        callbacks=[cb, *extra],
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def _plain_run(steps: int = N) -> tuple[nn.Module, AutoLRS]:
    """The same problem in a hand-written loop with the in-loop tuner (the oracle)."""
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    tuner = AutoLRS(net, opt, lr_bounds=BOUNDS, max_steps=steps)
    done = 0
    while done < steps:
        for x, y in _loader():
            loss = (net(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            tuner.step(loss.item())
            done += 1
            if done == steps:
                break
    return net, tuner


def test_same_schedule_and_weights_as_the_plain_loop() -> None:
    net, plain = _plain_run()
    module, cb = Reg(), AutoLRSCallback(lr_bounds=BOUNDS)
    _trainer(cb).fit(module, _loader())
    tuner = cb.tuner
    assert tuner is not None and tuner.done and len(plain.stages) == 1
    assert len(tuner.stages[0].candidates) == 4
    assert tuner.schedule == plain.schedule
    assert [r.loss for r in tuner.history] == [r.loss for r in plain.history]
    assert tuner.stages == plain.stages
    for a, b in zip(module.net.parameters(), net.parameters()):
        assert torch.equal(a, b)


def test_several_param_groups_keep_their_ratio_and_run_the_schedule() -> None:
    def two_groups(m: Reg) -> torch.optim.Optimizer:
        first, last = m.net[0], m.net[2]
        return torch.optim.Adam(
            [{"params": first.parameters(), "lr": 0.01}, {"params": last.parameters(), "lr": 0.001}]
        )

    module, cb = Reg(two_groups), AutoLRSCallback(lr_bounds=BOUNDS)
    seen: list[list[float]] = []
    hook = _StepLRs(seen)
    _trainer(cb, hook).fit(module, _loader())
    assert len(seen) == N
    assert [s[0] for s in seen] == cb.tuner.schedule  # group 0 ran the tuner's LR each step
    for s in seen:
        assert s[1] == pytest.approx(s[0] * 0.1, rel=1e-12)


class _StepLRs(L.Callback):
    """Records the optimizer's group LRs at every optimizer.step()."""

    def __init__(self, out: list[list[float]]) -> None:
        self.out = out

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        opt = trainer.optimizers[0]
        opt.register_step_pre_hook(
            lambda o, a, k: self.out.append([g["lr"] for g in o.param_groups])
        )


def test_gradient_accumulation_feeds_the_window_mean_once_per_step() -> None:
    module, cb = Reg(), AutoLRSCallback(lr_bounds=BOUNDS)
    _trainer(cb, accumulate_grad_batches=2).fit(module, _loader())
    tuner = cb.tuner
    assert tuner.global_step == N and tuner.done
    micro = module.losses
    assert len(micro) == 2 * N
    expected = [(micro[2 * i] + micro[2 * i + 1]) / 2 for i in range(N)]
    assert [r.loss for r in tuner.history] == pytest.approx(expected, rel=1e-6)


class _InfAt(Reg):
    """Makes the loss (hence the gradients) infinite at some optimizer steps."""

    def __init__(self, bad: set[int]) -> None:
        super().__init__()
        self.bad = bad

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.trainer.global_step in self.bad:
            loss = loss * float("inf")
        return loss


def test_amp_skipped_steps_are_reported_as_skipped() -> None:
    bad = {10, 30}
    module, cb = _InfAt(bad), AutoLRSCallback(lr_bounds=BOUNDS)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(cb, plugins=[plugin]).fit(module, _loader())
    # No non-finite-loss recovery; the one RuntimeWarning says the decay was cut short, as
    # the Trainer counted the skipped steps (the docstring: give it a few more under AMP).
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(said) == 1 and "ended at tuner step 88 of max_steps=90" in said[0], said
    assert "2 step(s) the Trainer counted were skipped" in said[0]
    tuner = cb.tuner
    assert tuner.skipped_steps == 2
    assert tuner.global_step == N - 2  # the Trainer counted them, the tuner did not
    assert all(math.isfinite(r.loss) for r in tuner.history)
    assert tuner.recoveries == 0 and tuner.skipped_losses == 0
    assert scaler.get_scale() < 2.0**10  # the scaler really skipped


class _NoneAt(Reg):
    """training_step returns None (Lightning's way to skip a batch) at some calls."""

    def __init__(self, at: set[int]) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        self.calls += 1
        loss = super().training_step(batch, batch_idx)
        return None if self.calls in self.at else loss


@pytest.mark.filterwarnings("ignore:`training_step` returned `None`")
def test_a_batch_training_step_skipped_is_a_skipped_step() -> None:
    module, cb = _NoneAt({5, 50}), AutoLRSCallback(lr_bounds=BOUNDS)
    with pytest.warns(RuntimeWarning, match="ended at tuner step 88 of max_steps=90"):
        _trainer(cb).fit(module, _loader())
    assert cb.tuner.skipped_steps == 2 and cb.tuner.global_step == N - 2
    assert all(math.isfinite(r.loss) for r in cb.tuner.history)


class _TwoOpts(L.LightningModule):
    """Manual optimisation with two optimizers (e.g. a GAN's two players)."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.a, self.b = _net(), nn.Linear(8, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        oa, ob = self.optimizers()
        la = (self.a(x) - y).pow(2).mean()
        oa.zero_grad()
        self.manual_backward(la)
        oa.step()
        lb = (self.b(x) - y).pow(2).mean()
        ob.zero_grad()
        self.manual_backward(lb)
        ob.step()
        return lb.detach()  # the tuned optimizer's loss

    def configure_optimizers(self) -> Any:
        return [
            torch.optim.SGD(self.a.parameters(), lr=0.01),
            torch.optim.SGD(self.b.parameters(), lr=0.02),
        ]


def test_several_optimizers_need_optimizer_idx() -> None:
    with pytest.raises(ConfigError, match=r"2 optimizers.*optimizer_idx"):
        _trainer(AutoLRSCallback(lr_bounds=BOUNDS), max_steps=2 * N).fit(_TwoOpts(), _loader())
    with pytest.raises(ConfigError, match="optimizer_idx=2 is out of range"):
        cb = AutoLRSCallback(lr_bounds=BOUNDS, optimizer_idx=2)
        _trainer(cb, max_steps=2 * N).fit(_TwoOpts(), _loader())


def test_optimizer_idx_tunes_that_optimizer_only() -> None:
    module, cb = _TwoOpts(), AutoLRSCallback(lr_bounds=BOUNDS, optimizer_idx=1, max_steps=N)
    # Lightning counts both optimizers' steps in global_step.
    _trainer(cb, max_steps=2 * N).fit(module, _loader())
    opt_a, opt_b = (o.optimizer if hasattr(o, "optimizer") else o for o in module.optimizers())
    assert cb.tuner.done and cb.tuner.global_step == N
    assert opt_a.param_groups[0]["lr"] == 0.01  # untouched
    assert cb.tuner.optimizer is opt_b


def test_configured_scheduler_is_an_error_at_fit_start() -> None:
    def with_sched(m: Reg) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.01)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 10)}

    module = Reg(with_sched)
    with pytest.raises(ConfigError, match=r"LR scheduler\(s\) \['StepLR'\]"):
        _trainer(AutoLRSCallback(lr_bounds=BOUNDS)).fit(module, _loader())
    assert module.losses == []  # raised before any step


class _Backbone(Reg):
    """``BackboneFinetuning``'s contract: a ``backbone``, an optimizer of trainable params."""

    def __init__(self) -> None:
        super().__init__(
            lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01)
        )
        self.backbone = self.net[0]


def test_a_param_group_added_during_the_fit_is_refused_at_the_next_step() -> None:
    """BackboneFinetuning unfreezes by ``optimizer.add_param_group``; the tuner's snapshots
    cannot restore a group added after they were taken: refused at once, not inside torch."""
    from lightning.pytorch.callbacks import BackboneFinetuning

    module = _Backbone()
    unfreeze = BackboneFinetuning(unfreeze_backbone_at_epoch=1)
    cb = AutoLRSCallback(lr_bounds=BOUNDS)
    with pytest.raises(ConfigError, match=r"now has 2 parameter group\(s\); it had 1"):
        _trainer(cb, unfreeze, max_steps=200).fit(module, _loader())
    assert cb.tuner.global_step == len(X) // 8  # the first epoch, then the refusal


def test_budget_comes_from_max_steps() -> None:
    with pytest.raises(ConfigError, match="needs a budget"):
        L.Trainer(
            max_epochs=1,
            callbacks=[AutoLRSCallback(lr_bounds=BOUNDS)],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            accelerator="cpu",
        ).fit(Reg(), _loader())
    with pytest.raises(ConfigTypeError, match="passes the LightningModule"):
        AutoLRSCallback(model=nn.Linear(1, 1))
    # Refused when built, not at fit start.
    with pytest.raises(ConfigError, match="max_steps must be an int >= 1, got 0"):
        AutoLRSCallback(max_steps=0)
    with pytest.raises(ConfigTypeError, match="max_steps must be an int"):
        AutoLRSCallback(max_steps=90.0)


def test_lr_is_logged_to_the_trainers_logger(tmp_path: Path) -> None:
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="run")
    module, cb = Reg(), AutoLRSCallback(lr_bounds=BOUNDS)
    _trainer(cb, logger=logger, log_every_n_steps=1).fit(module, _loader())
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [float(r["autolrs/lr"]) for r in rows if r.get("autolrs/lr")]
    assert logged == pytest.approx(cb.tuner.schedule, rel=1e-6)
    assert len(logged) == N


class _Kill(L.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == self.at:
            raise RuntimeError("killed")


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_killed_mid_stage_and_resumed_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    def adam(m: Reg) -> torch.optim.Optimizer:
        return torch.optim.Adam(m.parameters(), lr=0.01)

    ref, ref_cb = Reg(adam), AutoLRSCallback(lr_bounds=BOUNDS)
    _trainer(ref_cb).fit(ref, _loader())

    # Checkpoints at epoch ends (8 batches an epoch): a plain DataLoader restarts its epoch
    # on a mid-epoch resume. Step 16 is in the middle of the search (candidate 2 of 4).
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=16, save_top_k=-1)
    killed, cb = Reg(adam), AutoLRSCallback(lr_bounds=BOUNDS)
    with pytest.raises(RuntimeError, match="killed"):
        _trainer(cb, ckpt, _Kill(20), enable_checkpointing=True).fit(killed, _loader())
    path = tmp_path / "epoch=1-step=16.ckpt"
    saved = torch.load(path, weights_only=True)["callbacks"]
    state = next(v for k, v in saved.items() if "AutoLRSCallback" in k)
    assert state["tuner"]["phase"] == "search" and state["tuner"]["global_step"] == 16

    resumed, cb2 = Reg(adam), AutoLRSCallback(lr_bounds=BOUNDS)
    _trainer(cb2).fit(resumed, _loader(), ckpt_path=str(path))
    assert cb2.tuner.done
    assert cb2.tuner.schedule == ref_cb.tuner.schedule
    assert cb2.tuner.stages == ref_cb.tuner.stages
    for a, b in zip(resumed.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def _autolr_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("AutoLRSCallback")]


def test_a_trainer_that_stops_before_the_budget_warns_once_at_fit_start() -> None:
    # accumulate_grad_batches=2: 20 epochs of 8 batches are 80 optimizer steps, not 160.
    cases = [
        ({"max_steps": -1, "max_epochs": 20, "accumulate_grad_batches": 2}, N, 80),
        ({"max_epochs": 2}, None, 16),  # max_epochs stops Trainer(max_steps=N) first
        ({}, 200, N),  # AutoLRSCallback(max_steps=200) beyond Trainer(max_steps=N)
    ]
    for kw, budget, most in cases:
        module, cb = Reg(), AutoLRSCallback(lr_bounds=BOUNDS, max_steps=budget)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _trainer(cb, **kw).fit(module, _loader())
        said = _autolr_warnings(caught)
        assert len(said) == 1, (kw, said)  # not said again at the end of the fit
        assert f"stops after at most {most} optimizer steps" in said[0], said
        assert f"max_steps={budget or N}" in said[0]
        assert cb.tuner.global_step == most and not cb.tuner.done
    # Enough steps (12 epochs of 8 batches, capped by max_steps=N): nothing said.
    cb = AutoLRSCallback(lr_bounds=BOUNDS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _trainer(cb, max_epochs=12).fit(Reg(), _loader())
    assert cb.tuner.done


class _StopAt(L.Callback):
    """Stops the fit as EarlyStopping or max_time do (trainer.should_stop)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == self.at:
            trainer.should_stop = True


def test_a_fit_stopped_early_warns_once_at_its_end() -> None:
    cb = AutoLRSCallback(lr_bounds=BOUNDS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(cb, _StopAt(30)).fit(Reg(), _loader())
    said = _autolr_warnings(caught)
    assert len(said) == 1, said
    assert f"ended at tuner step {cb.tuner.global_step} of max_steps={N}" in said[0]
    assert "the Trainer stopped first" in said[0]
    # A fit ended by an error says nothing more than the error.
    cb = AutoLRSCallback(lr_bounds=BOUNDS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="killed"):
            _trainer(cb, _Kill(30)).fit(Reg(), _loader())
    assert _autolr_warnings(caught) == []


def test_resume_from_a_checkpoint_without_the_callback_state_is_an_error(tmp_path: Path) -> None:
    """Lightning calls load_state_dict only when the checkpoint has the callback's state_key;
    without it a fresh tuner would silently restart its schedule mid-run."""
    plain = _trainer(L.Callback(), max_steps=8)
    plain.fit(Reg(), _loader())
    plain.save_checkpoint(tmp_path / "plain.ckpt")
    module = Reg()
    with pytest.raises(
        StateError, match=r"resumes at step 8, .*no AutoLRSCallback state.*saved without"
    ):
        _trainer(AutoLRSCallback(lr_bounds=BOUNDS)).fit(
            module, _loader(), ckpt_path=str(tmp_path / "plain.ckpt")
        )
    assert module.losses == []  # raised before any step

    # A second fit() on the same Trainer continues its steps: no tuner state to go on from.
    trainer = _trainer(AutoLRSCallback(lr_bounds=BOUNDS))
    trainer.fit(Reg(), _loader())
    trainer.fit_loop.epoch_loop.max_steps = N + 8
    with pytest.raises(StateError, match=f"already taken {N} steps"):
        trainer.fit(Reg(), _loader())


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_resume_with_another_optimizer_idx_names_the_saved_state_key(tmp_path: Path) -> None:
    cb = AutoLRSCallback(lr_bounds=BOUNDS, max_steps=N)
    trainer = _trainer(cb, max_steps=8)
    with pytest.warns(RuntimeWarning, match="stops after at most 8 optimizer steps"):
        trainer.fit(Reg(), _loader())
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    other = AutoLRSCallback(lr_bounds=BOUNDS, optimizer_idx=0)
    saved = re.escape(repr([cb.state_key]))
    with pytest.raises(StateError, match=rf"{re.escape(repr(other.state_key))} \(it holds {saved}"):
        _trainer(other).fit(Reg(), _loader(), ckpt_path=str(tmp_path / "run.ckpt"))


class _RawManual(Reg):
    """Manual optimisation stepping the torch optimizer, not Lightning's wrapper of it."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers(use_pl_optimizer=False)
        loss = super().training_step(batch, batch_idx)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return loss.detach()


def test_manual_optimisation_stepping_the_raw_optimizer_is_refused() -> None:
    module, cb = _RawManual(), AutoLRSCallback(lr_bounds=BOUNDS)
    with pytest.raises(ConfigError, match=r"use_pl_optimizer=False.*LightningOptimizer"):
        _trainer(cb, max_epochs=12).fit(module, _loader())
    assert len(module.losses) == 1 and cb.tuner.global_step == 0  # at the first step


def test_stochastic_weight_averaging_is_refused_at_fit_start() -> None:
    from lightning.pytorch.callbacks import StochasticWeightAveraging

    module = Reg()
    swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2)
    with pytest.raises(ConfigError, match="StochasticWeightAveraging sets the LR"):
        _trainer(AutoLRSCallback(lr_bounds=BOUNDS), swa).fit(module, _loader())
    assert module.losses == []


class _AddScheduler(L.Callback):
    """Installs an LR scheduler at the start of epoch 1, as StochasticWeightAveraging does."""

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        from lightning.pytorch.utilities.types import LRSchedulerConfig

        if trainer.current_epoch == 1:
            sched = torch.optim.lr_scheduler.StepLR(trainer.optimizers[0], 10)
            trainer.strategy.lr_scheduler_configs.append(LRSchedulerConfig(sched))


def test_a_scheduler_added_during_the_fit_is_refused_at_the_next_batch() -> None:
    # Added by a callback that runs after AutoLRSCallback's own epoch-start hooks.
    cb = AutoLRSCallback(lr_bounds=BOUNDS)
    with pytest.raises(ConfigError, match=r"\['StepLR'\] were added to the Trainer during"):
        _trainer(cb, _AddScheduler()).fit(Reg(), _loader())
    assert cb.tuner.global_step == len(X) // 8  # the first epoch, then the refusal


def test_hypergradient_lr_recipe_matches_the_plain_loop() -> None:
    """HypergradientLR is an optimizer: return it from configure_optimizers, no callback."""

    def hd(m: Any) -> torch.optim.Optimizer:
        return HypergradientLR(torch.optim.SGD(m.parameters(), lr=0.01), lr_bounds=(0.0, 1.0))

    class Plain(Reg):
        def configure_optimizers(self) -> Any:
            return hd(self)

    module = Plain()
    L.Trainer(
        max_steps=30,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    ).fit(module, _loader())
    net = _net()
    opt = hd(net)
    done = 0
    while done < 30:
        for x, y in _loader():
            loss = (net(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == 30:
                break
    lit = module.trainer.optimizers[0]
    assert lit.lr_trace == opt.lr_trace and len(opt.lr_trace) == 30
    assert lit.lrs != [0.01]  # it adapted
    for a, b in zip(module.net.parameters(), net.parameters()):
        assert torch.equal(a, b)


def test_without_lightning_the_import_error_names_the_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys\nsys.modules['lightning'] = None\n"
        "try:\n    import autolr.integrations.lightning\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "autolr[lightning]"' in out.stdout, out.stdout + out.stderr


_DDP_SCRIPT = """
import json, os, sys
import torch, lightning as L
from torch import nn
from autolr.integrations.lightning import AutoLRSCallback

torch.set_num_threads(1)
X = torch.randn(128, 8, generator=torch.Generator().manual_seed(1))
Y = torch.tanh(X.sum(1, keepdim=True))


class Reg(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        self.losses = []

    def training_step(self, b, i):
        x, y = b
        loss = (self.net(x) - y).pow(2).mean()
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


cb = AutoLRSCallback(lr_bounds=(1e-3, 0.5))
tr = L.Trainer(max_steps=90, callbacks=[cb], accelerator="cpu", devices=2, strategy="ddp",
               logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False)
m = Reg()
tr.fit(m, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=8))
t = cb.tuner
with open(f"{sys.argv[1]}/rank{tr.global_rank}.json", "w") as f:
    json.dump({"schedule": t.schedule, "seen": [r.loss for r in t.history], "own": m.losses,
               "stages": len(t.stages), "done": t.done,
               "w": [p.detach().flatten().tolist() for p in m.parameters()]}, f)
# Both files are written before either rank leaves. Lightning leaves the process group alive,
# and C++ destructors at interpreter exit may abort ("terminate called without an active
# exception", SIGABRT, seen in CI even after destroy_process_group), a known PyTorch teardown
# issue unrelated to the tuner: leave with os._exit once the results are on disk.
torch.distributed.barrier()
torch.distributed.destroy_process_group()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


@pytest.mark.slow
def test_ddp_two_ranks_one_schedule(tmp_path: Path) -> None:
    """strategy="ddp" on CPU (2 processes, gloo): one decision, identical weights (about 15 s)."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_fit.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["done"] and r0["stages"] == 1
    assert r0["schedule"] == r1["schedule"] and len(r0["schedule"]) == 90
    assert r0["w"] == r1["w"]
    assert r0["own"] != r1["own"]  # the ranks saw different batches...
    # ...and the tuner saw their mean (search restores do not rewind the loaders).
    mean = [(a + b) / 2 for a, b in zip(r0["own"], r1["own"])]
    assert r0["seen"] == pytest.approx(mean, rel=1e-6) and r0["seen"] == r1["seen"]


class _STNModule(L.LightningModule):
    """Recipe: an ``autolr.stn`` tuner inside Lightning (manual optimisation, no callback).

    STN alternates its own weight and hyper steps, so ``training_step`` hands it the batch;
    Lightning supplies the loop, devices, logging and checkpoints (``on_save_checkpoint``).
    """

    def __init__(self, val: list[Any]) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net, self.space, opt = _stn_parts()
        self.stn = stn.STNTuner(self.net, self.space, nn.functional.mse_loss, opt, train_steps=2)
        self.val = val

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.log("stn/loss", self.stn.step(batch, self.val), on_step=True, batch_size=1)

    def configure_optimizers(self) -> Any:
        return [self.stn.optimizer, self.stn.hyper_optimizer]  # checkpointed by Lightning

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stn"] = self.stn.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.stn.load_state_dict(checkpoint["stn"])


def _stn_parts() -> tuple[nn.Module, Any, torch.optim.Optimizer]:
    torch.manual_seed(0)
    space = stn.HyperSpace().add("drop", 0.1, low=0.0, high=0.9)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 1))
    stn.convert(net, space, dropout={"2": "drop"})
    return net, space, torch.optim.SGD(net.parameters(), lr=0.05)


def test_stn_recipe_matches_the_plain_loop(tmp_path: Path) -> None:
    val = [(X[:32], Y[:32])]
    module = _STNModule(val)
    torch.manual_seed(1)
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, _loader())
    net, space, opt = _stn_parts()
    plain = stn.STNTuner(net, space, nn.functional.mse_loss, opt, train_steps=2)
    torch.manual_seed(1)
    for _ in range(3):
        for batch in _loader():
            plain.step(batch, val)
    assert module.stn.hyper_steps == plain.hyper_steps == 12
    assert module.stn.schedule().per_step("drop") == plain.schedule().per_step("drop")
    # The checkpoint carries the STN state (weights_only-safe) and on_load_checkpoint reads it.
    trainer.save_checkpoint(tmp_path / "stn.ckpt")
    fresh = _STNModule(val)
    fresh.on_load_checkpoint(torch.load(tmp_path / "stn.ckpt", weights_only=True))
    assert fresh.stn.hyper_steps == 12
    assert fresh.stn.schedule().per_step("drop") == plain.schedule().per_step("drop")
    for a, b in zip(module.net.parameters(), net.parameters()):
        assert torch.equal(a, b)
