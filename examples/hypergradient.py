"""Hypergradient LR adaptation on a small MLP (sklearn digits), from a 100x too small LR.

Trains the same model twice with AdamW at lr=1e-5 (a good constant LR is about 3e-3): once
plain, once wrapped in ``autolr.HypergradientLR``, and prints the validation loss and the LR HD
arrived at. Runs in a few seconds on a CPU::

    python examples/hypergradient.py [--device cuda] [--steps 600] [--rule rms] [--boost 10]
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from autolr import HypergradientLR


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-5, help="initial LR (deliberately too small)")
    p.add_argument(
        "--rule", choices=["multiplicative", "rms", "additive"], default="multiplicative"
    )
    p.add_argument("--boost", type=float, default=1.0, help="HD step boost under a persistent sign")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32, device=device)
    y = torch.tensor(digits.target, device=device)
    xt, yt, xv, yv = x[:1400], y[:1400], x[1400:], y[1400:]

    for use_hd in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
        if use_hd:
            # lr_bounds guards against a runaway LR; the LR still starts at args.lr
            opt = HypergradientLR(opt, rule=args.rule, lr_bounds=(0.0, 1.0), boost=args.boost)
        for _ in range(args.steps):
            idx = torch.randint(0, len(xt), (32,), device=device)
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        with torch.no_grad():
            val = F.cross_entropy(model(xv), yv).item()
        if use_hd:
            trace = [row[0] for row in opt.lr_trace]
            print(
                f"HD ({args.rule}, boost {args.boost:g}):  val loss {val:.4f}; "
                f"LR {trace[0]:.1e} -> {trace[-1]:.1e} "
                f"(max {max(trace):.1e}), non-finite hypergradients: {opt.skipped_hyper_steps}"
            )
        else:
            print(f"plain AdamW:         val loss {val:.4f}; LR fixed at {args.lr:.1e}")


if __name__ == "__main__":
    main()
