"""Self-Tuning Networks on an over-fitting task: tune dropout and L2 while training.

A wide MLP on 200 sklearn digits over-fits. ``autolr.stn`` converts it in place, tunes the
two dropout rates and the L2 coefficient online (STN, or Delta-STN with ``--variant delta``)
and records the schedule, which is then replayed in a plain copy of the model.

    python examples/stn.py [--variant stn|delta] [--steps 1500] [--device cuda]
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from autolr import stn


class MLP(nn.Module):
    def __init__(self, width: int = 512) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, width)
        self.drop1 = nn.Dropout(0.0)
        self.fc2 = nn.Linear(width, width)
        self.drop2 = nn.Dropout(0.0)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(F.relu(self.fc1(x)))
        return self.head(self.drop2(F.relu(self.fc2(x))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", choices=["stn", "delta"], default="stn")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32, device=dev)
    y = torch.tensor(d.target, device=dev)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(dev)
    tr, va = perm[:200], perm[200:600]
    val_batches = [(x[va[i : i + 100]], y[va[i : i + 100]]) for i in range(0, 400, 100)]

    # 1. Hyperparameters: bounds, initial values; L2 gets one value per batch.
    space = stn.HyperSpace()
    space.add("drop1", 0.05, low=0.0, high=0.95).add("drop2", 0.05, low=0.0, high=0.95)
    space.add("wd", 1e-4, low=0.0, per_example=False)
    # 2. Convert the model in place (weights copied; forward unchanged).
    model = MLP().to(dev)
    stn.convert(model, space, dropout={"drop1": "drop1", "drop2": "drop2"})
    space.to(dev)
    # 3. Alternate weight steps (training data) and hyper steps (validation data).
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tuner = stn.STNTuner(
        model, space, F.cross_entropy, opt, variant=args.variant, hyper_lr=0.1, scale_lr=0.03,
        train_steps=5, hyper_delay_steps=args.steps // 20, weight_decay="wd",
    )  # fmt: skip
    for step in range(args.steps):
        idx = tr[torch.randint(0, 200, (32,), device=dev)]
        tuner.step((x[idx], y[idx]), val_batches)
        if (step + 1) % (args.steps // 5) == 0:
            vals = ", ".join(f"{k}={v:.3g}" for k, v in space.values().items())
            print(f"step {step + 1}: val loss {tuner.evaluate(val_batches):.4f}  {vals}")
    print(f"hyper steps {tuner.hyper_steps}, skipped {tuner.skipped_hyper_steps}")

    # 4. Replay the discovered schedule in a plain (unconverted) model.
    schedule = tuner.schedule()
    torch.manual_seed(0)
    plain = MLP().to(dev)
    popt = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
    for step in range(args.steps):
        schedule.apply(step, dropout={"drop1": plain.drop1, "drop2": plain.drop2},
                       weight_decay={"wd": popt})  # fmt: skip
        idx = tr[torch.randint(0, 200, (32,), device=dev)]
        loss = F.cross_entropy(plain(x[idx]), y[idx])
        popt.zero_grad()
        loss.backward()
        popt.step()
    plain.eval()
    with torch.no_grad():
        replay = sum(F.cross_entropy(plain(a), b).item() for a, b in val_batches) / 4
    print(f"plain model with the replayed schedule: val loss {replay:.4f}")


if __name__ == "__main__":
    main()
