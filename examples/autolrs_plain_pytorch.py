"""AutoLRS in a plain PyTorch loop, killed halfway and resumed from a checkpoint.

Run: ``python examples/autolrs_plain_pytorch.py [--device cuda] [--steps 3000]``
"""

from __future__ import annotations

import argparse
import io

import torch
from torch import nn

from autolr import AutoLRS


def build(dev: torch.device, steps: int) -> tuple[nn.Module, torch.optim.Optimizer, AutoLRS]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    # The LR box and the budget are all it needs: it plans warm-up, search and final decay.
    tuner = AutoLRS(model, opt, lr_bounds=(1e-4, 1.0), max_steps=steps)
    return model, opt, tuner


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    tuner: AutoLRS,
    x: torch.Tensor,
    y: torch.Tensor,
    start: int,
    stop: int,
) -> None:
    for _ in range(start, stop):
        idx = torch.randint(0, x.shape[0], (64,), device=x.device)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        tuner.step(loss)  # a float or a scalar tensor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4096, 20, generator=g).to(dev)
    y = (x[:, :10].sum(1) > 0).long()

    # One uninterrupted run.
    model, opt, tuner = build(dev, args.steps)
    train(model, opt, tuner, x, y, 0, args.steps)
    reference = tuner.schedule
    for s in tuner.stages:
        tried = ", ".join(f"{c.lr:.3g}" for c in s.candidates)
        print(f"search at step {s.start}: tried {tried} -> lr={s.winner_lr:.3g}")

    # The same run, killed halfway and resumed from a checkpoint.
    half = args.steps // 2
    model, opt, tuner = build(dev, args.steps)
    train(model, opt, tuner, x, y, 0, half)
    buf = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "tuner": tuner.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" else [],
        },
        buf,
    )
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model2, opt2, tuner2 = build(dev, args.steps)  # e.g. in a new process
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    tuner2.load_state_dict(ckpt["tuner"])
    torch.set_rng_state(ckpt["rng"])
    if ckpt["cuda_rng"]:
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    train(model2, opt2, tuner2, x, y, half, args.steps)
    print("resumed schedule equals the uninterrupted one:", tuner2.schedule == reference)


if __name__ == "__main__":
    main()
