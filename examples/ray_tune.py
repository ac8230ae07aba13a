"""AutoLRS across a Ray Tune population: 4 trials search the LR side by side.

    python examples/ray_tune.py                      # CPU, 4 trials sharing the cores
    python examples/ray_tune.py --gpus-per-trial 1   # one GPU per trial

With ``max_t`` known (here from ``RunConfig(stop=...)``) the scheduler plans the run from its
budget: a warm-up, the searches (every trial trains its own candidate LR for τ' iterations
from the same state; the winner's trial trains on, the next search starts from its
checkpoint), and a final decay of the LR that every trial follows iteration by iteration. The
last search races: every trial trains its own candidate to the end and the best one is
reported (``final="race"``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from ray import tune

from autolr.integrations.ray import AutoLRSScheduler, TuneCheckpointer


def train(config):
    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)  # the same initial weights in every trial
    model = torch.nn.Sequential(
        torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)
    ).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    ckpt = TuneCheckpointer(model, opt, config)  # resumes the checkpoint Ray hands over
    w = torch.linspace(-1, 1, 20, device=device)
    while ckpt.iteration < config["iters"]:
        x = torch.randn(64, 20, device=device)
        loss = (model(x).squeeze(1) - torch.sin(3 * x @ w)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ckpt.report(loss)  # loss + checkpoint, every iteration


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    args = p.parse_args()
    sched = AutoLRSScheduler(lr_bounds=(1e-4, 0.3))  # the budget variant, from stop= below
    resources = {"cpu": 0.5, "gpu": args.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(train, resources),
        param_space={"lr": 0.01, "iters": args.iters},
        tune_config=tune.TuneConfig(
            metric="loss", mode="min", num_samples=args.trials, scheduler=sched, reuse_actors=True
        ),
        run_config=tune.RunConfig(stop={"training_iteration": args.iters}, verbose=0),
    )
    grid = tuner.fit()
    for s in sched.stages:
        cands = ", ".join(f"{c.lr:.3g}" for c in s.candidates)
        kind = " (raced)" if s.note == "race" else ""
        print(f"stage {s.stage}{kind} from iteration {s.start}: candidates [{cands}]", end="")
        print(f" -> winner {s.winner_lr if s.winner_lr is not None else float('nan'):.3g}")
    if not sched.stages:
        print(f"budget too small for a search: winner = initial lr {sched.search.initial_lr:.3g}")
    best = grid.get_best_result()
    print(f"final loss {best.metrics['loss']:.4f}; schedule: {len(sched.schedule)} iterations")
    # The scheduler deleted the checkpoints it could no longer need (one per report otherwise).
    kept = list(Path(grid.experiment_path).glob("*/checkpoint_*"))
    print(f"checkpoints kept: {len(kept)} of {args.trials * args.iters} reports")


if __name__ == "__main__":
    main()
