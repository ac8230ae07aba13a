"""In-process federated simulation: FedAvg, FedAdam and FedHyper on Dirichlet non-IID digits."""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import ConfigError, ConfigTypeError
from .._jsonio import write_json
from .._progress import Progress
from .._validate import check_float, check_int
from ._client import FedHyperClient
from ._data import dirichlet_partition, load_digits
from ._server import FedHyperServer

__all__ = ["METHODS", "History", "RoundMetrics", "SimulationResult", "parse_method", "simulate"]

# The named methods simulate() knows; any "fedhyper-" + '+'-joined subset of {g|gm|adam, sl, cl,
# cos} is accepted too (e.g. "fedhyper-gm+sl+cl"); "cos" selects the normalized (cosine) server
# rules, FedHyperServer(normalize=True).
METHODS: tuple[str, ...] = (
    "fedavg",
    "fedadam",
    "fedhyper-g",
    "fedhyper-gm",
    "fedhyper-sl",
    "fedhyper-cl",
    "fedhyper-g+cl",
    "fedhyper-gm+cl",
    "fedhyper-adam",
    "fedhyper-g+cos",
    "fedhyper-g+cl+cos",
)


@dataclass(frozen=True)
class _Spec:
    rule: str  # "none" | "g" | "gm"
    server_optimizer: str  # "avg" | "adam"
    sl: bool
    cl: bool
    cos: bool = False


def parse_method(name: str) -> dict[str, Any]:
    """What a method name means: the server rule, the server optimizer and SL/CL switches.

    Example:
        >>> parse_method("fedhyper-gm+cl")
        {'rule': 'gm', 'server_optimizer': 'avg', 'sl': False, 'cl': True, 'cos': False}
    """
    return asdict(_parse(name))


def _parse(name: str) -> _Spec:
    if not isinstance(name, str):
        raise ConfigTypeError(f"method names are strings, got {type(name).__name__}")
    if name == "fedavg":
        return _Spec("none", "avg", False, False)
    if name == "fedadam":
        return _Spec("none", "adam", False, False)
    parts = name.split("-", 1)[1].split("+") if name.startswith("fedhyper-") else []
    allowed = {"g", "gm", "adam", "sl", "cl", "cos"}
    if not parts or not set(parts) <= allowed or len(set(parts)) != len(parts):
        raise ConfigError(
            f"unknown method {name!r}: use 'fedavg', 'fedadam' or 'fedhyper-' + a '+'-joined "
            "subset of g|gm|adam, sl, cl, cos (e.g. 'fedhyper-gm+cl', 'fedhyper-g+cos')"
        )
    server = [p for p in parts if p in ("g", "gm", "adam")]
    if len(server) > 1:
        raise ConfigError(f"{name!r}: choose one of g, gm, adam")
    rule = {"g": "g", "gm": "gm", "adam": "g"}.get(server[0], "none") if server else "none"
    if parts == ["cos"]:
        raise ConfigError(f"{name!r}: 'cos' modifies g, gm, adam or sl; add one of them")
    optimizer = "adam" if "adam" in parts else "avg"
    return _Spec(rule, optimizer, "sl" in parts, "cl" in parts, "cos" in parts)


@dataclass(frozen=True)
class RoundMetrics:
    """Metrics of one round of one method (all plain floats/ints, JSON-friendly).

    Attributes:
        round: 1-based round number.
        accuracy: validation accuracy of the global model after the round.
        val_loss: validation cross-entropy after the round.
        train_loss: mean local training loss over the round's clients (``nan`` if none finished).
        global_lr: coefficient applied to the round's average update (η_g; η_0 + a for GM).
        momentum_coef: GM's momentum coefficient ``a``.
        local_lr: the clients' base LR this round (SL moves it).
        client_lr: mean last LR of the clients (CL moves it within the round).
        dropped: client updates dropped as non-finite.
        skipped: True when every update was dropped and the model did not move.
    """

    round: int
    accuracy: float
    val_loss: float
    train_loss: float
    global_lr: float
    momentum_coef: float
    local_lr: float
    client_lr: float
    dropped: int
    skipped: bool


