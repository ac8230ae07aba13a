"""Concurrency: Optuna workers started together, and searchers used from several threads.

* Two worker processes with the *same* seed on one SQLite or Journal study used to run the
  same first trial (each process started the independent sampler's stream afresh). The
  seeding rule now keys every draw of trial ``i`` by ``(seed, i)``: concurrent workers
  propose distinct configurations, and trial ``i`` gets what a single process gives it.
* ``GPSearcher.suggest`` seeds the process-global RNGs; searchers in different threads take
  turns (the searchers' lock), so each proposes exactly what it proposes alone.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import autolr
from autolr.searchers import GPSearcher, Param

N_PER_WORKER = 2
SEED = 0

_WORKER = textwrap.dedent(
    """
    import math, os, sys, time
    import torch
    torch.set_num_threads(1)
    import optuna
    from autolr.integrations.optuna import AutoLRSSampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec, name, worker, n_trials, go = sys.argv[1:6]
    kind, _, where = spec.partition(":")
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend
        storage = optuna.storages.JournalStorage(JournalFileBackend(where))
    else:
        storage = optuna.storages.RDBStorage(
            "sqlite:///" + where, engine_kwargs={"connect_args": {"timeout": 60}}
        )
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=AutoLRSSampler(seed=SEED, n_startup_trials=3)
    )
    while not os.path.exists(go):  # start together
        time.sleep(0.01)


    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
        momentum = trial.suggest_float("momentum", 0.0, 0.95)
        layers = trial.suggest_int("layers", 1, 8)
        trial.set_user_attr("worker", worker)
        # Each worker's first trial waits until the other's has all its params: both were
        # sampled before either finished (an empty search space, as when the bug showed).
        deadline = time.monotonic() + 120
        while trial.number < 2:
            first = study.get_trials(deepcopy=False)[:2]
            if len(first) == 2 and all(len(t.params) == 3 for t in first):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the other worker never sampled a trial")
            time.sleep(0.02)
        return (math.log10(lr) + 1.5) ** 2 + (momentum - 0.5) ** 2 + 0.01 * layers


    study.optimize(objective, n_trials=int(n_trials), catch=())
    """
).replace("SEED", str(SEED))


def _suggest_all(trial) -> dict:
    return {
        "lr": trial.suggest_float("lr", 1e-3, 1.0, log=True),
        "momentum": trial.suggest_float("momentum", 0.0, 0.95),
        "layers": trial.suggest_int("layers", 1, 8),
    }


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_with_one_seed_start_with_distinct_trials(tmp_path: Path, kind: str) -> None:
    optuna = pytest.importorskip("optuna")
    from optuna.storages.journal import JournalFileBackend

    from autolr.integrations.optuna import AutoLRSSampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    where = str(tmp_path / ("study.db" if kind == "sqlite" else "journal.log"))
    if kind == "sqlite":
        storage = optuna.storages.RDBStorage(
            "sqlite:///" + where, engine_kwargs={"connect_args": {"timeout": 60}}
        )
    else:
        storage = optuna.storages.JournalStorage(JournalFileBackend(where))
    optuna.create_study(study_name="shared", storage=storage)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    go = tmp_path / "go"
    # the workers import the autolr this test imports (the checkout, not another install)
    root = str(Path(autolr.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                f"{kind}:{where}",
                "shared",
                w,
                str(N_PER_WORKER),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for w in ("a", "b")
    ]
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]

    trials = optuna.load_study(study_name="shared", storage=storage).get_trials(deepcopy=False)
    assert len(trials) == 2 * N_PER_WORKER
    assert {t.user_attrs["worker"] for t in trials[:2]} == {"a", "b"}
    configs = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(configs)) == len(configs), configs  # no configuration run twice

    # Oracle: one process, trials 0 and 1 both asked before either is told (the same empty
    # search space). Trial i's draws depend on (seed, i) only, not on the process.
    alone = optuna.create_study(sampler=AutoLRSSampler(seed=SEED, n_startup_trials=3))
    first = [alone.ask(), alone.ask()]
    expected = [_suggest_all(t) for t in first]
    assert expected[0] != expected[1]
    assert [t.params for t in trials[:2]] == expected


def test_a_second_sampler_with_the_same_seed_draws_what_one_sampler_would() -> None:
    """In one process: a fresh sampler (a second worker) with the same seed, asking the
    next trial of the study, draws what a single sampler draws for that trial number."""
    optuna = pytest.importorskip("optuna")
    from autolr.integrations.optuna import AutoLRSSampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    single = optuna.create_study(sampler=AutoLRSSampler(seed=3))
    expected = [_suggest_all(t) for t in (single.ask(), single.ask())]

    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage)
    workers = [
        optuna.load_study(study_name="s", storage=storage, sampler=AutoLRSSampler(seed=3))
        for _ in range(2)
    ]
    got = [_suggest_all(w.ask()) for w in workers]  # trial 0 by one, trial 1 by the other
    assert got == expected
    assert all(got[0][k] != got[1][k] for k in ("lr", "momentum"))
    other_seed = optuna.create_study(sampler=AutoLRSSampler(seed=4))
    assert _suggest_all(other_seed.ask())["lr"] != got[0]["lr"]


# ------------------------------------------------------------------ searchers in threads
_SEARCHES = [
    # 2-D: botorch's restart heuristics draw from the global torch RNG
    ([Param("lr", 1e-4, 1.0, log=True), Param("wd", 0.0, 0.5)], 1, (-2.0, 0.1)),
    ([Param("lr", 1e-5, 1e-1, log=True), Param("wd", 0.0, 1.0)], 2, (-3.5, 0.7)),
    # 1-D fast path: changes torch's thread count for its block
    ([Param("lr", 1e-4, 1.0, log=True)], 3, (-1.0,)),
]


def _search(i: int, n: int = 4) -> list[dict[str, float]]:
    params, seed, opt = _SEARCHES[i]
    s = GPSearcher(
        params, seed=seed, n_initial=2, num_restarts=2, raw_samples=16, fit_options={"maxiter": 8}
    )
    out = []
    for _ in range(n):
        (cfg,) = s.suggest()
        units = [math.log10(cfg[p.name]) if p.log else cfg[p.name] for p in params]
        s.observe(cfg, sum((u - o) ** 2 for u, o in zip(units, opt)))
        out.append(cfg)
    assert s.n_fallbacks == 0
    return out


def test_searchers_in_threads_propose_what_they_propose_alone() -> None:
    alone = [_search(i) for i in range(len(_SEARCHES))]
    results: list[list[dict[str, float]] | BaseException | None] = [None] * len(_SEARCHES)
    barrier = threading.Barrier(len(_SEARCHES))

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = _search(i)
        except BaseException as exc:  # reported below, not lost in the thread
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(_SEARCHES))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert results == alone
