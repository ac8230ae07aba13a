"""Benchmark tasks: deterministic given a seed, nothing downloaded at run time.

Each :class:`Task` fixes its data split, model, optimizer family and step budget;
``task.make(seed)`` builds a fresh :class:`Instance` (model initialised from ``seed``). Batches
are drawn from the global torch RNG, which the runner seeds per run, so AutoLRS candidates see
the same random stream (``restore_rng=True``) and runs are reproducible.
"""

from __future__ import annotations

import math
import os
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "FRESH",
    "HOLDOUT",
    "NQM",
    "TASKS",
    "Instance",
    "Task",
    "digits",
    "get_task",
    "nqm_curvatures",
]


@dataclass
class Instance:
    """One freshly initialised problem.

    Attributes:
        model: The model to train.
        train_loss: Draws a training batch from the global torch RNG and returns its loss.
        val_loss: Deterministic validation loss of the current model (no grad, eval mode).
    """

    model: nn.Module
    train_loss: Callable[[], torch.Tensor]
    val_loss: Callable[[], float]

    def step(self, opt: torch.optim.Optimizer) -> torch.Tensor:
        """One optimizer step on the next training batch; returns that batch's loss."""
        loss = self.train_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss


@dataclass
class Task:
    """A benchmark problem.

    Attributes:
        name: Task id used on the command line.
        description: One line for the report.
        family: ``"sgd"`` (SGD, optional momentum) or ``"adamw"``.
        budget: Optimizer steps of one run (full suite).
        quick_budget: Optimizer steps of one run with ``--quick``.
        lr_range: ``(low, high)`` of the LR grids and the AutoLRS search box.
        momentum: SGD momentum (``family == "sgd"``).
        weight_decay: Weight decay (decoupled for AdamW, L2 for SGD).
        build: ``build(seed) -> Instance``.
    """

    name: str
    description: str
    family: str
    budget: int
    quick_budget: int
    lr_range: tuple[float, float]
    build: Callable[[int], Instance] = field(repr=False)
    momentum: float = 0.9
    weight_decay: float = 0.0

    def make(self, seed: int) -> Instance:
        """A fresh instance whose initial weights depend only on ``seed``."""
        torch.manual_seed(seed)
        return self.build(seed)

    def make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        """The task's optimizer family at learning rate ``lr``."""
        if self.family == "sgd":
            return torch.optim.SGD(
                params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        return torch.optim.AdamW(params, lr=lr, weight_decay=self.weight_decay)


# ---------------------------------------------------------------------- helpers
def _split(n: int, val_frac: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Fixed train/validation index split (independent of the run seed)."""
    perm = np.random.default_rng(12345).permutation(n)
    n_val = round(n * val_frac)
    return perm[n_val:], perm[:n_val]


def _supervised(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    tr: np.ndarray,
    va: np.ndarray,
    batch: int,
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Instance:
    xt, yt = x[tr], y[tr]
    xv, yv = x[va], y[va]

    def train_loss() -> torch.Tensor:
        idx = torch.randint(0, len(xt), (batch,))
        return loss_of(model(xt[idx]), yt[idx])

    def val_loss() -> float:
        was = model.training
        model.eval()
        with torch.no_grad():
            v = loss_of(model(xv), yv).item()
        model.train(was)
        return v

    return Instance(model, train_loss, val_loss)


def _classification(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, tr: np.ndarray, va: np.ndarray, batch: int
) -> Instance:
    if y.dtype.is_floating_point:  # binary labels, one logit

        def loss_of(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(out.squeeze(-1), target)

        return _supervised(model, x, y, tr, va, batch, loss_of)
    return _supervised(model, x, y, tr, va, batch, F.cross_entropy)


# ---------------------------------------------------------------------- noisy quadratic
_NQM_DIM = 100


class _Quadratic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(_NQM_DIM))


def _nqm(h: torch.Tensor, batch: int) -> Instance:
    """Noisy quadratic model (Zhang et al., 2019): L = ½ Σ h_i θ_i².

    A batch of size B gives the gradient h_i (θ_i − c_i) with c_i ~ N(0, 1/(h_i B)), i.e.
    gradient noise with covariance H/B. The validation loss is the exact expected loss.
    """
    model = _Quadratic()
    noise_std = 1.0 / torch.sqrt(h * batch)

    def train_loss() -> torch.Tensor:
        c = torch.randn(_NQM_DIM) * noise_std
        return 0.5 * (h * (model.theta - c) ** 2).sum()

    def val_loss() -> float:
        with torch.no_grad():
            return float(0.5 * (h * model.theta**2).sum())

    return Instance(model, train_loss, val_loss)


#: The noisy quadratics: name -> (p, batch) for curvatures h_i = i^-p, i = 1 … 100.
NQM: dict[str, tuple[float, int]] = {
    "quadratic": (1.0, 32),
    "quadratic-steep": (1.5, 8),
    "quadratic-flat": (0.5, 16),
}


def nqm_curvatures(power: float) -> torch.Tensor:
    """The curvatures h_i = i^-power of a noisy quadratic (float32, as the tasks use them)."""
    i = torch.arange(1, _NQM_DIM + 1, dtype=torch.float32)
    return 1.0 / i if power == 1.0 else i**-power  # 1/i: the bench task's original rounding


def _build_nqm(seed: int) -> Instance:
    """The bench's noisy quadratic: h_i = 1/i, batch 32."""
    power, batch = NQM["quadratic"]
    return _nqm(nqm_curvatures(power), batch)


# ---------------------------------------------------------------------- digits
_DIGITS: tuple[torch.Tensor, torch.Tensor] | None = None


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8×8 digits as ``(x in [0, 1], labels)``, loaded once (shared by the studies)."""
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.data / 16.0, dtype=torch.float32)
        y = torch.tensor(d.target, dtype=torch.long)
        _DIGITS = (x, y)
    return _DIGITS


def _build_mlp(seed: int) -> Instance:
    x, y = digits()
    tr, va = _split(len(x))
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    return _classification(model, x, y, tr, va, batch=32)


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 8, 8)
        x = F.relu(self.c1(x))
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


def _build_cnn(seed: int) -> Instance:
    x, y = digits()
    tr, va = _split(len(x))
    return _classification(_CNN(), x, y, tr, va, batch=32)


# ---------------------------------------------------------------------- breast cancer
def _build_logreg(seed: int) -> Instance:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    tr, va = _split(len(d.target))
    mean = d.data[tr].mean(0)
    std = d.data[tr].std(0) + 1e-8
    x = torch.tensor((d.data - mean) / std, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.float32)
    return _classification(nn.Linear(30, 1), x, y, tr, va, batch=16)


# ---------------------------------------------------------------------- char LM
# Fixed list of standard-library modules; read in this order, non-ASCII folded to "?".
CORPUS_FILES = (
    "textwrap.py",
    "string.py",
    "fnmatch.py",
    "glob.py",
    "shlex.py",
    "bisect.py",
    "heapq.py",
    "colorsys.py",
    "keyword.py",
    "abc.py",
    "queue.py",
    "base64.py",
)
_CTX = 48
_CORPUS: tuple[torch.Tensor, torch.Tensor, int] | None = None


def corpus() -> tuple[torch.Tensor, torch.Tensor, int]:
    """(train ids, validation ids, vocabulary size): first 90 % / last 10 % of the text."""
    global _CORPUS
    if _CORPUS is None:
        root = sysconfig.get_paths()["stdlib"]
        parts = []
        for name in CORPUS_FILES:
            with open(os.path.join(root, name), encoding="utf-8", errors="replace") as fh:
                parts.append(fh.read())
        text = "\n".join(parts)
        # 0 = anything else, 1 = "\n", 2.. = printable ASCII 32..126
        codes = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)
        ids = np.where(codes == 10, 1, np.where((codes >= 32) & (codes < 127), codes - 30, 0))
        data = torch.tensor(ids, dtype=torch.long)
        cut = int(len(data) * 0.9)
        _CORPUS = (data[:cut], data[cut:], 97)
    return _CORPUS


class _CharLM(nn.Module):
    def __init__(self, vocab: int, d: int = 48, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(_CTX, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d, heads, dim_feedforward=4 * d, dropout=0.0, batch_first=True, norm_first=True
        )
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.register_buffer(
            "mask", torch.triu(torch.full((_CTX, _CTX), -math.inf), diagonal=1), persistent=False
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        h = self.emb(idx) + self.pos[:t]
        h = self.body(h, mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.norm(h))


def _build_charlm(seed: int) -> Instance:
    train, val, vocab = corpus()
    model = _CharLM(vocab)
    batch = 16
    # Fixed validation windows: 48 evenly spaced chunks of the held-out tail.
    starts = torch.linspace(0, len(val) - _CTX - 2, 48).long()
    xv = torch.stack([val[s : s + _CTX] for s in starts])
    yv = torch.stack([val[s + 1 : s + _CTX + 1] for s in starts])

    def train_loss() -> torch.Tensor:
        s = torch.randint(0, len(train) - _CTX - 1, (batch,))
        off = torch.arange(_CTX)
        x = train[s[:, None] + off]
        y = train[s[:, None] + off + 1]
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    def val_loss() -> float:
        was = model.training
        model.eval()
        with torch.no_grad():
            v = F.cross_entropy(model(xv).flatten(0, 1), yv.flatten()).item()
        model.train(was)
        return v

    return Instance(model, train_loss, val_loss)


# ---------------------------------------------------------------------- registry
TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            "quadratic",
            "noisy quadratic model, 100-d, h_i = 1/i, batch 32, SGD",
            family="sgd",
            budget=2000,
            quick_budget=500,
            lr_range=(0.02, 1.9),
            build=_build_nqm,
            momentum=0.0,
        ),
        Task(
            "logreg",
            "logistic regression, breast cancer (sklearn), batch 16, SGD+momentum",
            family="sgd",
            budget=1500,
            quick_budget=500,
            lr_range=(1e-3, 0.3),
            build=_build_logreg,
        ),
        Task(
            "mlp",
            "MLP 64-128-128-10, digits (sklearn), batch 32, SGD+momentum",
            family="sgd",
            budget=2000,
            quick_budget=500,
            lr_range=(1e-3, 0.3),
            build=_build_mlp,
            weight_decay=5e-4,
        ),
        Task(
            "cnn",
            "CNN 2 conv + fc, digits 8x8 (sklearn), batch 32, AdamW",
            family="adamw",
            budget=1500,
            quick_budget=500,
            lr_range=(3e-4, 0.1),
            build=_build_cnn,
            weight_decay=0.01,
        ),
        Task(
            "charlm",
            "char transformer LM (2 layers, d=48, ctx 48) on stdlib source, batch 16, AdamW",
            family="adamw",
            budget=800,
            quick_budget=400,
            lr_range=(3e-4, 0.1),
            build=_build_charlm,
            weight_decay=0.01,
        ),
    ]
}


# ---------------------------------------------------------------------- held-out tasks
# Never used to choose the AutoLRS defaults: the ``autolrs`` study reports them separately
# so that a design that only fits the five bench tasks shows.
def _build_nqm_steep(seed: int) -> Instance:
    """Noisy quadratic with a steeper spectrum (h_i = i^-1.5) and a smaller batch (8)."""
    power, batch = NQM["quadratic-steep"]
    return _nqm(nqm_curvatures(power), batch)


def _build_softmax(seed: int) -> Instance:
    x, y = digits()
    tr, va = _split(len(x))
    return _classification(nn.Linear(64, 10), x, y, tr, va, batch=32)


def _build_mlp_wide(seed: int) -> Instance:
    x, y = digits()
    tr, va = _split(len(x))
    model = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 10))
    return _classification(model, x, y, tr, va, batch=64)


# Added on 2026-12-06, after every default had been chosen, to check a candidate default
# (`cooled`) and the defaults themselves on problems no decision had seen: regression
# losses, another dataset, a flatter quadratic spectrum, a deeper tanh network.
def _standardised(data: np.ndarray, tr: np.ndarray) -> torch.Tensor:
    """Features standardised with the training split's statistics."""
    return torch.tensor((data - data[tr].mean(0)) / data[tr].std(0), dtype=torch.float32)


def _build_diabetes(seed: int) -> Instance:
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    tr, va = _split(len(d.target))
    y = _standardised(d.target[:, None], tr)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 1))
    return _supervised(model, _standardised(d.data, tr), y, tr, va, 32, F.mse_loss)