@dataclass
class History:
    """Per-round metrics of one method.

    Example:
        >>> h = History("fedavg")
        >>> h.rounds_to(0.9) is None
        True
    """

    method: str
    rounds: list[RoundMetrics] = field(default_factory=list)

    @property
    def accuracy(self) -> list[float]:
        """Validation accuracy after each round."""
        return [r.accuracy for r in self.rounds]

    @property
    def final_accuracy(self) -> float:
        """Accuracy after the last round (``nan`` when empty)."""
        return self.rounds[-1].accuracy if self.rounds else math.nan

    @property
    def best_accuracy(self) -> float:
        """Best accuracy over the rounds (``nan`` when empty)."""
        return max(self.accuracy) if self.rounds else math.nan

    def rounds_to(self, target: float) -> int | None:
        """First round whose accuracy is >= ``target``, or None if never reached."""
        return next((r.round for r in self.rounds if r.accuracy >= target), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (``torch.save(weights_only=True)``- and JSON-friendly)."""
        return {"method": self.method, "rounds": [asdict(r) for r in self.rounds]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        return cls(data["method"], [RoundMetrics(**r) for r in data["rounds"]])


@dataclass
class SimulationResult:
    """What :func:`simulate` returns: the configuration and one :class:`History` per method.

    Example:
        >>> r = SimulationResult({"rounds": 0}, {"fedavg": History("fedavg")}, 0.0)
        >>> SimulationResult.from_dict(r.to_dict()).methods
        ['fedavg']
    """

    config: dict[str, Any]
    histories: dict[str, History]
    elapsed_s: float

    @property
    def methods(self) -> list[str]:
        """The methods, in the order they ran."""
        return list(self.histories)

    def rounds_to(self, target: float) -> dict[str, int | None]:
        """Per method, the first round reaching validation accuracy ``target`` (None: never)."""
        return {m: h.rounds_to(target) for m, h in self.histories.items()}

    def final_accuracy(self) -> dict[str, float]:
        """Per method, the accuracy after the last round."""
        return {m: h.final_accuracy for m, h in self.histories.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-serialisable once NaNs are handled; see :meth:`save_json`)."""
        return {
            "config": dict(self.config),
            "elapsed_s": self.elapsed_s,
            "histories": {m: h.to_dict() for m, h in self.histories.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationResult:
        """Inverse of :meth:`to_dict`."""
        hist = {m: History.from_dict(h) for m, h in data["histories"].items()}
        return cls(dict(data["config"]), hist, float(data["elapsed_s"]))

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON; NaN/inf become ``null``."""
        write_json(path, self.to_dict())

    def plot(self, path: str | os.PathLike[str] | None = None) -> Any:
        """Accuracy and global LR per round for every method (needs ``autolr[bench]``).

        Returns the matplotlib figure; saves it to ``path`` when given.
        """
        from autolr.integrations import require

        require("matplotlib", "bench")
        import matplotlib

        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
        for m, h in self.histories.items():
            rounds = [r.round for r in h.rounds]
            ax1.plot(rounds, h.accuracy, label=m)
            ax2.plot(rounds, [r.global_lr for r in h.rounds], label=m)
        ax1.set(xlabel="round", ylabel="validation accuracy")
        ax2.set(xlabel="round", ylabel="global LR", yscale="log")
        ax1.legend(fontsize=7)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
            plt.close(fig)
        return fig


def _seed(*keys: int) -> int:
    """A stable 63-bit seed from integer keys (same draw for every method: paired comparison)."""
    raw = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(raw, "little") & (2**63 - 1)


def _model(hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if hidden == 0:
        return nn.Linear(64, 10)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _check_config(cfg: dict[str, Any]) -> None:
    for name in ("rounds", "num_clients", "local_epochs", "batch_size"):
        check_int(name, cfg[name], minimum=1)
    check_int("hidden", cfg["hidden"], minimum=0)
    for name in ("global_lr", "local_lr", "dirichlet_alpha", "adam_lr"):
        check_float(name, cfg[name], minimum=0, min_inclusive=False)
    for name in ("hyper_lr", "local_hyper_lr", "client_hyper_lr", "adam_hyper_lr", "cos_hyper_lr"):
        check_float(name, cfg[name], minimum=0)
    f = check_float("fraction", cfg["fraction"], minimum=0, maximum=1, min_inclusive=False)
    if round(f * cfg["num_clients"]) < 1:
        raise ConfigError(
            f"fraction {f} of {cfg['num_clients']} clients samples 0 clients per round"
        )
    check_float(
        "val_fraction", cfg["val_fraction"], minimum=0, maximum=1,
        min_inclusive=False, max_inclusive=False,
    )  # fmt: skip
    check_int("seed", cfg["seed"])


def _device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device (``None``: the CPU); a bad name is a ConfigError."""
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise ConfigTypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(
            f"device {device!r} is not a torch device ('cpu', 'cuda', 'cuda:1', ...)"
        ) from exc


def simulate(
    methods: str | Sequence[str] = ("fedavg", "fedhyper-gm"),
    *,
    rounds: int = 30,
    num_clients: int = 20,
    fraction: float = 0.25,
    local_epochs: int = 2,
    batch_size: int = 16,
    global_lr: float = 1.0,
    local_lr: float = 0.1,
    hyper_lr: float = 1.0,
    local_hyper_lr: float = 1.0,
    client_hyper_lr: float = 1.0,
    adam_lr: float | None = None,
    adam_hyper_lr: float = 1e-3,
    cos_hyper_lr: float = 0.3,
    dirichlet_alpha: float = 0.5,
    hidden: int = 32,
    weighted: bool = True,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> SimulationResult:
    """Simulate cross-device federated training on the bundled digits data, one method at a time.

    The 1797 digits are split into train/validation; the training part is dealt to
    ``num_clients`` clients with Dirichlet(``dirichlet_alpha``) label skew. Each round samples
    ``round(fraction · num_clients)`` clients; each trains a copy of the global MLP
    (64-``hidden``-10; ``hidden=0`` is logistic regression) with plain SGD for ``local_epochs``
    epochs at batch ``batch_size`` and returns its weights; a :class:`FedHyperServer` aggregates
    them (weighted by sample counts unless ``weighted=False``). Every method starts from the same
    initial model and sees the same client samples and batch orders (a paired comparison).

    Args:
        methods: names from :data:`METHODS` or any ``"fedhyper-"`` combination of
            ``g|gm|adam``, ``sl``, ``cl`` (see :func:`parse_method`).
        rounds: communication rounds per method.
        num_clients: N.
        fraction: share of clients sampled per round (must sample at least one).
        local_epochs: local epochs per round.
        batch_size: local minibatch size.
        global_lr: initial global (server) LR η_0 of FedAvg / FedHyper.
        local_lr: initial local SGD LR.
        hyper_lr: β of FedHyper-G/GM on the FedAvg server.
        local_hyper_lr: β_l of FedHyper-SL.
        client_hyper_lr: β of FedHyper-CL.
        adam_lr: FedAdam's server LR; default ``0.1 · global_lr`` (the released code's scaling).
        adam_hyper_lr: β of FedHyper-G on FedAdam (``"fedhyper-adam"``); its hypergradient
            ⟨Adam step, Δ_t⟩ scales like ‖Δ_t‖₁, far above the FedAvg one, hence a smaller β.
        cos_hyper_lr: β of every server rule (G, GM, SL, Adam-G) in methods with ``+cos``
            (normalized rules: relative LR change per round).
        dirichlet_alpha: label-skew concentration (small: more non-IID).
        hidden: hidden width of the MLP (0: logistic regression).
        weighted: weight client updates by sample count (FedAvg) instead of uniformly.
        val_fraction: share of the digits held out for validation.
        seed: seeds the split, the partition, the initial model and every client sample/batch.
        device: torch device (default CPU).
        checkpoint: file saved after every round (model, server state, histories); if it exists
            with the same configuration the run resumes from it and gives the same result as an
            uninterrupted one.
        progress: show a :class:`~autolr._progress.Progress` bar.

    Returns:
        A :class:`SimulationResult` with one :class:`History` per method.

    Raises:
        ConfigError: unknown method, no client sampled per round, bad numbers, a checkpoint
            from another configuration.

    Example:
        >>> res = simulate(["fedavg", "fedhyper-g"], rounds=2, num_clients=20, fraction=0.1,
        ...                local_epochs=1, global_lr=0.5, progress=False)
        >>> [len(h.rounds) for h in res.histories.values()]
        [2, 2]
    """
    if not isinstance(methods, (str, Sequence)):
        raise ConfigTypeError(
            f"methods must be a method name or a sequence of them, got {type(methods).__name__}"
        )
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ConfigError("methods is empty")
    if len(set(names)) != len(names):
        raise ConfigError(f"methods has duplicates: {names}")
    specs = {n: _parse(n) for n in names}
    cfg: dict[str, Any] = {
        "methods": names,
        "rounds": rounds,
        "num_clients": num_clients,
        "fraction": fraction,
        "local_epochs": local_epochs,
        "batch_size": batch_size,
        "global_lr": global_lr,
        "local_lr": local_lr,
        "hyper_lr": hyper_lr,
        "local_hyper_lr": local_hyper_lr,
        "client_hyper_lr": client_hyper_lr,
        # Checked before it is derived from (a str or None global_lr failed inside the product).
        "adam_lr": adam_lr
        if adam_lr is not None
        else 0.1 * check_float("global_lr", global_lr, minimum=0, min_inclusive=False),
        "adam_hyper_lr": adam_hyper_lr,
        "cos_hyper_lr": cos_hyper_lr,
        "dirichlet_alpha": dirichlet_alpha,
        "hidden": hidden,
        "weighted": bool(weighted),
        "val_fraction": val_fraction,
        "seed": seed,
    }
    _check_config(cfg)
    dev = _device(device)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and not ckpt.parent.is_dir():
        # Found before training, not when the first round's checkpoint is written.
        raise ConfigError(
            f"checkpoint {str(ckpt)!r}: its directory {str(ckpt.parent)!r} does not exist"
        )

    x, y = load_digits()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_seed(seed, 1)))
    n_val = round(val_fraction * len(y))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    x_val, y_val = x[val_idx].to(dev), y[val_idx].to(dev)
    x_tr, y_tr = x[train_idx].to(dev), y[train_idx].to(dev)
    part_seed = _seed(seed, 2) % 2**32
    shards = dirichlet_partition(y_tr.cpu(), num_clients, dirichlet_alpha, seed=part_seed)
    per_round = round(fraction * num_clients)

    done: dict[str, History] = {}
    resume: dict[str, Any] | None = None
    prior_elapsed = 0.0
    if ckpt is not None and ckpt.exists():
        saved = torch.load(ckpt, map_location=dev, weights_only=True)
        if saved.get("config") != cfg:
            raise ConfigError(
                f"checkpoint {ckpt} was written by a simulation with another configuration; "
                "delete it or pass another path"
            )
        done = {m: History.from_dict(h) for m, h in saved["done"].items()}
        resume = saved.get("current")
        prior_elapsed = float(saved.get("elapsed_s", 0.0))

    start = time.perf_counter() - prior_elapsed
    bar = Progress(len(names) * rounds, desc="simulate", enabled=progress)
    bar.update(sum(len(h.rounds) for h in done.values()))
    histories: dict[str, History] = {}
    for name in names:
        if name in done:
            histories[name] = done[name]
            continue
        spec = specs[name]
        model = _model(hidden, seed).to(dev)
        adam = spec.server_optimizer == "adam"
        eta0 = cfg["adam_lr"] if adam else global_lr
        server = FedHyperServer(
            model.parameters(),
            rule=spec.rule,  # type: ignore[arg-type]
            global_lr=eta0,
            hypergrad_lr=cos_hyper_lr if spec.cos else adam_hyper_lr if adam else hyper_lr,
            server_optimizer=spec.server_optimizer,  # type: ignore[arg-type]
            local_lr=local_lr,
            adapt_local_lr=spec.sl,
            local_hypergrad_lr=cos_hyper_lr if spec.cos else local_hyper_lr,
            normalize=spec.cos,
        )
        history = History(name)
        if resume is not None and resume["method"] == name:
            model.load_state_dict(resume["model"])
            server.load_state_dict(resume["server"])
            history = History.from_dict(resume["history"])
            bar.update(len(history.rounds))
            resume = None
        worker = _model(hidden, seed).to(dev)
        for r in range(len(history.rounds), rounds):
            metrics = _round(
                r, model, worker, server, spec, cfg, shards, per_round, x_tr, y_tr, x_val, y_val
            )
            history.rounds.append(metrics)
            bar.update(1, method=name, round=r + 1, acc=f"{metrics.accuracy:.3f}")
            if ckpt is not None:
                _save(
                    ckpt,
                    {
                        "config": cfg,
                        "elapsed_s": time.perf_counter() - start,
                        "done": {m: h.to_dict() for m, h in histories.items()},
                        "current": {
                            "method": name,
                            "history": history.to_dict(),
                            "model": model.state_dict(),
                            "server": server.state_dict(),
                        },
                    },
                )
        histories[name] = history
    bar.close()
    elapsed = time.perf_counter() - start
    if ckpt is not None:
        _save(
            ckpt,
            {
                "config": cfg,
                "elapsed_s": elapsed,
                "done": {m: h.to_dict() for m, h in histories.items()},
                "current": None,
            },
        )
    return SimulationResult(cfg, histories, elapsed)


def _save(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-save leaves the previous checkpoint intact


def _round(
    r: int,
    model: nn.Module,
    worker: nn.Module,
    server: FedHyperServer,
    spec: _Spec,
    cfg: dict[str, Any],
    shards: list[torch.Tensor],
    per_round: int,
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
) -> RoundMetrics:
    seed = cfg["seed"]
    gen = torch.Generator().manual_seed(_seed(seed, 3, r))
    chosen = torch.randperm(cfg["num_clients"], generator=gen)[:per_round].tolist()
    global_update = server.previous_update if spec.cl else None
    local_lr = server.local_lr
    replies, weights, losses, client_lrs = [], [], [], []
    for k in chosen:
        params, loss, lr = _train_client(
            worker, model, shards[k], x_tr, y_tr, local_lr, global_update, spec.cl, cfg, (r, k)
        )
        replies.append(params)
        weights.append(float(len(shards[k])) if cfg["weighted"] else 1.0)
        losses.append(loss)
        client_lrs.append(lr)
    report = server.step(replies, weights)
    with torch.no_grad():
        logits = model(x_val)
        val_loss = float(nn.functional.cross_entropy(logits, y_val))
        acc = float((logits.argmax(1) == y_val).float().mean())
    finite = [v for v in losses if math.isfinite(v)]
    return RoundMetrics(
        round=r + 1,
        accuracy=acc,
        val_loss=val_loss,
        train_loss=sum(finite) / len(finite) if finite else math.nan,
        global_lr=report.global_lr,
        momentum_coef=report.momentum_coef,
        local_lr=local_lr,
        client_lr=sum(client_lrs) / len(client_lrs),
        dropped=len(report.dropped),
        skipped=report.skipped,
    )


def _train_client(
    worker: nn.Module,
    model: nn.Module,
    idx: torch.Tensor,
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    lr: float,
    global_update: list[torch.Tensor] | None,
    use_cl: bool,
    cfg: dict[str, Any],
    key: tuple[int, int],
) -> tuple[list[torch.Tensor], float, float]:
    """Local SGD on one client from the global weights; returns (weights, mean loss, last LR)."""
    with torch.no_grad():
        for w, g in zip(worker.parameters(), model.parameters()):
            w.copy_(g)
    opt = torch.optim.SGD(worker.parameters(), lr=lr)
    client = None
    if use_cl:
        client = FedHyperClient(opt, hypergrad_lr=cfg["client_hyper_lr"])
        client.begin_round(lr, global_update)
    gen = torch.Generator().manual_seed(_seed(cfg["seed"], 4, *key))
    total, steps = 0.0, 0
    bs = cfg["batch_size"]
    for _ in range(cfg["local_epochs"]):
        order = idx[torch.randperm(len(idx), generator=gen)].to(x_tr.device)
        for i in range(0, len(order), bs):
            b = order[i : i + bs]
            loss = nn.functional.cross_entropy(worker(x_tr[b]), y_tr[b])
            if not torch.isfinite(loss):
                # Diverged: stop here; the server drops the update if the weights are not finite.
                return [p.detach().clone() for p in worker.parameters()], math.nan, lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
            if client is not None:
                client.step()
    last_lr = client.lr if client is not None else lr
    return [p.detach().clone() for p in worker.parameters()], total / max(steps, 1), last_lr
