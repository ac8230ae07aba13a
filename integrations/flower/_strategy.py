"""FedHyperStrategy: a Flower Message-API strategy running FedHyperServer's rules."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from autolr._deprecate import take_renamed
from autolr._errors import ConfigError, ConfigTypeError, StateError
from autolr._forward import keyword_only, set_forwarding_signature
from autolr._statecheck import (
    _short,
    _state_error,
    _state_int,
    _state_keys,
    _state_list,
    _state_tensor,
    _state_version,
)
from autolr._validate import check_instance
from autolr.federated import FedHyperServer, RoundReport
from autolr.federated._server import RENAMED_ARGS

__all__ = ["LOCAL_LR_KEY", "PREV_UPDATE_KEY", "ROUND_KEY", "FedHyperStrategy", "FlowerRound"]

#: ConfigRecord key of the clients' local LR (SL-adapted when enabled).
LOCAL_LR_KEY = "fedhyper-local-lr"
#: ConfigRecord key of FedHyper's round index (0-based; continues across a resumed run).
ROUND_KEY = "fedhyper-round"
#: RecordDict key of the ArrayRecord holding Δ_{t−1}, for FedHyper-CL clients.
PREV_UPDATE_KEY = "fedhyper-prev-update"

_STATE_VERSION = 1
# FedHyperServer's keyword arguments: the strategy takes and forwards exactly these, with the
# server's defaults and checks, so a new server argument needs no change here.
_SERVER_PARAMS = keyword_only(FedHyperServer)
_LOG = logging.getLogger("flwr")  # Flower's logger: the lines reach `flwr log` and the SuperLink


@dataclass(frozen=True)
class FlowerRound:
    """What one Flower training round did, node by node.

    Attributes:
        server_round: Flower's round number (restarts at 1 in a resumed run).
        round: FedHyper's 0-based round index (continues across a resumed run).
        sampled: node IDs the round's training messages went to.
        aggregated: node IDs whose update was averaged in.
        dropped: node IDs whose update held NaN/inf (dropped, never averaged in).
        failed: node ID → reason, for error replies (ClientApp exception, node unavailable)
            and replies without a usable ArrayRecord/MetricRecord.
        missing: node IDs that had not replied when the round's timeout expired.
        report: the :class:`~autolr.federated.RoundReport` of the server step (None when no
            reply was usable: the model and the LRs were left unchanged).
    """

    server_round: int
    round: int
    sampled: tuple[int, ...]
    aggregated: tuple[int, ...]
    dropped: tuple[int, ...]
    failed: dict[int, str] = field(default_factory=dict)
    missing: tuple[int, ...] = ()
    report: RoundReport | None = None


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0, got {value!r}")


def _check_checkpoint(checkpoint: Any) -> Path | None:
    """``checkpoint`` as a Path: a file (existing or not) in an existing folder."""
    if checkpoint is None:
        return None
    check_instance("checkpoint", checkpoint, (str, os.PathLike))
    path = Path(checkpoint)
    if path.is_dir():
        raise ConfigError(
            f"checkpoint must be a file path, got the folder {str(path)!r}: name a file in it, "
            "e.g. checkpoint='<folder>/fedhyper.pt'"
        )
    if not path.parent.is_dir():
        raise ConfigError(
            f"checkpoint {str(path)!r}: the folder {str(path.parent)!r} does not exist; create "
            "it first (the checkpoint is written after every round)"
        )
    return path


# torch dtypes of the model arrays: those an ArrayRecord (numpy) can carry and a rule can train.
_FLOAT_DTYPES = (torch.float16, torch.float32, torch.float64)


def _check_model_array(key: str, value: np.ndarray) -> None:
    """A global-model array must be floating-point and finite (ConfigError otherwise)."""
    if not np.issubdtype(value.dtype, np.floating):
        raise ConfigError(
            f"array {key!r} has dtype {value.dtype}; FedHyperStrategy treats every array "
            "as a parameter, so send floating-point parameters only (no integer buffers "
            "such as BatchNorm's num_batches_tracked)"
        )
    if not np.isfinite(value).all():
        raise ConfigError(
            f"array {key!r} of the model holds NaN/inf: start from a finite model (every "
            "client update from it would be non-finite and dropped)"
        )


class FedHyperStrategy(FedAvg):
    """Flower strategy (Message API, ``flwr.serverapp``) applying FedHyper to the round's update.

    Sampling, messaging and client-side evaluation are Flower's :class:`FedAvg`; the aggregation
    is a :class:`~autolr.federated.FedHyperServer` step on the replies, so every FedHyper rule
    (G, GM, SL, ``normalize``; FedAvg or FedAdam server step) behaves exactly as in
    :func:`autolr.federated.simulate`. Each round's training messages carry, besides the model
    (``arrays``) and the config:

    * ``config["fedhyper-local-lr"]``: the clients' LR (SL moves it; else ``local_lr``);
    * ``config["fedhyper-round"]``: FedHyper's 0-based round index (continues after a resume);
    * ``content["fedhyper-prev-update"]``: Δ_{t−1} as an ArrayRecord keyed like the model, for
      FedHyper-CL (absent in the first round or with ``send_previous_update=False``).

    :func:`~autolr.integrations.flower.fedhyper_client` reads them in a ``ClientApp``.

    Faults are expected events. Error replies (a ClientApp exception, a dead node), replies
    without one ArrayRecord of the model's keys and shapes, updates holding NaN/inf, and nodes
    that miss the round's ``timeout`` are left out of the average, logged as a WARNING, counted
    in the round's train metrics (``fedhyper-dropped``, ``fedhyper-failed``,
    ``fedhyper-missing``) and listed node by node in :attr:`rounds`. A round with no usable reply
    keeps the model and the LRs; so does one whose replies all weigh 0 or whose average would
    overflow, and one that sampled no node (``fraction_train`` × the connected nodes rounds
    down to 0 with ``min_train_nodes=0``): each logs one WARNING saying why.

    Every array of the model is a parameter of the rule: send floating-point parameters of one
    dtype (``ArrayRecord(model.state_dict())`` of a model without buffers, or
    ``ArrayRecord({name: Array(p.numpy()) for name, p in model.named_parameters()})``).

    Args:
        weighted: (bool) weight each update by its reply's ``weighted_by_key`` metric
            (FedAvg); False: uniform mean (the released FedHyper code).
        send_previous_update: (bool) broadcast Δ_{t−1} for FedHyper-CL (one extra model-sized
            download per round). Default True.
        checkpoint: file written (atomically) after every round with :meth:`state_dict`;
            :meth:`resume` restarts from it after the ServerApp or SuperLink was restarted.
            Its folder must exist.
        **kwargs: every keyword argument of :class:`~autolr.federated.FedHyperServer`
            (``rule``, ``global_lr``, ``hypergrad_lr``, ..., ``normalize``: same names,
            defaults and checks; ``server_optimizer="adam"`` is FedAdam), and the rest
            :class:`flwr.serverapp.strategy.FedAvg`'s (``fraction_train``,
            ``min_train_nodes``, ``min_available_nodes``, ...).

    ``hyper_lr`` and ``local_hyper_lr`` are the deprecated old names of ``hypergrad_lr`` and
    ``local_hypergrad_lr`` (one DeprecationWarning; removed in the next release).

    Raises:
        ConfigError / ConfigTypeError: bad arguments (checked here, before any round), e.g. a
            non-bool ``weighted``, a ``checkpoint`` that is a folder or lies in a missing one.
        ConfigError (at the first round): a model array that is not floating-point or holds
            NaN/inf.

    Example:
        >>> strategy = FedHyperStrategy(rule="g", global_lr=1.0, local_lr=0.1,
        ...                             fraction_evaluate=0.0, min_available_nodes=2)
        >>> strategy.server is None  # built from the first round's arrays
        True
    """

    def __init__(
        self,
        *,
        weighted: bool = True,
        send_previous_update: bool = True,
        checkpoint: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        check_instance("weighted", weighted, bool)
        check_instance("send_previous_update", send_previous_update, bool)
        checkpoint_path = _check_checkpoint(checkpoint)
        server_kwargs = {k: kwargs.pop(k) for k in _SERVER_PARAMS if k in kwargs}
        new_names = {new: _SERVER_PARAMS[new].default for new in RENAMED_ARGS.values()}
        server_kwargs |= take_renamed(
            "FedHyperStrategy",
            {k: kwargs.pop(k) for k in RENAMED_ARGS if k in kwargs},
            RENAMED_ARGS,
            {new: server_kwargs.get(new, default) for new, default in new_names.items()},
            new_names,
        )
        fedavg_kwargs = kwargs  # what is left
        for name in ("fraction_train", "fraction_evaluate"):
            if name in fedavg_kwargs:
                _check_fraction(name, fedavg_kwargs[name])
        for name in ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes"):
            if name in fedavg_kwargs:
                _check_count(name, fedavg_kwargs[name])
        try:
            super().__init__(**fedavg_kwargs)
        except TypeError as exc:
            raise ConfigTypeError(f"FedHyperStrategy: {exc} (FedAvg's arguments)") from None
        self._server_kwargs: dict[str, Any] = {
            name: server_kwargs.get(name, p.default) for name, p in _SERVER_PARAMS.items()
        }
        # Check FedHyperServer's arguments now, not at the first round on a remote SuperLink.
        FedHyperServer([torch.zeros(1)], **self._server_kwargs)
        self.weighted = weighted
        self.send_previous_update = send_previous_update
        self.checkpoint = checkpoint_path
        self.server: FedHyperServer | None = None
        #: Per training round, what happened node by node (this process's rounds only).
        self.rounds: list[FlowerRound] = []
        self.round = 0  # FedHyper rounds configured so far, resumed ones included
        self._keys: list[str] = []
        self._params: list[torch.Tensor] = []
        self._sent: list[Message] = []

    # ------------------------------------------------------------------ model <-> server
    def _build(self, arrays: ArrayRecord) -> None:
        if not isinstance(arrays, ArrayRecord) or len(arrays) == 0:
            raise ConfigError(f"the model arrays must be a non-empty ArrayRecord, got {arrays!r}")
        params = []
        for key, arr in arrays.items():
            value = arr.numpy()
            _check_model_array(key, value)
            params.append(torch.from_numpy(np.array(value, copy=True)))
        self._keys = list(arrays.keys())
        self._params = params
        self.server = FedHyperServer(self._params, **self._server_kwargs)

    def _load_arrays(self, arrays: ArrayRecord) -> None:
        """Make ``arrays`` the server's global parameters (checks keys, shapes, dtypes and
        values first: on error nothing changes)."""
        if self.server is None:
            self._build(arrays)
            return
        if not isinstance(arrays, ArrayRecord) or list(arrays.keys()) != self._keys:
            got = list(arrays.keys()) if isinstance(arrays, ArrayRecord) else repr(arrays)
            raise ConfigError(
                f"the model arrays have keys {got}, the strategy was built for {self._keys}"
            )
        values = []
        for key, p in zip(self._keys, self._params):
            value = arrays[key].numpy()
            if tuple(value.shape) != tuple(p.shape):
                raise ConfigError(
                    f"array {key!r} has shape {tuple(value.shape)}, expected {tuple(p.shape)}"
                )
            _check_model_array(key, value)
            values.append(value)
        for p, value in zip(self._params, values):
            p.copy_(torch.from_numpy(np.asarray(value)))

    def _record(self, tensors: Iterable[torch.Tensor]) -> ArrayRecord:
        return ArrayRecord(
            {k: Array(t.detach().cpu().numpy().copy()) for k, t in zip(self._keys, tensors)}
        )

    @property
    def global_arrays(self) -> ArrayRecord | None:
        """The current global model as an ArrayRecord (None before the first round)."""
        return None if self.server is None else self._record(self._params)

    # ------------------------------------------------------------------ rounds
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample nodes like FedAvg and send the model, the local LR and Δ_{t−1}."""
        self._load_arrays(arrays)
        assert self.server is not None
        config[LOCAL_LR_KEY] = float(self.server.local_lr)
        config[ROUND_KEY] = int(self.round)
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if not messages and self.fraction_train > 0.0:
            # fraction_train=0.0 skips training on purpose (FedAvg warned at construction);
            # otherwise int(nodes × fraction_train) rounded down to 0 with min_train_nodes=0.
            _LOG.warning(
                "FedHyperStrategy round %d: sampled no node for training (fraction_train=%g of "
                "%d connected nodes rounds down to 0 and min_train_nodes=%d): the model and the "
                "LRs stay unchanged; raise fraction_train or set min_train_nodes >= 1",
                server_round,
                self.fraction_train,
                len(list(grid.get_node_ids())),
                self.min_train_nodes,
            )
        prev = self.server.previous_update
        if messages and self.send_previous_update and prev is not None:
            # FedAvg shares one RecordDict among the round's messages: add Δ_{t−1} once.
            messages[0].content[PREV_UPDATE_KEY] = self._record(prev)
        self._sent = messages
        return messages

    def _node_of(self, reply: Message, by_id: dict[str, int]) -> int:
        # A NODE_UNAVAILABLE reply comes from the SuperLink: map it back via the message ID.
        return by_id.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)

    def _parse_reply(self, content: RecordDict) -> tuple[list[torch.Tensor], float] | str:
        """(client params, weight) of one reply, or why it cannot be used."""
        records = list(content.array_records.values())
        if len(records) != 1:
            return f"the reply holds {len(records)} ArrayRecords, expected 1"
        arrays = records[0]
        if list(arrays.keys()) != self._keys:
            return f"the reply's arrays have keys {list(arrays.keys())}, expected {self._keys}"
        tensors = []
        for key, p in zip(self._keys, self._params):
            value = arrays[key].numpy()
            if tuple(value.shape) != tuple(p.shape):
                return f"array {key!r} has shape {tuple(value.shape)}, expected {tuple(p.shape)}"
            tensors.append(torch.from_numpy(np.array(value, copy=True)))
        weight = 1.0
        if self.weighted:
            metrics = list(content.metric_records.values())
            value = metrics[0].get(self.weighted_by_key) if len(metrics) == 1 else None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return (
                    f"the reply needs one MetricRecord with a number {self.weighted_by_key!r} "
                    "(its weight in the average)"
                )
            if not (math.isfinite(value) and value >= 0):
                return f"{self.weighted_by_key!r} must be a finite number >= 0, got {value!r}"
            weight = float(value)
        return tensors, weight

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedHyperServer step on the usable replies; returns the new global model and metrics."""
        if self.server is None:
            raise StateError("FedHyperStrategy.aggregate_train() called before configure_train()")
        replies = list(replies)  # may be a one-shot iterable
        by_id = {m.metadata.message_id: m.metadata.dst_node_id for m in self._sent}
        sampled = tuple(m.metadata.dst_node_id for m in self._sent)
        failed: dict[int, str] = {}
        usable: list[tuple[int, list[torch.Tensor], float, RecordDict]] = []
        seen = set()
        for reply in replies:
            node = self._node_of(reply, by_id)
            seen.add(node)
            if reply.has_error():
                failed[node] = f"error {reply.error.code}: {reply.error.reason}"
                continue
            parsed = self._parse_reply(reply.content)
            if isinstance(parsed, str):
                failed[node] = parsed
            else:
                usable.append((node, parsed[0], parsed[1], reply.content))
        missing = tuple(n for n in sampled if n not in seen)
        report: RoundReport | None = None
        dropped: tuple[int, ...] = ()
        kept = usable
        skipped = ""  # why a round with usable replies left the model unchanged
        if usable:
            overflowed = self.server.overflowed_rounds
            report = self.server.step([u[1] for u in usable], [u[2] for u in usable])
            dropped = tuple(usable[i][0] for i in report.dropped)
            kept = [u for i, u in enumerate(usable) if i not in set(report.dropped)]
            if report.skipped:
                skipped = (
                    "every update was non-finite"
                    if not kept
                    else "the averaged update would make the model non-finite (overflow)"
                    if self.server.overflowed_rounds > overflowed
                    else f"all weights zero (every reply's {self.weighted_by_key!r} is 0)"
                )
        entry = FlowerRound(
            server_round=server_round,
            round=self.round,
            sampled=sampled,
            aggregated=tuple(u[0] for u in kept) if report and not report.skipped else (),
            dropped=dropped,
            failed=failed,
            missing=missing,
            report=report,
        )
        self.rounds.append(entry)
        self.round += 1
        self._sent = []
        if failed or dropped or missing or skipped:
            _LOG.warning(
                "FedHyperStrategy round %d: %d of %d sampled nodes aggregated; non-finite "
                "update (dropped): %s; failed: %s; no reply before the timeout: %s%s",
                server_round,
                len(entry.aggregated),
                len(sampled),
                list(dropped),
                failed,
                list(missing),
                f"; round skipped, model and LRs unchanged: {skipped}" if skipped else "",
            )
        metrics = self._metrics(kept, entry)
        arrays = self.global_arrays if report is not None and not report.skipped else None
        self._save()
        return arrays, metrics

    def _metrics(self, kept: list[Any], entry: FlowerRound) -> MetricRecord:
        metrics = MetricRecord()
        # All weights zero: the round was skipped (and warned); a weighted mean is undefined.
        if kept and self.weighted and sum(u[2] for u in kept) > 0:
            try:
                metrics = self.train_metrics_aggr_fn([u[3] for u in kept], self.weighted_by_key)
            except Exception as exc:  # replies with different metric keys: keep the run going
                _LOG.warning("FedHyperStrategy: could not aggregate the train metrics: %s", exc)
        server = self.server
        assert server is not None
        metrics["fedhyper-global-lr"] = float(server.effective_global_lr)
        metrics["fedhyper-momentum-coef"] = float(server.momentum_coef)
        metrics["fedhyper-local-lr"] = float(server.local_lr)
        metrics["fedhyper-aggregated"] = len(entry.aggregated)
        metrics["fedhyper-dropped"] = len(entry.dropped)
        metrics["fedhyper-failed"] = len(entry.failed)
        metrics["fedhyper-missing"] = len(entry.missing)
        return metrics

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Round counter, global model, the FedHyperServer state (LRs, Δ_{t−1}, momentum/Adam
        buffers) and the arguments; tensors and plain values only."""
        return {
            "version": _STATE_VERSION,
            "kind": "FedHyperStrategy",
            "round": self.round,
            "keys": list(self._keys),
            "arrays": [p.clone() for p in self._params],
            "server": None if self.server is None else self.server.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (e.g. in a restarted ServerApp).

        Everything is checked first: on error the strategy is left unchanged.

        Raises:
            StateError: not a FedHyperStrategy state, missing or mistyped entries, model
                arrays that are not finite float16/32/64 tensors, or a FedHyperServer state
                saved with other arguments or another model.
        """
        self._set_state(*self._parse_state(state))

    def _set_state(
        self, round_: int, keys: list[str], params: list[torch.Tensor], server: Any
    ) -> None:
        self._keys, self._params, self.server, self.round = keys, params, server, round_

    def _parse_state(
        self, state: dict[str, Any]
    ) -> tuple[int, list[str], list[torch.Tensor], FedHyperServer | None]:
        """The checked contents of a :meth:`state_dict` (StateError otherwise); changes nothing."""
        owner = "FedHyperStrategy"
        _state_version(owner, state, ("round", "keys", "arrays", "server"), (1,))
        _state_keys(owner, state, ("round", "keys", "arrays", "server"))
        round_ = _state_int(owner, "round", state["round"])
        keys = _state_list(owner, "keys", state["keys"])
        arrays = _state_list(owner, "arrays", state["arrays"], len(keys))
        if state["server"] is None:
            if keys:
                raise _state_error(owner, "'server' is None but the state holds a model")
            return round_, [], [], None
        if not keys or not all(isinstance(k, str) for k in keys):
            raise _state_error(owner, f"'keys' must be a non-empty list of str, got {_short(keys)}")
        tensors = []
        for i, a in enumerate(arrays):
            if not isinstance(a, torch.Tensor):
                raise _state_error(owner, f"arrays[{i}] must be a tensor, got {_short(a)}")
            tensors.append(_state_tensor(owner, f"arrays[{i}]", a, tuple(a.shape), "the state"))
            if a.dtype not in _FLOAT_DTYPES:
                raise _state_error(
                    owner, f"arrays[{i}] ({keys[i]!r}) has dtype {a.dtype}, expected float16/32/64"
                )
            if not bool(torch.isfinite(a).all()):
                raise _state_error(owner, f"arrays[{i}] ({keys[i]!r}) holds NaN/inf")
        params = [t.detach().cpu().clone() for t in tensors]
        server = FedHyperServer(params, **self._server_kwargs)
        server.load_state_dict(state["server"])  # checks arguments and shapes
        return round_, list(keys), params, server

    def _save(self) -> None:
        if self.checkpoint is None:
            return
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, self.checkpoint)  # a crash mid-save keeps the previous checkpoint

    def resume(self, initial_arrays: ArrayRecord) -> tuple[ArrayRecord, int]:
        """Load :attr:`checkpoint` if it exists; returns (arrays to start from, rounds done).

        Start the (new) Flower run with them::

            arrays, done = strategy.resume(ArrayRecord(model.state_dict()))
            strategy.start(grid, arrays, num_rounds=total_rounds - done, ...)

        Without a checkpoint file this returns ``(initial_arrays, 0)``. Everything is checked
        before anything changes.

        Raises:
            ConfigTypeError: ``initial_arrays`` is not an ArrayRecord.
            StateError: the checkpoint cannot be read (corrupt, truncated, not a
                :meth:`state_dict` file), or comes from another configuration or another model
                (keys, shapes or dtypes differ from ``initial_arrays``).
        """
        check_instance("initial_arrays", initial_arrays, ArrayRecord)
        if self.checkpoint is None or not self.checkpoint.exists():
            return initial_arrays, 0
        try:
            state = torch.load(self.checkpoint, weights_only=True)
        except Exception as exc:  # pickle/zip/OS errors: all mean "unreadable"
            raise StateError(
                f"FedHyperStrategy: cannot read the checkpoint {str(self.checkpoint)!r} "
                f"({type(exc).__name__}: {exc}); it is corrupt, truncated or not a "
                "FedHyperStrategy.state_dict() file. Delete it to start afresh"
            ) from exc
        parsed = self._parse_state(state)
        self._check_same_model(parsed[1], parsed[2], initial_arrays)
        self._set_state(*parsed)
        arrays = self.global_arrays
        return (initial_arrays if arrays is None else arrays), self.round

    def _check_same_model(
        self, keys: list[str], params: list[torch.Tensor], initial_arrays: ArrayRecord
    ) -> None:
        """StateError unless the checkpoint's model has ``initial_arrays``' keys, shapes and
        dtypes (a checkpoint saved before the first round holds no model: nothing to compare)."""
        if not keys:
            return
        where = f"FedHyperStrategy: the checkpoint {str(self.checkpoint)!r}"
        hint = "it comes from another model; delete it or point checkpoint= elsewhere"
        if list(initial_arrays.keys()) != keys:
            raise StateError(
                f"{where} holds a model with arrays {keys}, initial_arrays has "
                f"{list(initial_arrays.keys())}: {hint}"
            )
        for key, p in zip(keys, params):
            arr = initial_arrays[key]
            shape, dtype = tuple(arr.shape), str(arr.dtype)
            saved_dtype = str(p.dtype).removeprefix("torch.")
            if shape != tuple(p.shape) or dtype != saved_dtype:
                raise StateError(
                    f"{where} holds array {key!r} of shape {tuple(p.shape)} and dtype "
                    f"{saved_dtype}, initial_arrays has shape {shape} and dtype {dtype}: {hint}"
                )

    def summary(self) -> None:
        """Log FedAvg's summary and the FedHyper configuration."""
        super().summary()
        _LOG.info("\t└──> FedHyper: %s", {k: v for k, v in self._server_kwargs.items()})


# help(FedHyperStrategy) lists the server's arguments; **kwargs also takes FedAvg's.
set_forwarding_signature(FedHyperStrategy.__init__, _SERVER_PARAMS, keep_kwargs=True)