def _build_wine(seed: int) -> Instance:
    from sklearn.datasets import load_wine

    d = load_wine()
    tr, va = _split(len(d.target))
    y = torch.tensor(d.target, dtype=torch.long)
    return _classification(nn.Linear(13, 3), _standardised(d.data, tr), y, tr, va, batch=16)


def _build_nqm_flat(seed: int) -> Instance:
    """Noisy quadratic with a flatter spectrum (h_i = i^-0.5) and batch 16."""
    power, batch = NQM["quadratic-flat"]
    return _nqm(nqm_curvatures(power), batch)


def _build_mlp_tanh(seed: int) -> Instance:
    x, y = digits()
    tr, va = _split(len(x))
    layers: list[nn.Module] = []
    for n_in in (64, 64, 64):
        layers += [nn.Linear(n_in, 64), nn.Tanh()]
    return _classification(nn.Sequential(*layers, nn.Linear(64, 10)), x, y, tr, va, batch=32)


def _build_autoencoder(seed: int) -> Instance:
    x, _ = digits()
    tr, va = _split(len(x))
    model = nn.Sequential(
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 12),
        nn.ReLU(),
        nn.Linear(12, 32),
        nn.ReLU(),
        nn.Linear(32, 64),
    )
    return _supervised(model, x, x, tr, va, 32, F.mse_loss)


