"""Federated learning-rate adaptation (FedHyper) and an in-process federated simulator.

* :class:`FedHyperServer`: FedAvg / FedAdam server step with FedHyper's hypergradient global-LR
  rules (G, GM) and server-side local-LR adaptation (SL) that persists across rounds.
* :class:`FedHyperClient`: FedHyper's client-side local-LR rule (CL) around a torch optimizer.
* :func:`simulate`: N clients with Dirichlet non-IID shards of the bundled digits data; runs
  FedAvg, FedAdam and FedHyper combinations on CPU and returns per-round metrics.

Reference: Z. Wang, J. Wang, A. Li, "FedHyper: A Universal and Robust Learning Rate Scheduler
for Federated Learning with Hypergradient Descent", ICLR 2024 (arXiv 2310.03156).
"""

from ._client import FedHyperClient
from ._data import dirichlet_partition, load_digits
from ._server import FedHyperServer, RoundReport
from ._simulate import METHODS, History, RoundMetrics, SimulationResult, parse_method, simulate

__all__ = [
    "METHODS",
    "FedHyperClient",
    "FedHyperServer",
    "History",
    "RoundMetrics",
    "RoundReport",
    "SimulationResult",
    "dirichlet_partition",
    "load_digits",
    "parse_method",
    "simulate",
]
