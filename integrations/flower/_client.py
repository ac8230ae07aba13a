"""ClientApp side: read FedHyperStrategy's round config, run FedHyper-CL, build the reply."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from autolr._deprecate import take_renamed
from autolr._errors import ConfigError, ConfigTypeError
from autolr._forward import keyword_only
from autolr._validate import check_float, check_instance, check_int
from autolr.federated import FedHyperClient

from ._strategy import LOCAL_LR_KEY, PREV_UPDATE_KEY, ROUND_KEY

__all__ = ["fedhyper_client", "local_lr", "previous_update", "strategy_round", "train_reply"]

# fedhyper_client's **client_kwargs: FedHyperClient's keyword arguments and the old name.
_CLIENT_KWARGS = (*keyword_only(FedHyperClient), "hyper_lr")
# torch float dtypes numpy (so an ArrayRecord) cannot carry: sent as float32, losslessly.
_WIDENED = {
    getattr(torch, name)
    for name in ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")
    if hasattr(torch, name)
}


def _config(msg: Message, config_key: str) -> Any:
    if not isinstance(msg, Message):
        raise ConfigTypeError(f"msg must be a flwr.app.Message, got {type(msg).__name__}")
    return msg.content.config_records.get(config_key)


def local_lr(msg: Message, default: float | None = None, *, config_key: str = "config") -> float:
    """The local LR FedHyperStrategy sent with this round (SL-adapted when enabled).

    Raises:
        ConfigError: the message carries none and no ``default`` was given; the message's
            value or ``default`` is not a finite number > 0 (a non-number also raises a
            :class:`ConfigTypeError`).
    """
    config = _config(msg, config_key)
    if default is not None:
        default = check_float("default", default, minimum=0.0, min_inclusive=False)
    value = None if config is None else config.get(LOCAL_LR_KEY)
    if value is None:
        if default is None:
            raise ConfigError(
                f"the message has no {LOCAL_LR_KEY!r} in its {config_key!r} ConfigRecord: is the "
                "ServerApp using FedHyperStrategy? Pass default= to use a fixed LR"
            )
        return default
    name = f"{LOCAL_LR_KEY!r} in the message's {config_key!r} ConfigRecord"
    return check_float(name, value, minimum=0.0, min_inclusive=False)


def strategy_round(msg: Message, *, config_key: str = "config") -> int | None:
    """FedHyper's 0-based round index sent with this round (None if absent).

    Raises:
        ConfigError: the message's value is not an int >= 0 (a non-integer also raises a
            :class:`ConfigTypeError`).
    """
    config = _config(msg, config_key)
    value = None if config is None else config.get(ROUND_KEY)
    if value is None:
        return None
    name = f"{ROUND_KEY!r} in the message's {config_key!r} ConfigRecord"
    return check_int(name, value, minimum=0)


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
        ConfigError: no LR in the message and no ``default_lr``; a bad LR; Δ_{t−1} not shaped
            like the optimizer's parameters.
        ConfigTypeError: ``cl`` is not a bool; an argument FedHyperClient does not take.

    Example (in a ``@app.train()`` function)::

        client = fedhyper_client(msg, opt, hypergrad_lr=1.0)
        for x, y in batches:
            opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step(); client.step()
        return train_reply(msg, model.parameters(), num_examples=n)
    """
    check_instance("cl", cl, bool)
    unknown = [k for k in client_kwargs if k not in _CLIENT_KWARGS]
    if unknown:
        raise ConfigTypeError(
            f"fedhyper_client() got unexpected keyword argument(s) {unknown}; it takes msg, "
            f"optimizer, cl, default_lr and FedHyperClient's {list(_CLIENT_KWARGS[:-1])}"
        )
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


def _to_numpy(i: int, t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype in _WIDENED:
        t = t.float()
    try:
        return t.numpy().copy()
    except (TypeError, RuntimeError):  # complex32, quantized, ...: no numpy dtype
        raise ConfigTypeError(
            f"params[{i}] has dtype {t.dtype}, which an ArrayRecord cannot carry; convert it "
            "(e.g. t.float())"
        ) from None


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
        params: the trained parameters (torch tensors), in the order of the message's arrays:
            ``model.parameters()`` or ``state_dict.values()``, not a ``state_dict`` (a mapping)
            itself. Tensors of a float dtype numpy lacks (``bfloat16``, ``float8``) are sent
            as float32 (exact: an ArrayRecord cannot carry them).
        num_examples: the client's sample count (the update's weight in the average).
        metrics: extra scalar metrics (numbers, numpy scalars or 1-element tensors).
        arrays_key: key of the model ArrayRecord in the message and the reply.
        weight_key: key of the sample count in the reply's MetricRecord.

    Raises:
        ConfigError / ConfigTypeError: parameter count differs from the message's arrays;
            ``params`` is a mapping, a single tensor or holds non-tensors or tensors of a dtype
            an ArrayRecord cannot carry (complex32, quantized, ...); bad ``num_examples`` or
            metrics.
    """
    check_instance("msg", msg, Message)
    record = msg.content.array_records.get(arrays_key)
    if record is None:
        raise ConfigError(f"the message has no {arrays_key!r} ArrayRecord to take the keys from")
    keys = list(record.keys())
    if isinstance(params, Mapping):
        raise ConfigTypeError(
            "params must be the tensors in the message's order, got a mapping (a state_dict?): "
            "pass model.parameters() or state_dict.values()"
        )
    if isinstance(params, torch.Tensor):
        raise ConfigTypeError("params must be an iterable of tensors, got one tensor: pass [t]")
    try:
        tensors = list(params)
    except TypeError:
        raise ConfigTypeError(
            f"params must be an iterable of tensors, got {type(params).__name__}"
        ) from None
    for i, t in enumerate(tensors):
        check_instance(f"params[{i}]", t, torch.Tensor)
    if len(tensors) != len(keys):
        raise ConfigError(f"params has {len(tensors)} tensors, the message's arrays have {keys}")
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 0:
        raise ConfigError(f"num_examples must be an int >= 0, got {num_examples!r}")
    out = MetricRecord({weight_key: num_examples})
    for k, v in (metrics or {}).items():
        out[k] = _metric(k, v)
    values = {k: _to_numpy(i, t) for i, (k, t) in enumerate(zip(keys, tensors))}
    arrays = ArrayRecord({k: Array(v) for k, v in values.items()})
    return Message(RecordDict({arrays_key: arrays, "metrics": out}), reply_to=msg)