HOLDOUT: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            "quadratic-steep",
            "noisy quadratic, h_i = i^-1.5, batch 8, SGD (held out)",
            family="sgd",
            budget=1500,
            quick_budget=400,
            lr_range=(0.02, 3.0),
            build=_build_nqm_steep,
            momentum=0.0,
        ),
        Task(
            "softmax",
            "multinomial logistic regression, digits, batch 32, SGD+momentum (held out)",
            family="sgd",
            budget=1200,
            quick_budget=400,
            lr_range=(1e-3, 1.0),
            build=_build_softmax,
        ),
        Task(
            "mlp-adamw",
            "MLP 64-256-10 (GELU), digits, batch 64, AdamW (held out)",
            family="adamw",
            budget=1000,
            quick_budget=400,
            lr_range=(1e-4, 0.03),
            build=_build_mlp_wide,
            weight_decay=0.01,
        ),
        Task(
            "cnn-sgd",
            "CNN 2 conv + fc, digits 8x8, batch 32, SGD+momentum (held out)",
            family="sgd",
            budget=1200,
            quick_budget=400,
            lr_range=(1e-3, 0.3),
            build=_build_cnn,
            weight_decay=5e-4,
        ),
        # The five below were added on 2026-12-06 (see above).
        Task(
            "diabetes",
            "MLP 10-64-1 regression, diabetes (sklearn), batch 32, AdamW (held out)",
            family="adamw",
            budget=1000,
            quick_budget=300,
            lr_range=(1e-4, 0.1),
            build=_build_diabetes,
        ),
        Task(
            "wine",
            "softmax regression, wine (sklearn), batch 16, SGD+momentum (held out)",
            family="sgd",
            budget=800,
            quick_budget=300,
            lr_range=(1e-3, 1.0),
            build=_build_wine,
        ),
        Task(
            "quadratic-flat",
            "noisy quadratic, h_i = i^-0.5, batch 16, SGD (held out)",
            family="sgd",
            budget=1500,
            quick_budget=300,
            lr_range=(0.01, 1.9),
            build=_build_nqm_flat,
            momentum=0.0,
        ),
        Task(
            "mlp-tanh",
            "MLP 3x64 tanh, digits, batch 32, SGD+momentum (held out)",
            family="sgd",
            budget=1500,
            quick_budget=300,
            lr_range=(1e-3, 1.0),
            build=_build_mlp_tanh,
            weight_decay=5e-4,
        ),
        Task(
            "autoencoder",
            "MLP autoencoder 64-32-12-32-64, digits, batch 32, AdamW (held out)",
            family="adamw",
            budget=1200,
            quick_budget=300,
            lr_range=(1e-4, 0.1),
            build=_build_autoencoder,
            weight_decay=0.01,
        ),
    ]
}


#: The held-out tasks added on 2026-12-06 (after every default was chosen); the ``autolrs``
#: study reports them as their own group so that figures over the first four stay comparable.
FRESH = ("diabetes", "wine", "quadratic-flat", "mlp-tanh", "autoencoder")


def get_task(name: str) -> Task:
    """Look a task up by name (``KeyError`` lists the known ones)."""
    if name in HOLDOUT:
        return HOLDOUT[name]
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
