"""FedHyper on a real Flower deployment, checked against the in-process simulator.

Starts a Flower SuperLink and ``--nodes`` SuperNodes as processes on loopback (one digits
partition each), runs the ready-made digits app (:mod:`autolr.integrations.flower.digits`:
``FedHyperStrategy`` on the ServerApp, FedHyper-CL in the ClientApp) with ``flwr run``, then runs
:func:`autolr.federated.simulate` with the same seeds and clients, and prints both per round and
the rounds per minute of each. Needs ``pip install "autolr[flower]"`` (Python >= 3.11).

Run: ``python examples/flower_fedhyper.py [--method fedhyper-g+cl+cos] [--nodes 2] [--rounds 5]``

Your own app: subclass nothing, just use the strategy in a ServerApp::

    strategy = FedHyperStrategy(rule="g", normalize=True, local_lr=0.1, fraction_train=0.5)
    strategy.start(grid, ArrayRecord(model.state_dict()), num_rounds=30)

and, in the ClientApp's ``@app.train()``, ``client = fedhyper_client(msg, optimizer)``,
``client.step()`` after each ``optimizer.step()``, ``return train_reply(msg, params, n)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from autolr.federated import simulate
from autolr.integrations.flower.local import LocalFederation, write_app


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="fedhyper-g+cl+cos")
    ap.add_argument("--nodes", type=int, default=2, help="SuperNodes = clients (all sampled)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--global-lr", type=float, default=1.0)
    ap.add_argument("--local-lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a round waits")
    args = ap.parse_args()

    config = {
        "method": args.method,
        "num-rounds": args.rounds,
        "local-epochs": args.local_epochs,
        "global-lr": args.global_lr,
        "local-lr": args.local_lr,
        "seed": args.seed,
        "min-nodes": args.nodes,
        "timeout": args.timeout,
    }
    with tempfile.TemporaryDirectory(prefix="autolr-flower-") as tmp:
        work = Path(tmp)
        app = write_app(work / "app", config)
        results = work / "results.json"
        nodes = [f"partition-id={k} num-partitions={args.nodes}" for k in range(args.nodes)]
        print(f"starting a SuperLink and {args.nodes} SuperNodes on loopback ...")
        with LocalFederation(nodes, workdir=work / "federation") as fed:
            t0 = time.perf_counter()
            run_id = fed.run(app, {"results": str(results)})
            status = fed.wait(run_id, timeout=args.rounds * args.timeout + 120)
            wall = time.perf_counter() - t0
        if status != "finished:completed" or not results.exists():
            print(f"the Flower run ended with status {status!r}")
            return 1
        rows = json.loads(results.read_text())["rounds"]

    sim = simulate(
        args.method,
        rounds=args.rounds,
        num_clients=args.nodes,
        fraction=1.0,
        local_epochs=args.local_epochs,
        global_lr=args.global_lr,
        local_lr=args.local_lr,
        seed=args.seed,
        progress=False,
    )
    ref = sim.histories[args.method].rounds
    print(f"\n{args.method}, {args.nodes} clients, {args.rounds} rounds")
    print("round | Flower acc  global LR | simulate acc  global LR")
    for r, m in zip(rows, ref):
        print(
            f"{r['round']:5d} | {r['accuracy']:10.4f} {r['global_lr']:10.4f} | "
            f"{m.accuracy:12.4f} {m.global_lr:10.4f}"
        )
    # The ServerApp's clock starts with round 1; `wall` also has the run's start-up.
    rounds_s = rows[-1]["elapsed_s"]
    print(
        f"Flower: {60 * len(rows) / rounds_s:.1f} rounds/min ({rounds_s:.1f} s for the rounds, "
        f"{wall:.1f} s with start-up); simulate: {60 * args.rounds / sim.elapsed_s:.1f} "
        f"rounds/min ({sim.elapsed_s:.2f} s)"
    )
    gap = abs(rows[-1]["accuracy"] - ref[-1].accuracy)
    print(f"final accuracy: Flower {rows[-1]['accuracy']:.4f}, simulate {ref[-1].accuracy:.4f}")
    return 0 if gap <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
