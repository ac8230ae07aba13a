"""FedHyper in your own federated loop, then the built-in simulation against FedAvg.

Part 1 wires :class:`FedHyperServer` (global LR, rule G) and :class:`FedHyperClient` (local LR,
rule CL) into a hand-written FedAvg loop: this is all a real deployment needs. Part 2 runs
:func:`autolr.federated.simulate` with a deliberately bad initial global LR.

Run: ``python examples/federated.py [--device cuda] [--rounds 20]``
"""

from __future__ import annotations

import argparse
import io

import torch
from torch import nn

from autolr.federated import (
    FedHyperClient,
    FedHyperServer,
    dirichlet_partition,
    load_digits,
    simulate,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)

    # --- Part 1: your own loop -------------------------------------------------------------
    x, y = load_digits()
    x, y = x.to(dev), y.to(dev)
    x_val, y_val, x_tr, y_tr = x[:360], y[:360], x[360:], y[360:]
    shards = dirichlet_partition(y_tr, num_clients=10, alpha=0.5, seed=0)

    def mlp() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).to(dev)

    model, local = mlp(), mlp()
    # Initial global LR 3 is too large for this task; rule G lowers it from the hypergradient.
    server = FedHyperServer(model.parameters(), rule="g", global_lr=3.0, local_lr=0.3)
    opt = torch.optim.SGD(local.parameters(), lr=server.local_lr)
    client = FedHyperClient(opt)
    for rnd in range(args.rounds):
        chosen = torch.randperm(len(shards))[:3].tolist()
        replies, sizes = [], []
        for k in chosen:  # on a device, this is the client's code
            local.load_state_dict(model.state_dict())
            client.begin_round(server.local_lr, server.previous_update)  # Δ_{t-1} is broadcast
            for idx in shards[k].to(dev).split(16):
                loss = nn.functional.cross_entropy(local(x_tr[idx]), y_tr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                client.step()  # CL: adapt the local LR after each step
            replies.append([p.detach().clone() for p in local.parameters()])
            sizes.append(len(shards[k]))
        report = server.step(replies, weights=sizes)  # non-finite replies are dropped
        with torch.no_grad():
            acc = (model(x_val).argmax(1) == y_val).float().mean().item()
        print(
            f"round {rnd + 1:2d}: acc {acc:.3f}  global LR {report.global_lr:.2f}  "
            f"dropped {len(report.dropped)}"
        )
    # Checkpoint: the server's state (η_g, Δ_{t-1}, buffers) loads back with weights_only=True.
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "server": server.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    restored = mlp()
    restored.load_state_dict(ckpt["model"])
    # Resume with the same arguments: load_state_dict refuses a server built with others.
    again = FedHyperServer(restored.parameters(), rule="g", global_lr=3.0, local_lr=0.3)
    again.load_state_dict(ckpt["server"])

    # --- Part 2: the simulation ------------------------------------------------------------
    res = simulate(
        ["fedavg", "fedhyper-g"],
        rounds=args.rounds,
        global_lr=3.0,
        local_lr=0.3,
        device=dev,
    )
    for name, reached in res.rounds_to(0.8).items():
        acc = res.histories[name].final_accuracy
        print(f"{name:12s} rounds to 80 %: {reached}  final accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
