"""``autolr demo``: AutoLRS against what a user would do instead, on a small synthetic task.

Three ways to spend a training budget on the same model and data (a 10-class problem
labelled by a random teacher network, nothing downloaded):

* **AutoLRS** in one run: only the LR box and the budget are given; the budget variant plans
  its warm-up, one LR search (its discarded candidate steps count against the budget) and
  the final decay.
* **cosine at a guessed LR**: one run of cosine decay (5 % warm-up) at the geometric middle
  of the same box, the untuned guess.
* **grid-tuned cosine**: the same schedule at ``grid`` log-spaced LRs over the box, the best
  final validation loss kept. It costs ``grid`` runs: the compute AutoLRS saves.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._autolrs._tuner import AutoLRS
from ._progress import Progress
from ._validate import check_bounds, check_int

__all__ = ["DemoConfig", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo (all exposed on the command line)."""

    steps: int = 3000
    grid: int = 5
    lr_bounds: tuple[float, float] = (1e-3, 1.0)
    batch_size: int = 64
    seed: int = 0
    device: str = "cpu"
    out: str = "autolr-demo"
    progress: bool = True

    def __post_init__(self) -> None:
        # The CLI checks these too; this catches a programmatic caller before any training.
        for name, minimum in (("steps", 1), ("grid", 2), ("batch_size", 1), ("seed", 0)):
            check_int(f"DemoConfig.{name}", getattr(self, name), minimum=minimum)
        check_bounds("DemoConfig.lr_bounds", self.lr_bounds, positive=True)


