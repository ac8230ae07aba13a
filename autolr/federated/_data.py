"""The bundled digits data set and Dirichlet non-IID client partitions."""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from .._errors import ConfigError
from .._validate import check_float, check_int

__all__ = ["dirichlet_partition", "load_digits"]


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled 8x8 handwritten digits (1797 images, 10 classes), shipped with autolr.

    A copy of scikit-learn's ``load_digits`` (the test set of the UCI "Optical Recognition of
    Handwritten Digits" data set, CC BY 4.0), stored as ``autolr/federated/data/digits.npz`` so
    nothing is downloaded and scikit-learn is not needed.

    Returns:
        ``(x, y)``: float32 features of shape ``(1797, 64)`` scaled to [0, 1] and int64 labels of
        shape ``(1797,)``.

    Example:
        >>> x, y = load_digits()
        >>> tuple(x.shape), int(y.max())
        ((1797, 64), 9)
    """
    with (
        resources.files(__package__).joinpath("data/digits.npz").open("rb") as fh,
        np.load(fh) as data,
    ):
        x = torch.from_numpy(data["x"].astype(np.float32) / 16.0)
        y = torch.from_numpy(data["y"].astype(np.int64))
    return x, y


def dirichlet_partition(
    labels: torch.Tensor,
    num_clients: int,
    alpha: float,
    *,
    seed: int = 0,
    min_size: int = 2,
    max_tries: int = 100,
) -> list[torch.Tensor]:
    """Split sample indices among clients with Dirichlet(``alpha``) label proportions.

    For every class, the class's samples are shared out among the clients in proportions drawn
    from Dir(alpha·1): small ``alpha`` (0.1) gives each client few classes (very non-IID), large
    ``alpha`` (100) approaches an IID split. Draws repeat until every client holds at least
    ``min_size`` samples (the usual recipe, e.g. FedHyper's ``src/sampling.py``).

    Args:
        labels: int labels, shape ``(n,)``.
        num_clients: number of clients (>= 1).
        alpha: Dirichlet concentration (> 0).
        seed: seed of the draw.
        min_size: smallest allowed client (>= 1).
        max_tries: draws before giving up.

    Returns:
        ``num_clients`` sorted int64 index tensors that together cover ``range(n)`` once.

    Raises:
        ConfigError: bad arguments, or no draw within ``max_tries`` gave every client
            ``min_size`` samples (too many clients for the data).

    Example:
        >>> parts = dirichlet_partition(torch.arange(100) % 10, num_clients=4, alpha=0.5)
        >>> sum(len(p) for p in parts)
        100
    """
    check_int("num_clients", num_clients, minimum=1)
    check_float("alpha", alpha, minimum=0, min_inclusive=False)
    check_int("min_size", min_size, minimum=1)
    check_int("seed", seed, minimum=0)
    check_int("max_tries", max_tries, minimum=1)
    y = np.asarray(torch.as_tensor(labels).cpu()).reshape(-1)
    if num_clients * min_size > len(y):
        raise ConfigError(
            f"{num_clients} clients x min_size {min_size} exceeds the {len(y)} samples"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(max_tries):
        shards: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * num_clients)) * len(idx)).astype(int)[:-1]
            for k, part in enumerate(np.split(idx, cuts)):
                shards[k].extend(part.tolist())
        if min(len(s) for s in shards) >= min_size:
            return [torch.tensor(sorted(s), dtype=torch.int64) for s in shards]
    raise ConfigError(
        f"no Dirichlet({alpha}) draw in {max_tries} tries gave all {num_clients} clients "
        f">= {min_size} samples; use fewer clients or a larger alpha"
    )
