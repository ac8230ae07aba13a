"""A ready-made Flower app: FedHyper on the bundled digits data, as :func:`simulate` runs it.

``server_app`` and ``client_app`` reproduce :func:`autolr.federated.simulate` for one method on
a real Flower deployment (or Flower's simulation engine): same train/validation split, Dirichlet
shards, initial MLP and per-client batch orders, so with ``fraction-train = 1`` and one SuperNode
per client the run's accuracies and global LRs match ``simulate(method, fraction=1.0,
num_clients=<SuperNodes>)``. Point an app's ``pyproject.toml`` at them::

    [tool.flwr.app.components]
    serverapp = "autolr.integrations.flower.digits:server_app"
    clientapp = "autolr.integrations.flower.digits:client_app"

Run config (``[tool.flwr.app.config]`` / ``flwr run --run-config``; every key is optional, the
defaults are :func:`simulate`'s): ``method``, ``num-rounds``, ``fraction-train``, ``min-nodes``,
``local-epochs``, ``batch-size``, ``global-lr``, ``local-lr``, ``hyper-lr``, ``local-hyper-lr``,
``client-hyper-lr``, ``adam-lr`` (<= 0: 0.1 · global-lr), ``adam-hyper-lr``, ``cos-hyper-lr``,
``dirichlet-alpha``, ``hidden``, ``weighted``, ``val-fraction``, ``seed``, ``timeout`` (seconds
a round waits for replies), ``checkpoint`` (path: resume after a restart), ``results`` (path:
JSON of the per-round metrics, rewritten after every round). Each SuperNode needs
``--node-config "partition-id=K num-partitions=N"`` (the simulation engine sets both).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from torch import nn

from autolr._errors import ConfigError
from autolr.federated import dirichlet_partition, load_digits, parse_method
from autolr.federated._simulate import _model, _seed

from ._client import fedhyper_client, strategy_round, train_reply
from ._strategy import FedHyperStrategy

__all__ = ["DEFAULTS", "client_app", "make_client_app", "make_server_app", "server_app"]

#: Run-config keys and their defaults (:func:`autolr.federated.simulate`'s).
DEFAULTS: dict[str, Any] = {
    "method": "fedhyper-g",
    "num-rounds": 30,
    "fraction-train": 1.0,
    "min-nodes": 2,
    "local-epochs": 2,
    "batch-size": 16,
    "global-lr": 1.0,
    "local-lr": 0.1,
    "hyper-lr": 1.0,
    "local-hyper-lr": 1.0,
    "client-hyper-lr": 1.0,
    "adam-lr": 0.0,
    "adam-hyper-lr": 1e-3,
    "cos-hyper-lr": 0.3,
    "dirichlet-alpha": 0.5,
    "hidden": 32,
    "weighted": True,
    "val-fraction": 0.2,
    "seed": 0,
    "timeout": 600.0,
    "checkpoint": "",
    "results": "",
}


def _run_config(context: Context) -> dict[str, Any]:
    cfg = dict(DEFAULTS)
    unknown = sorted(set(context.run_config) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown run-config keys {unknown}; the digits app knows {list(cfg)}")
    cfg.update(context.run_config)
    return cfg


@functools.lru_cache(maxsize=4)
def _data(
    seed: int, val_fraction: float, num_clients: int, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """simulate()'s split: (x_train, y_train, x_val, y_val, client shards)."""
    x, y = load_digits()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_seed(seed, 1)))
    n_val = round(val_fraction * len(y))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    shards = dirichlet_partition(y[train_idx], num_clients, alpha, seed=_seed(seed, 2) % 2**32)
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx], shards


def _load(model: nn.Module, arrays: ArrayRecord) -> None:
    with torch.no_grad():
        for p, a in zip(model.parameters(), arrays.values()):
            p.copy_(torch.from_numpy(a.numpy().copy()))


def _train(msg: Message, context: Context) -> Message:
    cfg = _run_config(context)
    spec = parse_method(cfg["method"])
    k = int(context.node_config["partition-id"])
    n = int(context.node_config["num-partitions"])
    x_tr, y_tr, _, _, shards = _data(cfg["seed"], cfg["val-fraction"], n, cfg["dirichlet-alpha"])
    r = strategy_round(msg)
    if r is None:
        raise ConfigError("the digits client app needs FedHyperStrategy on the server")
    model = _model(cfg["hidden"], cfg["seed"])
    _load(model, msg.content["arrays"])
    opt = torch.optim.SGD(model.parameters(), lr=cfg["local-lr"])
    client = fedhyper_client(msg, opt, cl=spec["cl"], hypergrad_lr=cfg["client-hyper-lr"])
    idx = shards[k]
    # The batch order of simulate()'s client k in round r.
    gen = torch.Generator().manual_seed(_seed(cfg["seed"], 4, r, k))
    total, steps, bs = 0.0, 0, cfg["batch-size"]
    for _ in range(cfg["local-epochs"]):
        order = idx[torch.randperm(len(idx), generator=gen)]
        for i in range(0, len(order), bs):
            b = order[i : i + bs]
            loss = nn.functional.cross_entropy(model(x_tr[b]), y_tr[b])
            if not torch.isfinite(loss):
                total, steps = math.nan, 1  # diverged: the server drops a non-finite update
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            client.step()
            total += float(loss.detach())
            steps += 1
        if math.isnan(total):
            break
    metrics = {"train-loss": total / max(steps, 1), "client-lr": client.lr}
    return train_reply(msg, model.parameters(), len(idx), metrics)


