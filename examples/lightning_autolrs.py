"""AutoLRS in a Lightning ``Trainer``: tune the LR while fitting, killed halfway and resumed.

Run: ``python examples/lightning_autolrs.py [--steps 600] [--accelerator cpu]``
(needs ``pip install "autolr[lightning]"``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from autolr.integrations.lightning import AutoLRSCallback


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)  # the callback reads this loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # No LR scheduler: AutoLRS is the schedule (a scheduler here is a ConfigError).
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2048, 20, generator=g)
    y = (x[:, :10].sum(1) > 0).long()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)


class StopAt(L.Callback):
    """Simulates a crash after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def fit(steps: int, accelerator: str, *extra: Any, ckpt: str | None = None) -> tuple[Any, Any]:
    module = Classifier()
    cb = AutoLRSCallback(lr_bounds=(1e-4, 1.0))  # the budget is Trainer(max_steps)
    trainer = L.Trainer(
        max_steps=steps,
        callbacks=[cb, *extra],
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in extra),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader(), ckpt_path=ckpt)
    return module, cb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--accelerator", default="cpu")
    args = ap.parse_args()
    epoch = len(loader())  # 32 batches: checkpoint at an epoch end (a plain DataLoader
    # restarts its epoch on a mid-epoch resume)
    half = (args.steps // 2) // epoch * epoch

    ref, ref_cb = fit(args.steps, args.accelerator)
    for s in ref_cb.tuner.stages:
        tried = ", ".join(f"{c.lr:.3g}" for c in s.candidates)
        print(f"search at step {s.start}: tried {tried} -> lr={s.winner_lr:.3g}")

    with tempfile.TemporaryDirectory() as d:
        ckpt = ModelCheckpoint(dirpath=d, every_n_train_steps=half, save_top_k=-1)
        try:
            fit(args.steps, args.accelerator, ckpt, StopAt(half + 5))
        except RuntimeError as exc:
            print(f"run stopped at step {half + 5}: {exc}")
        path = next(Path(d).glob(f"*step={half}.ckpt"))
        resumed, cb = fit(args.steps, args.accelerator, ckpt=str(path))
    same = cb.tuner.schedule == ref_cb.tuner.schedule and all(
        torch.equal(a, b) for a, b in zip(resumed.parameters(), ref.parameters())
    )
    print(f"resumed from step {half} (phase {cb.tuner.history[half].phase}): identical run: {same}")
    print(f"exported schedule: {len(cb.tuner.export_schedule())} steps")


if __name__ == "__main__":
    main()
