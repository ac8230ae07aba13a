"""Regularisers driven by the current hyperparameters: L2 and batch-side augmentation.

Augmentation works on batch tensors after the DataLoader (not in ``Dataset.__getitem__``), so
``num_workers > 0`` keeps working and every example gets its own perturbed value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .._errors import ConfigError, ConfigTypeError, StateError
from ._space import HyperSpace, current_context

__all__ = [
    "BatchAugment",
    "Brightness",
    "Contrast",
    "Cutout",
    "adjust_brightness",
    "adjust_contrast",
    "cutout",
    "l2_penalty",
]


def _ctx(space: HyperSpace | None):
    ctx = current_context(space)
    if ctx is None:
        raise StateError(
            "no active hyperparameter context: call inside `with space.context(...)` (the STN "
            "tuner does this) or pass space="
        )
    return ctx


def l2_penalty(
    params: nn.Module | Iterable[torch.Tensor], name: str, *, space: HyperSpace | None = None
) -> torch.Tensor:
    """``(wd / 2) · Σ ||w||²`` over weight tensors (``ndim ≥ 2``), ``wd`` the hyperparameter.

    The ½ matches ``torch.optim.SGD(weight_decay=wd)``, so a tuned schedule replays as the
    optimizer's ``weight_decay``. Per-example values are averaged over the batch. Gate maps
    (``hyper_bottleneck``) are not penalised.

    Example:
        >>> space = HyperSpace().add("wd", 0.1, low=0.0)
        >>> net = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = net.weight.fill_(1.0)
        >>> round(l2_penalty(net, "wd", space=space).item(), 4)  # 0.1 / 2 * 2
        0.1
    """
    ctx = _ctx(space)
    wd = ctx.param(name).mean()
    if isinstance(params, nn.Module):
        tensors = [
            p for n, p in params.named_parameters() if p.dim() >= 2 and "hyper_bottleneck" not in n
        ]
    else:
        tensors = [p for p in params if p.dim() >= 2]
    if not tensors:
        return wd * 0.0
    total = sum(p.pow(2).sum() for p in tensors)
    return 0.5 * wd.to(total.dtype) * total


def _per_example(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(-1)
    if v.numel() not in (1, x.shape[0]):
        raise ConfigError(f"augmentation: {v.numel()} values for a batch of {x.shape[0]}")
    return v.expand(x.shape[0]).reshape((-1,) + (1,) * (x.dim() - 1))


def _float_images(x: torch.Tensor, who: str) -> None:
    # Integer images would truncate (or wrap) the offsets and factors, or fail deep in torch.
    if not x.is_floating_point():
        raise ConfigTypeError(
            f"{who} needs floating-point images, got {x.dtype}; convert the batch first "
            "(e.g. x.float() / 255)"
        )


def adjust_brightness(x: torch.Tensor, delta: torch.Tensor | float) -> torch.Tensor:
    """Add a per-example brightness offset ``delta`` (shape ``(B,)`` or scalar) to float images."""
    _float_images(x, "adjust_brightness")
    return x + _per_example(delta, x)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Scale each example (float images) around its own mean by ``factor`` (``(B,)`` or scalar)."""
    _float_images(x, "adjust_contrast")
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True) if dims else x
    return mean + _per_example(factor, x) * (x - mean)


