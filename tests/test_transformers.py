"""AutoLRSTrainerCallback under a real transformers ``Trainer`` on CPU.

The model is a one-layer GPT-2 built from a config (nothing downloaded), without dropout so
runs are deterministic.
"""

from __future__ import annotations

import gc
import warnings
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments  # noqa: E402

from autolr import AutoLRS, ConfigError, ConfigTypeError, StateError  # noqa: E402
from autolr.integrations.transformers import STATE_FILE, AutoLRSTrainerCallback  # noqa: E402

N = 90
BOUNDS = (1e-3, 1.0)


class Toy(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.x = torch.randint(0, 64, (64, 16), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.x[i]}


def _model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    return GPT2LMHeadModel(cfg)


def _trainer(out: Path, **kw: Any) -> Trainer:
    args: dict[str, Any] = {
        "output_dir": str(out),
        "max_steps": N,
        "per_device_train_batch_size": 8,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "logging_steps": 1,
        "logging_nan_inf_filter": False,
        "lr_scheduler_type": "constant",
        "optim": "sgd",
        "learning_rate": 0.01,
        "max_grad_norm": 0.0,
        "seed": 0,
    }
    args.update(kw)
    return Trainer(model=_model(), args=TrainingArguments(**args), train_dataset=Toy())


class _Recorder:
    """Wraps training_step (outside the callback's wrapper) to record what the Trainer fed."""

    def __init__(self, trainer: Trainer) -> None:
        self.batches: list[tuple[dict[str, torch.Tensor], Any]] = []
        self.lrs: list[list[float]] = []
        step = trainer.training_step

        def training_step(model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            self.batches.append(({k: v.clone() for k, v in inputs.items()}, num_items_in_batch))
            return step(model, inputs, num_items_in_batch)

        trainer.training_step = training_step


def test_same_schedule_and_weights_as_the_plain_loop(tmp_path: Path) -> None:
    tr = _trainer(tmp_path)
    cb = AutoLRSTrainerCallback(tr, lr_bounds=BOUNDS)
    rec = _Recorder(tr)
    used: list[float] = []
    tr.add_callback(_LRAtStep(used))
    tr.train()
    tuner = cb.tuner
    assert tuner.done and len(tuner.stages) == 1 and len(tuner.stages[0].candidates) == 4
    assert used == tuner.schedule  # the optimizer the Trainer stepped ran the tuner's LRs
    logged = [h["learning_rate"] for h in tr.state.log_history if "learning_rate" in h]
    assert logged == tuner.schedule  # the pass-through scheduler logs the real LR

    # Plain loop over the same batches (the Trainer's loader does not rewind on restores).
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    plain = AutoLRS(model, opt, lr_bounds=BOUNDS, max_steps=N)
    assert len(rec.batches) == N
    for inputs, n in rec.batches:
        model.train()
        loss = tr.compute_loss(model, inputs, num_items_in_batch=n)
        opt.zero_grad()
        loss.backward()
        opt.step()
        plain.step(loss.item())
    assert tuner.schedule == plain.schedule
    assert [r.loss for r in tuner.history] == [r.loss for r in plain.history]
    assert tuner.stages == plain.stages
    for a, b in zip(tr.model.parameters(), model.parameters()):
        assert torch.equal(a, b)


class _LRAtStep(transformers.TrainerCallback):
    def __init__(self, out: list[float]) -> None:
        self.out = out

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # After optimizer.step(), before the scheduler: the LR that step used.
        self.out.append(kw["optimizer"].param_groups[0]["lr"])


def test_gradient_accumulation_feeds_one_loss_per_step(tmp_path: Path) -> None:
    tr = _trainer(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    cb = AutoLRSTrainerCallback(tr, lr_bounds=BOUNDS)
    tr.train()
    tuner = cb.tuner
    assert tuner.global_step == N and tuner.done
    logged = [h["loss"] for h in tr.state.log_history if "loss" in h]
    assert [r.loss for r in tuner.history] == pytest.approx(logged, rel=1e-5)


class _Overflow(transformers.TrainerCallback):
    """Makes accelerate report a skipped step (as its GradScaler does on inf/NaN gradients)."""

    def __init__(self, at: set[int]) -> None:
        self.at = at

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        kw["optimizer"]._is_overflow = state.global_step in self.at


def test_steps_the_scaler_skipped_are_reported_as_skipped(tmp_path: Path) -> None:
    tr = _trainer(tmp_path)
    cb = AutoLRSTrainerCallback(tr, lr_bounds=BOUNDS)
    tr.add_callback(_Overflow({10, 40}))
    # The Trainer counted the skipped steps, so the tuner's decay was cut short: said once.
    with pytest.warns(RuntimeWarning, match="ended at tuner step 88 of max_steps=90.*2 step"):
        tr.train()
    assert cb.tuner.skipped_steps == 2
    assert cb.tuner.global_step == N - 2  # the Trainer counted them, the tuner did not


def test_trainer_schedulers_that_would_fight_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lr_scheduler_type='linear'.*'constant'"):
        AutoLRSTrainerCallback(_trainer(tmp_path, lr_scheduler_type="linear"))
    with pytest.raises(ConfigError, match=r"warmup_steps=5"):
        AutoLRSTrainerCallback(_trainer(tmp_path, warmup_steps=5))
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    tr = Trainer(
        model=model,
        args=TrainingArguments(str(tmp_path), lr_scheduler_type="constant", report_to="none"),
        train_dataset=Toy(),
        optimizers=(opt, sched),
    )
    with pytest.raises(ConfigError, match="StepLR"):
        AutoLRSTrainerCallback(tr)
    ok = _trainer(tmp_path)
    AutoLRSTrainerCallback(ok)
    with pytest.raises(ConfigError, match="already has an AutoLRSTrainerCallback"):
        AutoLRSTrainerCallback(ok)
    with pytest.raises(ConfigTypeError, match=r"transformers\.Trainer"):
        AutoLRSTrainerCallback(object())
    # Refused when built (0 used to mean "the Trainer's budget" silently).
    with pytest.raises(ConfigError, match="max_steps must be an int >= 1, got 0"):
        AutoLRSTrainerCallback(_trainer(tmp_path), max_steps=0)
    with pytest.raises(ConfigTypeError, match="max_steps must be an int"):
        AutoLRSTrainerCallback(_trainer(tmp_path), max_steps=90.0)


def test_attached_after_the_trainer_made_its_own_scheduler(tmp_path: Path) -> None:
    """The Trainer's own (constant) scheduler is discarded by train(), which then asks the
    callback's create_scheduler: nothing to refuse."""
    tr = _trainer(tmp_path)
    tr.create_optimizer_and_scheduler(N)
    cb = AutoLRSTrainerCallback(tr, lr_bounds=BOUNDS)
    tr.train()
    assert cb.tuner.done
    logged = [h["learning_rate"] for h in tr.state.log_history if "learning_rate" in h]
    assert logged == cb.tuner.schedule


def _autolr_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("AutoLRSTrainer")]


def test_a_budget_the_trainer_does_not_reach_warns_once_at_train_begin(tmp_path: Path) -> None:
    tr = _trainer(tmp_path)
    cb = AutoLRSTrainerCallback(tr, lr_bounds=BOUNDS, max_steps=200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.train()
    said = _autolr_warnings(caught)
    assert len(said) == 1, said  # not said again when training ends
    assert "stops after 90 optimizer steps, before the tuner's max_steps=200" in said[0]
    assert cb.tuner.global_step == N and not cb.tuner.done


class _StopAt(transformers.TrainerCallback):
    """Stops training as EarlyStoppingCallback does."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.at:
            control.should_training_stop = True


def test_training_stopped_early_warns_once_at_its_end(tmp_path: Path) -> None:
    tr = _trainer(tmp_path)
    cb = AutoLRSTrainerCallback(tr, lr_bounds=BOUNDS)
    tr.add_callback(_StopAt(30))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr.train()
    said = _autolr_warnings(caught)
    assert len(said) == 1, said
    assert f"ended at tuner step 30 of max_steps={N}" in said[0] and "stopped first" in said[0]
    assert cb.tuner.global_step == 30 and not cb.tuner.done
    # Training ended by an error says nothing more than the error.
    tr = _trainer(tmp_path)
    AutoLRSTrainerCallback(tr, lr_bounds=BOUNDS)
    tr.add_callback(_KillAt(30))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="killed"):
            tr.train()
    assert _autolr_warnings(caught) == []


def test_a_second_train_runs_a_new_schedule_and_drops_the_old_tuner(tmp_path: Path) -> None:
    tr = _trainer(tmp_path)
    cb = AutoLRSTrainerCallback(tr, lr_bounds=BOUNDS)
    tr.train()
    first = weakref.ref(cb.tuner)
    opt = cb.tuner.optimizer
    hooks = len(opt._optimizer_step_pre_hooks)
    tr.train()
    tuner = cb.tuner
    assert tuner.done and tuner.global_step == N  # a whole new run
    assert tuner.optimizer is opt  # the Trainer reuses its optimizer
    logged = [h["learning_rate"] for h in tr.state.log_history if "learning_rate" in h]
    assert logged == tuner.schedule
    # The old tuner was gone before the new one hooked the optimizer: no stale hook stays.
    assert len(opt._optimizer_step_pre_hooks) == hooks
    gc.collect()
    assert first() is None


def test_resume_from_checkpoint_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    ref = _trainer(tmp_path / "ref")
    ref_cb = AutoLRSTrainerCallback(ref, lr_bounds=BOUNDS)
    ref.train()

    # Killed at step 20; the checkpoint at step 15 is mid-search (candidate 2 of 4).
    tr = _trainer(tmp_path / "run", save_strategy="steps", save_steps=15)
    AutoLRSTrainerCallback(tr, lr_bounds=BOUNDS)
    tr.add_callback(_KillAt(20))
    with pytest.raises(RuntimeError, match="killed"):
        tr.train()
    ckpt = tmp_path / "run" / "checkpoint-15"
    saved = torch.load(ckpt / STATE_FILE, weights_only=True)
    assert saved["tuner"]["phase"] == "search" and saved["tuner"]["global_step"] == 15

    tr2 = _trainer(tmp_path / "run")
    cb2 = AutoLRSTrainerCallback(tr2, lr_bounds=BOUNDS)
    tr2.train(resume_from_checkpoint=str(ckpt))
    assert cb2.tuner.done
    assert cb2.tuner.schedule == ref_cb.tuner.schedule
    assert cb2.tuner.stages == ref_cb.tuner.stages
    for a, b in zip(tr2.model.parameters(), ref.model.parameters()):
        assert torch.equal(a, b)


def test_resume_from_a_checkpoint_without_the_callback_state(tmp_path: Path) -> None:
    tr = _trainer(tmp_path, save_strategy="steps", save_steps=5, max_steps=5)
    tr.train()  # no callback attached: no state file
    tr2 = _trainer(tmp_path, max_steps=5)
    AutoLRSTrainerCallback(tr2, lr_bounds=BOUNDS, max_steps=N)
    with pytest.raises(StateError, match=f"checkpoint-5.*no {STATE_FILE}"):
        tr2.train(resume_from_checkpoint=True)


class _KillAt(transformers.TrainerCallback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.at:
            raise RuntimeError("killed")


def test_without_transformers_the_import_error_names_the_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys\nsys.modules['transformers'] = None\n"
        "try:\n    import autolr.integrations.transformers\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "autolr[transformers]"' in out.stdout, out.stdout + out.stderr
