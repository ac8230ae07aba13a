"""Tuner overhead and snapshot cost, measured side by side (medians of repeated runs).

Reports:
* the cost of ``AutoLRS.step`` during exploitation relative to one training step of a small
  model (forward + backward + ``optimizer.step``), and
* the cost of a snapshot restore relative to one ``optimizer.step``.

Usage: ``python benchmarks/overhead.py [--device cuda] [--repeats 7] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from autolr import AutoLRS, Snapshot


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _model(width: int, device: torch.device) -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    ).to(device)


def measure(width: int, device: torch.device, repeats: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(128, 64, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    model = _model(width, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tuner = AutoLRS(model, opt, tau=10**7, tau_prime=10, k=2, lr_bounds=(1e-3, 0.1), tau_max=10**7)
    step_t, tuner_t, opt_t, restore_t = [], [], [], []

    def train_step() -> float:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(30):  # search phase + warm caches
        tuner.step(train_step())
    assert tuner.phase == "exploit", tuner.phase
    snap = Snapshot(model, opt)
    snap.capture()
    for _ in range(repeats):
        # training step (the user's own cost, loss.item() included)
        _sync(device)
        t0 = time.perf_counter()
        losses = [train_step() for _ in range(steps)]
        _sync(device)
        step_t.append((time.perf_counter() - t0) / steps)
        # tuner.step alone, on the same losses, during exploitation
        t0 = time.perf_counter()
        for v in losses:
            tuner.step(v)
        tuner_t.append((time.perf_counter() - t0) / steps)
        # optimizer.step alone (gradients are in place from the last training step)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.step()
        _sync(device)
        opt_t.append((time.perf_counter() - t0) / steps)
        # snapshot restore
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps // 10):
            snap.restore()
        _sync(device)
        restore_t.append((time.perf_counter() - t0) / (steps // 10))
    med = statistics.median
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "width": width,
        "params": n_params,
        "train_step_ms": med(step_t) * 1e3,
        "tuner_step_us": med(tuner_t) * 1e6,
        "tuner_overhead_pct": 100 * med(tuner_t) / med(step_t),
        "optimizer_step_ms": med(opt_t) * 1e3,
        "restore_ms": med(restore_t) * 1e3,
        "restore_over_optimizer_step": med(restore_t) / med(opt_t),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = [measure(w, device, args.repeats, args.steps) for w in (128, 512, 2048)]
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(
        f"{'width':>6}{'params':>10}{'step ms':>9}{'tuner us':>10}{'overhead %':>11}"
        f"{'opt.step ms':>12}{'restore ms':>11}{'restore/opt':>12}"
    )
    for r in rows:
        print(
            f"{r['width']:>6}{r['params']:>10}{r['train_step_ms']:>9.3f}{r['tuner_step_us']:>10.2f}"
            f"{r['tuner_overhead_pct']:>11.2f}{r['optimizer_step_ms']:>12.3f}"
            f"{r['restore_ms']:>11.3f}{r['restore_over_optimizer_step']:>12.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