def cutout(
    x: torch.Tensor,
    length: torch.Tensor | float,
    holes: torch.Tensor | float = 1,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero ``holes`` square patches of side ``length`` at random centres, per example.

    ``x`` is ``(B, C, H, W)`` (or ``(B, H, W)``); ``length`` and ``holes`` are per-example
    integers (floats are floored). Patches are clipped at the border, as in Cutout.

    Example:
        >>> out = cutout(torch.ones(2, 1, 6, 6), torch.tensor([2.0, 0.0]), 1)
        >>> out[1].sum().item()  # length 0: untouched
        36.0
    """
    if x.dim() < 3:
        raise ConfigError(f"cutout needs (B, [C,] H, W) images, got shape {tuple(x.shape)}")
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    dev = x.device
    length = _counts(length, b, "length", dev)
    holes = _counts(holes, b, "holes", dev)
    n_max = int(holes.max().item()) if b else 0
    mask = torch.ones(b, h, w, device=dev, dtype=x.dtype)
    ys = torch.arange(h, device=dev)[None, :, None]
    xs = torch.arange(w, device=dev)[None, None, :]
    half = (length / 2).reshape(b, 1, 1)
    for k in range(n_max):
        cy = torch.randint(0, h, (b,), device=dev, generator=generator).reshape(b, 1, 1)
        cx = torch.randint(0, w, (b,), device=dev, generator=generator).reshape(b, 1, 1)
        # length L covers rows [cy - L/2, cy + L/2): L cells for even L.
        inside = (ys >= cy - half) & (ys < cy + half) & (xs >= cx - half) & (xs < cx + half)
        active = (holes > k).reshape(b, 1, 1)
        mask = mask * (~(inside & active)).to(x.dtype)
    if x.dim() == 4:
        mask = mask[:, None]
    return x * mask


def _counts(v: torch.Tensor | float, b: int, what: str, dev: torch.device) -> torch.Tensor:
    """Per-example integer counts ``(b,)`` from a scalar or one value per example."""
    t = torch.as_tensor(v, device=dev).reshape(-1)
    if t.numel() not in (1, b):
        raise ConfigError(f"cutout: {t.numel()} {what} values for a batch of {b}")
    return t.float().floor().clamp_min(0).expand(b)


class _Op:
    names: tuple[str, ...] = ()

    def __call__(self, x: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class Brightness(_Op):
    """Brightness jitter: add ``U(-a, a)`` per example, ``a`` the hyperparameter ``name``."""

    def __init__(self, name: str) -> None:
        self.names = (name,)

    def __call__(self, x: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        _float_images(x, "Brightness")
        a = values[self.names[0]].to(x.dtype).expand(x.shape[0])
        return adjust_brightness(x, (2 * torch.rand_like(a) - 1) * a)


class Contrast(_Op):
    """Contrast jitter: factor ``1 + U(-a, a)`` per example, ``a`` the hyperparameter ``name``."""

    def __init__(self, name: str) -> None:
        self.names = (name,)

    def __call__(self, x: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        _float_images(x, "Contrast")
        a = values[self.names[0]].to(x.dtype).expand(x.shape[0])
        return adjust_contrast(x, 1 + (2 * torch.rand_like(a) - 1) * a)


class Cutout(_Op):
    """Cutout with tuned (discrete) ``length`` and optionally tuned ``holes``.

    Args:
        length: Hyperparameter name of the patch side.
        holes: Hyperparameter name of the number of patches, or a fixed integer.
    """

    def __init__(self, length: str, holes: str | int = 1) -> None:
        self.names = (length,) + ((holes,) if isinstance(holes, str) else ())
        self.holes = holes

    def __call__(self, x: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        holes = values[self.holes] if isinstance(self.holes, str) else self.holes
        return cutout(x, values[self.names[0]], holes)


class BatchAugment:
    """Compose augmentations whose strengths are hyperparameters; applies to batch tensors.

    Reads the per-example values from the active context (the tuner applies it to training
    batches only, never to validation batches).

    Args:
        ops: :class:`Cutout`, :class:`Brightness`, :class:`Contrast` or any callable
            ``op(x, values) -> x`` with a ``names`` attribute.

    Example:
        >>> space = HyperSpace().add("bright", 0.1, low=0.0, high=0.5)
        >>> aug = BatchAugment([Brightness("bright")])
        >>> with space.context(space.sample(4)):
        ...     aug(torch.zeros(4, 1, 3, 3)).shape
        torch.Size([4, 1, 3, 3])
    """

    def __init__(self, ops: Sequence[_Op]) -> None:
        if isinstance(ops, _Op) or not isinstance(ops, Iterable) or isinstance(ops, str):
            raise ConfigTypeError(
                f"BatchAugment takes a list of ops, e.g. BatchAugment([Brightness('b')]), got "
                f"{type(ops).__name__} {ops!r}"
            )
        self.ops = list(ops)
        bad = [op for op in self.ops if not callable(op)]
        if bad:
            raise ConfigTypeError(
                f"BatchAugment: every op must be callable as op(x, values), got {bad[0]!r}"
            )
        self.names = [n for op in self.ops for n in getattr(op, "names", ())]

    def check(self, space: HyperSpace) -> None:
        """Raise :class:`ConfigError` if an op names a hyperparameter missing from ``space``."""
        for n in self.names:
            space.index(n)

    def __call__(self, x: torch.Tensor, *, space: HyperSpace | None = None) -> torch.Tensor:
        ctx = _ctx(space)
        values = {n: _per_example(ctx.param(n), x).reshape(-1) for n in self.names}
        for op in self.ops:
            x = op(x, values)
        return x
