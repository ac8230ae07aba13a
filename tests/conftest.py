"""Shared fixtures: tiny models and deterministic data, CPU first."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
import torch
from torch import nn

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tiny models: one intra-op thread is faster and avoids oversubscribing CI's two cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


def make_regression(n: int = 512, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, 1, generator=g)
    y = torch.tanh(x @ w) + 0.05 * torch.randn(n, 1, generator=g)
    return x, y


# For tests that script the tuner's losses without training: tuner.step() with no
# optimizer.step() in between is what they do on purpose, and the tuner says so once.
scripted_losses = pytest.mark.filterwarnings(
    r"ignore:AutoLRS\.step\(\) at step \d+ came without:RuntimeWarning"
)


def round_trip(state: Any) -> Any:
    """``state`` through ``torch.save`` and ``torch.load(..., weights_only=True)``: what a
    checkpoint gives back."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def tiny_mlp(d: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))


def json_numbers(x: object):
    """Every number (not bool) in a parsed JSON document, for finiteness checks of results."""
    if isinstance(x, bool):
        return
    if isinstance(x, (int, float)):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from json_numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from json_numbers(v)


@pytest.fixture(scope="session")
def ray_session():
    """One Ray instance for the whole session (num_cpus=2), started by the first test needing it."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()
