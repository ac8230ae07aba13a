"""AutoLRS in a Hugging Face ``Trainer``: a tiny GPT-2 (built from a config, nothing
downloaded), killed halfway and resumed from the Trainer's checkpoint.

Run: ``python examples/hf_trainer_autolrs.py [--steps 300]``
(needs ``pip install "autolr[transformers]"``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

from autolr.integrations.transformers import AutoLRSTrainerCallback


class Tokens(torch.utils.data.Dataset):
    """Random token sequences with a learnable rule (each token repeats the one before)."""

    def __init__(self) -> None:
        x = torch.randint(0, 64, (512, 16), generator=torch.Generator().manual_seed(0))
        x[:, 1::2] = x[:, 0::2]
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.x[i]}


class StopAt(TrainerCallback):
    """Simulates a crash after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step:
            raise RuntimeError("simulated crash")


def make(out: str, steps: int, save_steps: int | None = None) -> tuple[Trainer, Any]:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=64,
            n_positions=16,
            n_embd=32,
            n_layer=1,
            n_head=2,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    args = TrainingArguments(
        output_dir=out,
        max_steps=steps,  # the tuner's budget
        per_device_train_batch_size=16,
        learning_rate=1e-3,  # only the groups' ratios matter: AutoLRS sets the LR
        lr_scheduler_type="constant",  # required: the callback replaces it by a pass-through
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to="none",
        disable_tqdm=True,
        logging_steps=50,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=args, train_dataset=Tokens())
    cb = AutoLRSTrainerCallback(trainer, lr_bounds=(1e-4, 1e-1))  # adds itself
    return trainer, cb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    half = args.steps // 2
    with tempfile.TemporaryDirectory() as d:
        ref, ref_cb = make(str(Path(d) / "ref"), args.steps)
        ref.train()
        for s in ref_cb.tuner.stages:
            tried = ", ".join(f"{c.lr:.3g}" for c in s.candidates)
            print(f"search at step {s.start}: tried {tried} -> lr={s.winner_lr:.3g}")

        run, _ = make(str(Path(d) / "run"), args.steps, save_steps=half)
        run.add_callback(StopAt(half + 5))
        try:
            run.train()
        except RuntimeError as exc:
            print(f"run stopped at step {half + 5}: {exc}")
        resumed, cb = make(str(Path(d) / "run"), args.steps)
        resumed.train(resume_from_checkpoint=True)  # the last checkpoint, tuner state included
    same = cb.tuner.schedule == ref_cb.tuner.schedule and all(
        torch.equal(a, b) for a, b in zip(resumed.model.parameters(), ref.model.parameters())
    )
    print(f"resumed from step {half}: identical run: {same}")
    print(f"final loss {cb.tuner.history[-1].loss:.3f}")


if __name__ == "__main__":
    main()