def make_task(seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A 10-class problem labelled by a random teacher network (no download needed)."""
    g = torch.Generator().manual_seed(1234 + seed)
    d, n_train, n_val = 32, 8192, 2048
    teacher = [torch.randn(d, 64, generator=g) / math.sqrt(d), torch.randn(64, 10, generator=g)]
    x = torch.randn(n_train + n_val, d, generator=g)
    logits = torch.tanh(x @ teacher[0]) @ teacher[1]
    y = (logits + 0.5 * torch.randn(logits.shape, generator=g)).argmax(1)
    return {
        "x_train": x[:n_train].to(device),
        "y_train": y[:n_train].to(device),
        "x_val": x[n_train:].to(device),
        "y_val": y[n_train:].to(device),
    }


def make_model(seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    ).to(device)


def _evaluate(model: nn.Module, data: dict[str, torch.Tensor]) -> tuple[float, float]:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(data["x_val"])
        loss = nn.functional.cross_entropy(out, data["y_val"]).item()
        acc = (out.argmax(1) == data["y_val"]).float().mean().item()
    model.train(was)
    return loss, acc


def _cosine(step: int, steps: int) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def _train(
    cfg: DemoConfig, data: dict[str, torch.Tensor], device: torch.device, *, lr: float | None
) -> dict[str, Any]:
    """One run: AutoLRS when ``lr`` is None, else cosine at peak ``lr``."""
    model = make_model(cfg.seed, device)
    opt = torch.optim.SGD(model.parameters(), lr=lr or 0.01, momentum=0.9)
    tuner = None
    if lr is None:
        # The user's whole configuration: the LR box and the budget. The validation loss
        # scores the candidates (one evaluation at the end of each candidate window).
        tuner = AutoLRS(
            model,
            opt,
            lr_bounds=cfg.lr_bounds,
            max_steps=cfg.steps,
            seed=cfg.seed,
            val_fn=lambda: _evaluate(model, data)[0],
        )
    # The batch sampler draws from the global torch RNG, so AutoLRS's snapshots (which
    # restore RNG states) give every candidate the same batches.
    torch.manual_seed(cfg.seed)
    n = data["x_train"].shape[0]
    name = "AutoLRS" if tuner is not None else f"cosine {lr:.3g}"
    bar = Progress(cfg.steps, desc=name, enabled=cfg.progress)
    losses: list[float] = []
    lrs: list[float] = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        if tuner is None:
            assert lr is not None
            opt.param_groups[0]["lr"] = lr * _cosine(step, cfg.steps)
        lrs.append(float(opt.param_groups[0]["lr"]))
        idx = torch.randint(0, n, (cfg.batch_size,)).to(device)
        loss = nn.functional.cross_entropy(model(data["x_train"][idx]), data["y_train"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        losses.append(value)
        if tuner is not None:
            tuner.step(value)
            bar.update(1, phase=tuner.phase, lr=f"{tuner.lr:.2e}", loss=f"{value:.3f}")
        else:
            bar.update(1, loss=f"{value:.3f}")
    bar.close()
    seconds = time.perf_counter() - t0
    val_loss, val_acc = _evaluate(model, data)
    result: dict[str, Any] = {
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "seconds": seconds,
        "train_loss": losses,
        "lr": lrs,
        "peak_lr": lr,
    }
    if tuner is not None:
        result["phase"] = [r.phase for r in tuner.history]
        result["stages"] = [s.to_state() for s in tuner.stages]
        result["search_steps"] = sum(p == "search" for p in result["phase"])
        result["decay_shape"] = tuner.search.policy.decay_shape
    return result


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo and write ``report.json`` and ``autolrs_demo.png`` into ``cfg.out``."""
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was given but torch.cuda.is_available() is False")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)  # before training: a bad folder costs no work
    data = make_task(cfg.seed, device)
    lo, hi = cfg.lr_bounds
    tuned = _train(cfg, data, device, lr=None)
    guess = _train(cfg, data, device, lr=math.sqrt(lo * hi))
    grid_lrs = [lo * (hi / lo) ** (i / max(1, cfg.grid - 1)) for i in range(cfg.grid)]
    grid = [_train(cfg, data, device, lr=v) for v in grid_lrs]
    best = min(grid, key=lambda r: r["val_loss"])

    def brief(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k not in ("train_loss", "lr", "phase")}

    report = {
        "config": {**cfg.__dict__, "lr_bounds": list(cfg.lr_bounds)},
        "device": str(device),
        "autolrs": brief(tuned),
        "cosine_guess": brief(guess),
        "cosine_grid": {
            "runs": len(grid),
            "lrs": grid_lrs,
            "val_losses": [r["val_loss"] for r in grid],
            "best": brief(best),
        },
        "curves": {
            "autolrs_lr": tuned["lr"],
            "autolrs_phase": tuned["phase"],
            "autolrs_train_loss": tuned["train_loss"],
            "cosine_guess_train_loss": guess["train_loss"],
            "cosine_best_train_loss": best["train_loss"],
            "cosine_best_lr": best["lr"],
        },
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot = _plot(report, out / "autolrs_demo.png")
    _print_summary(report, plot)
    return report


def _print_summary(report: dict[str, Any], plot: Path | None) -> None:
    a, g, grid = report["autolrs"], report["cosine_guess"], report["cosine_grid"]
    b = grid["best"]
    steps = report["config"]["steps"]
    print("\nSchedule found by AutoLRS:")
    for s in a["stages"]:
        tried = ", ".join(f"{c['lr']:.3g}" for c in s["candidates"])
        print(f"  search at step {s['start']}: tried {tried} -> lr={s['winner_lr']:.3g}")
    if a["stages"]:
        shape = {"sqrt": "as 1 - sqrt(x)", "linear": "linearly"}[a["decay_shape"]]
        print(
            f"  ({a['search_steps']} search steps of {steps}; then the winner's LR, decayed "
            f"{shape} to 0 over the second half)"
        )
    else:  # the tuner warned: the budget holds no search
        print(f"  no search: {steps} steps are too few for one (see the warning above)")
    print(f"\n{'run':<28}{'compute':>9}{'val loss':>10}{'val acc':>9}{'seconds':>9}")
    rows = [
        ("AutoLRS", "1 run", a),
        (f"cosine, guessed lr={g['peak_lr']:.3g}", "1 run", g),
        (f"cosine, grid best lr={b['peak_lr']:.3g}", f"{grid['runs']} runs", b),
    ]
    for name, compute, r in rows:
        print(
            f"{name:<28}{compute:>9}{r['val_loss']:>10.4f}{r['val_accuracy']:>9.3f}"
            f"{r['seconds']:>9.1f}"
        )
    print(f"\nwrote {Path(report['config']['out']) / 'report.json'}")
    if plot is not None:
        print(f"wrote {plot}")


def _plot(report: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed; no plot written (pip install "autolr[bench]")')
        return None
    curves = report["curves"]
    steps = range(len(curves["autolrs_lr"]))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    phase = curves["autolrs_phase"]
    search = [i for i in steps if phase[i] == "search"]
    train = [i for i in steps if phase[i] != "search"]
    loss = curves["autolrs_train_loss"]
    best_lr = report["cosine_grid"]["best"]["peak_lr"]
    ax1.plot(curves["cosine_guess_train_loss"], color="tab:gray", lw=0.5, alpha=0.6,
             label="cosine, guessed LR")  # fmt: skip
    ax1.plot(curves["cosine_best_train_loss"], color="tab:green", lw=0.5, alpha=0.6,
             label=f"cosine, grid best (lr={best_lr:.3g})")  # fmt: skip
    ax1.scatter(
        search, [loss[i] for i in search], s=1, color="tab:orange", label="AutoLRS candidates"
    )
    ax1.scatter(train, [loss[i] for i in train], s=1, color="tab:blue", label="AutoLRS training")
    ax1.set_ylabel("training loss")
    ax1.set_yscale("log")
    ax1.legend(loc="upper right", markerscale=6)
    ax2.plot(list(steps), curves["autolrs_lr"], color="tab:blue", lw=0.8, label="AutoLRS")
    ax2.plot(list(steps), curves["cosine_best_lr"], color="tab:green", lw=0.8, label="grid best")
    ax2.set_yscale("log")
    ax2.set_ylabel("learning rate")
    ax2.set_xlabel("optimizer step (search steps included)")
    ax2.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
