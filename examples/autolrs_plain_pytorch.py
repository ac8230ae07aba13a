"""AutoLRS in a plain PyTorch loop, with a checkpoint/resume halfway.

Run: ``python examples/autolrs_plain_pytorch.py [--device cuda]``
"""

from __future__ import annotations

import argparse
import io

import torch
from torch import nn

from autolr import AutoLRS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    dev = torch.device(args.device)

    torch.manual_seed(0)
    x = torch.randn(4096, 20, device=dev)
    y = (x[:, :10].sum(1) > 0).long()
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tuner = AutoLRS(model, opt, lr_bounds=(1e-4, 1.0), tau=300, k=6, max_steps=args.steps)

    checkpoint = None
    for step in range(args.steps):
        idx = torch.randint(0, x.shape[0], (64,), device=dev)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        tuner.step(loss)  # a scalar tensor is fine too
        if step == args.steps // 2:
            checkpoint = io.BytesIO()
            torch.save(
                {"model": model.state_dict(), "opt": opt.state_dict(), "tuner": tuner.state_dict()},
                checkpoint,
            )
    for s in tuner.stages:
        print(f"stage {s['stage']}: tau={s['tau']} lr={s.get('winner_lr', float('nan')):.3g}")
    assert checkpoint is not None
    checkpoint.seek(0)
    state = torch.load(checkpoint, weights_only=True)
    tuner.load_state_dict(state["tuner"])  # resuming is just this (plus model/optimizer)
    print("resumed at step", tuner.global_step, "phase", tuner.phase)


if __name__ == "__main__":
    main()