def make_client_app(mods: list[Any] | None = None) -> ClientApp:
    """The digits ClientApp (``mods``: Flower client mods, e.g. for fault injection)."""
    app = ClientApp()
    app.train(mods=mods)(_train)
    return app


def _strategy(cfg: dict[str, Any]) -> FedHyperStrategy:
    spec = parse_method(cfg["method"])
    adam = spec["server_optimizer"] == "adam"
    adam_lr = cfg["adam-lr"] if cfg["adam-lr"] > 0 else 0.1 * cfg["global-lr"]
    hyper = (
        cfg["cos-hyper-lr"] if spec["cos"] else cfg["adam-hyper-lr"] if adam else cfg["hyper-lr"]
    )
    return FedHyperStrategy(
        rule=spec["rule"],
        global_lr=adam_lr if adam else cfg["global-lr"],
        hypergrad_lr=hyper,
        server_optimizer=spec["server_optimizer"],
        local_lr=cfg["local-lr"],
        adapt_local_lr=spec["sl"],
        local_hypergrad_lr=cfg["cos-hyper-lr"] if spec["cos"] else cfg["local-hyper-lr"],
        normalize=spec["cos"],
        weighted=cfg["weighted"],
        send_previous_update=spec["cl"],
        checkpoint=cfg["checkpoint"] or None,
        fraction_train=cfg["fraction-train"],
        fraction_evaluate=0.0,  # evaluated on the server's validation split, like simulate()
        min_train_nodes=1,
        min_evaluate_nodes=0,
        min_available_nodes=cfg["min-nodes"],
    )


def _main(grid: Grid, context: Context) -> None:
    cfg = _run_config(context)
    strategy = _strategy(cfg)
    model = _model(cfg["hidden"], cfg["seed"])
    arrays, done = strategy.resume(ArrayRecord(model.state_dict()))
    # The validation split does not depend on the number of clients.
    _, _, x_val, y_val, _ = _data(cfg["seed"], cfg["val-fraction"], 1, cfg["dirichlet-alpha"])
    results_path = Path(cfg["results"]) if cfg["results"] else None
    rows: list[dict[str, Any]] = []
    if results_path is not None and done and results_path.exists():
        rows = json.loads(results_path.read_text())["rounds"][:done]
    start = time.perf_counter()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None
        _load(model, arrays)
        with torch.no_grad():
            logits = model(x_val)
            val_loss = float(nn.functional.cross_entropy(logits, y_val))
            acc = float((logits.argmax(1) == y_val).float().mean())
        entry = strategy.rounds[-1]
        rep = entry.report
        rows.append(
            {
                "round": entry.round + 1,
                "accuracy": acc,
                "val_loss": val_loss,
                "global_lr": rep.global_lr if rep else math.nan,
                "local_lr": rep.local_lr if rep else math.nan,
                "momentum_coef": rep.momentum_coef if rep else math.nan,
                "sampled": len(entry.sampled),
                "aggregated": len(entry.aggregated),
                "dropped": len(entry.dropped),
                "failed": {str(n): why for n, why in entry.failed.items()},
                "missing": len(entry.missing),
                "elapsed_s": time.perf_counter() - start,
            }
        )
        if results_path is not None:
            tmp = results_path.with_name(results_path.name + ".tmp")
            tmp.write_text(json.dumps({"config": cfg, "rounds": rows}, allow_nan=True))
            os.replace(tmp, results_path)
        return MetricRecord({"accuracy": acc, "val-loss": val_loss})

    if cfg["num-rounds"] - done > 0:
        strategy.start(
            grid,
            arrays,
            num_rounds=cfg["num-rounds"] - done,
            timeout=float(cfg["timeout"]),
            train_config=ConfigRecord(),
            evaluate_fn=evaluate,
        )


def make_server_app() -> ServerApp:
    """The digits ServerApp: FedHyperStrategy for the run config's ``method``."""
    app = ServerApp()
    app.main()(_main)
    return app


#: The digits ServerApp (``autolr.integrations.flower.digits:server_app``).
server_app = make_server_app()
#: The digits ClientApp (``autolr.integrations.flower.digits:client_app``).
client_app = make_client_app()
