"""FedHyper on Flower: a Message-API strategy and ClientApp helpers (extra ``autolr[flower]``).

* :class:`FedHyperStrategy`: Flower's FedAvg sampling and messaging with a
  :class:`~autolr.federated.FedHyperServer` step (rules G, GM, SL; FedAvg or FedAdam) as the
  aggregation; sends the local LR and Δ_{t−1} with every round for FedHyper-CL; drops and
  reports NaN updates, error replies and nodes that miss the timeout; ``state_dict`` /
  ``checkpoint=`` + :meth:`~FedHyperStrategy.resume` survive a ServerApp/SuperLink restart.
* :func:`fedhyper_client`, :func:`train_reply`, :func:`local_lr`, :func:`previous_update`,
  :func:`strategy_round`: the ClientApp side (FedHyper-CL in your training loop).
* :mod:`autolr.integrations.flower.digits`: a ready-made ServerApp/ClientApp pair reproducing
  :func:`autolr.federated.simulate` on a real Flower deployment.

Built on ``flwr.serverapp`` / ``flwr.clientapp`` (the Message API that Flower 1.42 documents;
needs Python >= 3.11). ``import autolr`` never imports flwr.
"""

from __future__ import annotations

from autolr.integrations import require

require("flwr", "flower")

from ._client import (  # noqa: E402
    fedhyper_client,
    local_lr,
    previous_update,
    strategy_round,
    train_reply,
)
from ._strategy import (  # noqa: E402
    LOCAL_LR_KEY,
    PREV_UPDATE_KEY,
    ROUND_KEY,
    FedHyperStrategy,
    FlowerRound,
)

__all__ = [
    "LOCAL_LR_KEY",
    "PREV_UPDATE_KEY",
    "ROUND_KEY",
    "FedHyperStrategy",
    "FlowerRound",
    "fedhyper_client",
    "local_lr",
    "previous_update",
    "strategy_round",
    "train_reply",
]
