"""Several worker processes sharing one Optuna storage: no errors, no duplicate work.

Each worker builds its own :class:`AutoLRSSampler` / :class:`ForecastPruner` (as Optuna
requires) and derives everything from the shared storage. Storages: a ``JournalStorage``
file, SQLite and, where ``pgserver`` + ``psycopg2-binary`` are installed (the ``postgres``
extra), PostgreSQL over ``RDBStorage``. Also checks that a seeded study replays identically
in another process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState  # noqa: E402

N_PER_WORKER = 7

_WORKER = textwrap.dedent(
    """
    import json, math, sys, time
    import torch
    torch.set_num_threads(1)
    import optuna
    from autolr.integrations.optuna import AutoLRSSampler, ForecastPruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The test below also exec()s this header in-process (where sys.argv is pytest's).
    if len(sys.argv) >= 6:
        mode, spec, name, worker, n_trials = sys.argv[1:6]


    def storage(spec):
        kind, _, where = spec.partition(":")
        if kind == "journal":
            from optuna.storages.journal import JournalFileBackend
            return optuna.storages.JournalStorage(JournalFileBackend(where))
        if kind == "sqlite":
            return optuna.storages.RDBStorage(
                "sqlite:///" + where, engine_kwargs={"connect_args": {"timeout": 60}}
            )
        if kind == "inmemory":
            return None
        return optuna.storages.RDBStorage(spec)  # a full SQLAlchemy URL


    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
        wd = trial.suggest_float("wd", 0.0, 1.0)
        trial.set_user_attr("worker", worker)
        floor = (math.log10(lr) + 1.5) ** 2 + 0.5 * (wd - 0.3) ** 2
        for step in range(12):
            trial.report(floor + math.exp(-0.4 * step), step)
            if mode == "mp":
                time.sleep(0.02)  # let the workers' trials overlap
            if trial.should_prune():
                raise optuna.TrialPruned()
        return floor + math.exp(-0.4 * 11)


    # One seed for every worker (as examples/optuna_search.py runs): trial numbers, not
    # seeds, keep the workers' proposals apart.
    sampler = AutoLRSSampler(seed=0, n_startup_trials=4)
    pruner = ForecastPruner(n_startup_trials=2)
    st = storage(spec)
    if st is None:
        study = optuna.create_study(sampler=sampler, pruner=pruner)
    else:
        study = optuna.load_study(study_name=name, storage=st, sampler=sampler, pruner=pruner)
    study.optimize(objective, n_trials=int(n_trials), catch=())
    if mode == "repro":
        print(json.dumps([[t.params, t.state.name] for t in study.trials]))
    """
)


def _launch(tmp_path: Path, mode: str, spec: str, name: str, worker: int) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(script), mode, spec, name, str(worker), str(N_PER_WORKER)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _run_two_workers(tmp_path: Path, spec: str, storage) -> None:
    name = "shared"
    optuna.create_study(study_name=name, storage=storage)
    procs = [_launch(tmp_path, "mp", spec, name, w) for w in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-3000:]
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2 * N_PER_WORKER
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 2
    # no duplicate work: every trial evaluated a distinct configuration
    configs = {(t.params["lr"], t.params["wd"]) for t in trials}
    assert len(configs) == len(trials)
    assert {t.user_attrs["worker"] for t in trials} == {"1", "2"}
    sources = [t.system_attrs.get("autolr:source") for t in trials]
    assert "gp" in sources, sources


@pytest.mark.slow
def test_two_workers_journal_file(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    path = str(tmp_path / "journal.log")
    storage = optuna.storages.JournalStorage(JournalFileBackend(path))
    _run_two_workers(tmp_path, f"journal:{path}", storage)


@pytest.mark.slow
def test_two_workers_sqlite(tmp_path):
    path = str(tmp_path / "study.db")
    storage = optuna.storages.RDBStorage(
        "sqlite:///" + path, engine_kwargs={"connect_args": {"timeout": 60}}
    )
    _run_two_workers(tmp_path, f"sqlite:{path}", storage)


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    pgserver = pytest.importorskip(
        "pgserver", reason="PostgreSQL test needs the postgres extra: pip install autolr[postgres]"
    )
    pytest.importorskip(
        "psycopg2", reason="PostgreSQL test needs the postgres extra: pip install autolr[postgres]"
    )
    server = pgserver.get_server(str(tmp_path_factory.mktemp("pgdata")), cleanup_mode="stop")
    try:
        # SQLAlchemy picks a driver from the scheme; name psycopg2 (what the extra installs).
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()


@pytest.mark.slow
def test_two_workers_postgres(tmp_path, postgres_url):
    storage = optuna.storages.RDBStorage(postgres_url)
    _run_two_workers(tmp_path, postgres_url, storage)


def test_seeded_study_replays_in_another_process(tmp_path):
    from autolr.integrations.optuna import AutoLRSSampler, ForecastPruner

    proc = _launch(tmp_path, "repro", "inmemory:", "-", 0)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()[-3000:]
    there = json.loads(out.decode().strip().splitlines()[-1])

    ns: dict = {}
    exec(compile(_WORKER.split("sampler = AutoLRSSampler")[0], "worker", "exec"), ns)
    ns["mode"], ns["worker"] = "repro", "0"
    study = optuna.create_study(
        sampler=AutoLRSSampler(seed=0, n_startup_trials=4),
        pruner=ForecastPruner(n_startup_trials=2),
    )
    study.optimize(ns["objective"], n_trials=N_PER_WORKER)
    here = [[t.params, t.state.name] for t in study.trials]
    assert here == there
