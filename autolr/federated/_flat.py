"""Flattening a client's or the server's tensors, checked against the parameters' shapes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .._errors import ConfigError, ConfigTypeError

__all__ = ["flatten_like"]


def flatten_like(
    tensors: Iterable[torch.Tensor],
    shapes: Sequence[tuple[int, ...]],
    ref: torch.Tensor,
    who: str,
    owner: str,
) -> torch.Tensor:
    """One flat tensor (``ref``'s device and dtype) from tensors shaped like ``shapes``.

    Args:
        tensors: A sequence (or iterable, e.g. ``model.parameters()``) of tensors.
        shapes: The shape each tensor must have, in order.
        ref: Tensor whose device and dtype the result takes.
        who: Name of ``tensors`` in error messages (``"client_params[0]"``).
        owner: Who holds the parameters, in error messages (``"the server"``).

    Raises:
        ConfigTypeError: ``tensors`` is a tensor or not iterable, or an item is not a tensor.
        ConfigError: The number of tensors or a shape differs.

    Example:
        >>> flatten_like([torch.ones(2, 1)], [(2, 1)], torch.zeros(1), "x", "the server")
        tensor([1., 1.])
    """
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Iterable):
        raise ConfigTypeError(f"{who} must be a sequence of tensors like {owner}'s params")
    tensors = list(tensors)
    if len(tensors) != len(shapes):
        raise ConfigError(f"{who} has {len(tensors)} tensors, {owner} has {len(shapes)} params")
    for i, (t, shape) in enumerate(zip(tensors, shapes)):
        if not isinstance(t, torch.Tensor):
            raise ConfigTypeError(f"{who}[{i}] is a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != tuple(shape):
            raise ConfigError(f"{who}[{i}] has shape {tuple(t.shape)}, expected {tuple(shape)}")
    return torch.cat([t.detach().to(ref.device, ref.dtype).reshape(-1) for t in tensors])
