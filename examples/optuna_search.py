"""Search an LR schedule with Optuna, AutoLRSSampler and ForecastPruner (plain PyTorch).

Each trial trains a small MLP on a synthetic regression task with a warm-up + cosine schedule
whose peak LR and warm-up fraction (and SGD momentum) are suggested by the trial, reports the
validation loss every 20 steps and is pruned once its forecast final loss is confidently worse
than the best so far. Pruned trials still teach the sampler: their curves are extrapolated to
the last step and enter its GP as noisy observations.

Run: ``python examples/optuna_search.py [--trials 20] [--storage journal.log]``. With
``--storage``, start the same command in several terminals to share one study (a
``JournalStorage`` file; any Optuna storage URL such as ``postgresql://...`` works too). The
same ``--seed`` in every terminal is fine: the sampler derives each trial's draws from the
seed and the trial number, which the storage hands out once, so workers never repeat a trial.
"""

from __future__ import annotations

import argparse

import optuna
import torch
from torch import nn

from autolr.integrations.optuna import AutoLRSSampler, ForecastPruner, suggest_lr_schedule

STEPS = 400
EVAL_EVERY = 20


def data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1200, 10, generator=g)
    w = torch.randn(10, 1, generator=g) / 10**0.5
    y = torch.sin(2 * x @ w) + 0.1 * torch.randn(1200, 1, generator=g)
    return x[:1000], y[:1000], x[1000:], y[1000:]


def objective(trial: optuna.Trial) -> float:
    xt, yt, xv, yv = data()
    schedule = suggest_lr_schedule(trial, STEPS, peak_lr=(1e-3, 1.0), warmup_frac=(0.0, 0.3))
    momentum = trial.suggest_float("momentum", 0.0, 0.95)
    torch.manual_seed(0)  # same initial weights and batches for every trial
    model = nn.Sequential(nn.Linear(10, 64), nn.Tanh(), nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=schedule.peak_lr, momentum=momentum)
    scheduler = schedule.scheduler(opt)
    val = float("nan")
    for step in range(STEPS):
        idx = torch.randint(0, len(xt), (32,))
        loss = nn.functional.mse_loss(model(xt[idx]), yt[idx])
        if not torch.isfinite(loss):
            return float("nan")  # diverged: a FAIL trial, which the sampler penalises
        opt.zero_grad()
        loss.backward()
        opt.step()
        scheduler.step()
        if (step + 1) % EVAL_EVERY == 0:
            with torch.no_grad():
                val = nn.functional.mse_loss(model(xv), yv).item()
            trial.report(val, step + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage", default=None, help="JournalStorage file or storage URL")
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    storage = args.storage
    if storage is not None and "://" not in storage:
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(storage))
    study = optuna.create_study(
        study_name="autolr-schedule",
        storage=storage,
        load_if_exists=True,
        sampler=AutoLRSSampler(seed=args.seed, n_steps=STEPS),
        pruner=ForecastPruner(n_steps=STEPS),
    )
    study.optimize(objective, n_trials=args.trials)
    states = [t.state.name for t in study.trials]
    print(
        f"{len(states)} trials: {states.count('COMPLETE')} complete, "
        f"{states.count('PRUNED')} pruned, {states.count('FAIL')} failed"
    )
    print(f"best validation loss {study.best_value:.4f} with {study.best_params}")


if __name__ == "__main__":
    main()
