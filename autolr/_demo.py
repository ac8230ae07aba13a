"""``autolr demo``: AutoLRS on a small synthetic task against a constant LR, same budget."""

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

__all__ = ["DemoConfig", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo (all exposed on the command line)."""

    steps: int = 4000
    tau: int = 400
    k: int = 8
    lr_bounds: tuple[float, float] = (1e-4, 1.0)
    baseline_lr: float = 0.01
    batch_size: int = 64
    seed: int = 0
    device: str = "cpu"
    out: str = "autolr-demo"
    progress: bool = True


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
    model.eval()
    with torch.no_grad():
        out = model(data["x_val"])
        loss = nn.functional.cross_entropy(out, data["y_val"]).item()
        acc = (out.argmax(1) == data["y_val"]).float().mean().item()
    model.train()
    return loss, acc


def _train(
    cfg: DemoConfig, data: dict[str, torch.Tensor], device: torch.device, *, tuned: bool
) -> dict[str, Any]:
    model = make_model(cfg.seed, device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.baseline_lr, momentum=0.9)
    tuner = (
        AutoLRS(
            model,
            opt,
            lr_bounds=cfg.lr_bounds,
            tau=cfg.tau,
            k=cfg.k,
            max_steps=cfg.steps,
            seed=cfg.seed,
        )
        if tuned
        else None
    )
    # The batch sampler draws from the global torch RNG, so AutoLRS's snapshots (which
    # restore RNG states) give every candidate of a stage the same batches.
    torch.manual_seed(cfg.seed)
    n = data["x_train"].shape[0]
    bar = Progress(cfg.steps, desc="AutoLRS " if tuned else "constant", enabled=cfg.progress)
    losses: list[float] = []
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch_size,)).to(device)
        loss = nn.functional.cross_entropy(model(data["x_train"][idx]), data["y_train"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        losses.append(value)
        if tuner is not None:
            tuner.step(value)
            bar.update(
                1, stage=tuner.stage, phase=tuner.phase, lr=f"{tuner.lr:.2e}", loss=f"{value:.3f}"
            )
        else:
            bar.update(1, lr=f"{cfg.baseline_lr:.2e}", loss=f"{value:.3f}")
    bar.close()
    seconds = time.perf_counter() - t0
    val_loss, val_acc = _evaluate(model, data)
    result: dict[str, Any] = {
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "seconds": seconds,
        "train_loss": losses,
    }
    if tuner is not None:
        hist = tuner.history
        result["lr"] = [r.lr for r in hist]
        result["phase"] = [r.phase for r in hist]
        result["stages"] = tuner.stages
    return result


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the demo and write ``report.json`` and ``autolrs_demo.png`` into ``cfg.out``."""
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was given but torch.cuda.is_available() is False")
    data = make_task(cfg.seed, device)
    tuned = _train(cfg, data, device, tuned=True)
    const = _train(cfg, data, device, tuned=False)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "config": {**cfg.__dict__, "lr_bounds": list(cfg.lr_bounds)},
        "device": str(device),
        "autolrs": {k: v for k, v in tuned.items() if k not in ("train_loss", "lr", "phase")},
        "constant": {k: v for k, v in const.items() if k != "train_loss"},
        "curves": {
            "autolrs_lr": tuned["lr"],
            "autolrs_phase": tuned["phase"],
            "autolrs_train_loss": tuned["train_loss"],
            "constant_train_loss": const["train_loss"],
        },
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot = _plot(report, out / "autolrs_demo.png")
    _print_summary(report, plot)
    return report


def _print_summary(report: dict[str, Any], plot: Path | None) -> None:
    a, c = report["autolrs"], report["constant"]
    print("\nSchedule found by AutoLRS (stage: steps -> LR):")
    for s in a["stages"]:
        if "winner_lr" in s:
            print(
                f"  stage {s['stage']}: tau={s['tau']:5d} tau'={s['tau_prime']:4d} "
                f"start step {s['start_step']:5d}  lr={s['winner_lr']:.3e}"
            )
    lr0 = report["config"]["baseline_lr"]
    print(f"\n{'run':<22}{'val loss':>10}{'val acc':>10}{'seconds':>10}")
    print(f"{'AutoLRS':<22}{a['val_loss']:>10.4f}{a['val_accuracy']:>10.3f}{a['seconds']:>10.1f}")
    print(
        f"{f'constant lr={lr0:g}':<22}{c['val_loss']:>10.4f}{c['val_accuracy']:>10.3f}"
        f"{c['seconds']:>10.1f}"
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
    ax1.plot(
        curves["constant_train_loss"],
        color="tab:gray",
        lw=0.6,
        alpha=0.7,
        label=f"constant lr={report['config']['baseline_lr']:g}",
    )
    ax1.scatter(
        search, [loss[i] for i in search], s=1, color="tab:orange", label="AutoLRS candidates"
    )
    ax1.scatter(train, [loss[i] for i in train], s=1, color="tab:blue", label="AutoLRS training")
    ax1.set_ylabel("training loss")
    ax1.set_yscale("log")
    ax1.legend(loc="upper right", markerscale=6)
    ax2.plot(list(steps), curves["autolrs_lr"], color="tab:blue", lw=0.8)
    ax2.set_yscale("log")
    ax2.set_ylabel("learning rate")
    ax2.set_xlabel("optimizer step (search steps included)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
