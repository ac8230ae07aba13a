"""ClientApp side: read FedHyperStrategy's round config, run FedHyper-CL, build the reply."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from autolr._deprecate import take_renamed
from autolr._errors import ConfigError, ConfigTypeError
from autolr.federated import FedHyperClient

from ._strategy import LOCAL_LR_KEY, PREV_UPDATE_KEY, ROUND_KEY

__all__ = ["fedhyper_client", "local_lr", "previous_update", "strategy_round", "train_reply"]


def _config(msg: Message, config_key: str) -> Any:
    if not isinstance(msg, Message):
        raise ConfigTypeError(f"msg must be a flwr.app.Message, got {type(msg).__name__}")
    return msg.content.config_records.get(config_key)


def local_lr(msg: Message, default: float | None = None, *, config_key: str = "config") -> float:
    """The local LR FedHyperStrategy sent with this round (SL-adapted when enabled).

    Raises:
        ConfigError: the message carries none and no ``default`` was given.
    """
    config = _config(msg, config_key)
    value = None if config is None else config.get(LOCAL_LR_KEY)
    if value is None:
        if default is None:
            raise ConfigError(
                f"the message has no {LOCAL_LR_KEY!r} in its {config_key!r} ConfigRecord: is the "
                "ServerApp using FedHyperStrategy? Pass default= to use a fixed LR"
            )
        return float(default)
    return float(value)


def strategy_round(msg: Message, *, config_key: str = "config") -> int | None:
    """FedHyper's 0-based round index sent with this round (None if absent)."""
    config = _config(msg, config_key)
    value = None if config is None else config.get(ROUND_KEY)
    return None if value is None else int(value)


def previous_update(msg: Message) -> list[torch.Tensor] | None:
    """Δ_{t−1} sent with this round, as tensors in the model arrays' order (None in round 1)."""
    _config(msg, "config")
    record = msg.content.array_records.get(PREV_UPDATE_KEY)
    if record is None:
        return None
    return [torch.from_numpy(np.array(a.numpy(), copy=True)) for a in record.values()]


def fedhyper_client(
    msg: Message,
    optimizer: torch.optim.Optimizer,
    *,
    cl: bool = True,
    default_lr: float | None = None,
    **client_kwargs: Any,
) -> FedHyperClient:
    """A :class:`~autolr.federated.FedHyperClient` started for this round's training message.

    Sets the optimizer's LR to the server's local LR and, with ``cl=True``, hands Δ_{t−1} to
    FedHyper-CL. Load the global model into the optimizer's parameters first; then call
    ``client.step()`` after every ``optimizer.step()``. The parameters must be the model arrays
    in the message's order (``model.parameters()`` of the model whose ``state_dict`` was sent).

    Args:
        msg: the training message.
        optimizer: the client's torch optimizer.
        cl: adapt the LR within the round (FedHyper-CL); False: only apply the server's LR
            (``client.step()`` then leaves it unchanged).
        default_lr: LR when the message carries none (a plain FedAvg server).
        **client_kwargs: FedHyperClient's arguments (``hypergrad_lr``, ``global_coef``, ...).

    Raises:
        ConfigError: no LR in the message and no ``default_lr``; Δ_{t−1} not shaped like the
            optimizer's parameters.

    Example (in a ``@app.train()`` function)::

        client = fedhyper_client(msg, opt, hypergrad_lr=1.0)
        for x, y in batches:
            opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step(); client.step()
        return train_reply(msg, model.parameters(), num_examples=n)
    """
    lr = local_lr(msg, default_lr)
    # The old name is resolved here so that its warning points at the caller.
    old = take_renamed(
        "fedhyper_client",
        {k: client_kwargs.pop(k) for k in ("hyper_lr",) if k in client_kwargs},
        {"hyper_lr": "hypergrad_lr"},
        {"hypergrad_lr": client_kwargs.get("hypergrad_lr", 1.0)},
        {"hypergrad_lr": 1.0},
    )
    client = FedHyperClient(optimizer, **client_kwargs, **old)
    if not cl:
        client.hypergrad_lr = 0.0  # β = 0: the LR stays the server's
    client.begin_round(lr, previous_update(msg) if cl else None)
    return client


def _metric(key: str, value: Any) -> float | int:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) or (
        isinstance(value, torch.Tensor) and value.numel() == 1
    ):
        return float(value)
    raise ConfigTypeError(f"metric {key!r} must be a number, got {type(value).__name__}")


def train_reply(
    msg: Message,
    params: Iterable[torch.Tensor],
    num_examples: int,
    metrics: Mapping[str, Any] | None = None,
    *,
    arrays_key: str = "arrays",
    weight_key: str = "num-examples",
) -> Message:
    """The reply to a training message: the trained parameters under the model's keys.

    Args:
        msg: the training message being answered (its ``arrays_key`` ArrayRecord gives the keys).
        params: the trained parameters, in the order of the message's arrays.
        num_examples: the client's sample count (the update's weight in the average).
        metrics: extra scalar metrics (numbers, numpy scalars or 1-element tensors).
        arrays_key: key of the model ArrayRecord in the message and the reply.
        weight_key: key of the sample count in the reply's MetricRecord.

    Raises:
        ConfigError / ConfigTypeError: parameter count differs from the message's arrays; bad
            ``num_examples`` or metrics.
    """
    record = msg.content.array_records.get(arrays_key)
    if record is None:
        raise ConfigError(f"the message has no {arrays_key!r} ArrayRecord to take the keys from")
    keys = list(record.keys())
    tensors = list(params)
    if len(tensors) != len(keys):
        raise ConfigError(f"params has {len(tensors)} tensors, the message's arrays have {keys}")
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 0:
        raise ConfigError(f"num_examples must be an int >= 0, got {num_examples!r}")
    out = MetricRecord({weight_key: num_examples})
    for k, v in (metrics or {}).items():
        out[k] = _metric(k, v)
    arrays = ArrayRecord({k: Array(t.detach().cpu().numpy().copy()) for k, t in zip(keys, tensors)})
    return Message(RecordDict({arrays_key: arrays, "metrics": out}), reply_to=msg)
