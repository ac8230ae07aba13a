"""One AutoLRS decision for every rank of a ``torch.distributed`` job.

Every rank runs the same tuner on the same inputs: the loss (and the skipped flag, and the
validation loss) are averaged across ranks before the tuner sees them, so its state machine,
pure Python on equal inputs, takes the same steps everywhere. The two computations that
might differ in the last bits between processes (the GP's LR proposal and a curve-fit
forecast) are taken from rank 0 by broadcast. Each step also checks, within the same
all-reduce, that every rank is at the same step, phase, stage and LR, and raises on every
rank at once if not (a silent drift would train different models under one DDP wrapper).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from ._errors import ConfigTypeError, StateError

__all__ = ["RankSync", "resolve_group"]


def resolve_group(process_group: Any) -> RankSync | None:
    """The :class:`RankSync` an AutoLRS ``process_group`` argument asks for (None: single process).

    ``None``: the default group when ``torch.distributed`` is initialised, else none.
    ``False``: none (each process tunes on its own). A ``ProcessGroup``: that group.

    Raises:
        ConfigTypeError: Any other value, or a group while ``torch.distributed`` is not
            initialised.
    """
    if process_group is False:
        return None
    initialised = dist.is_available() and dist.is_initialized()
    if process_group is None:
        if not initialised:
            return None
        process_group = dist.group.WORLD
    elif process_group is True or not initialised:
        raise ConfigTypeError(
            f"process_group must be None (the default group when torch.distributed is "
            f"initialised), False (no synchronisation) or a torch.distributed ProcessGroup of "
            f"an initialised job, got {process_group!r}"
            + ("" if initialised else " while torch.distributed is not initialised")
        )
    if dist.get_world_size(process_group) <= 1:
        return None
    return RankSync(process_group)


class RankSync:
    """Collectives the tuner calls at the same points on every rank."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        # Rank 0 of the group, as a global rank (broadcast's src is global).
        self.src = dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0
        backend = str(dist.get_backend(group)).lower()
        # NCCL only reduces tensors on the rank's current GPU; gloo takes CPU tensors.
        self.device = (
            torch.device("cuda", torch.cuda.current_device())
            if "nccl" in backend
            else torch.device("cpu")
        )

    def step(
        self, loss: float | torch.Tensor, skipped: bool, check: Sequence[float], *, read: bool
    ) -> tuple[float | torch.Tensor, bool]:
        """Average ``loss`` across ranks, OR ``skipped``, and check ``check`` agrees.

        With ``read=False`` the averaged loss stays a device tensor (no host sync) and the
        local ``skipped`` and an unchecked ``check`` are used: under DDP every rank's gradients,
        hence its GradScaler verdict, are equal, and any drift is caught at the next read step.
        """
        local = (
            loss.detach().reshape(()).to(self.device, torch.float64)
            if isinstance(loss, torch.Tensor)
            else torch.tensor(float(loss), dtype=torch.float64, device=self.device)
        )
        extra = torch.tensor(
            [1.0 if skipped else 0.0, *map(float, check)], dtype=torch.float64, device=self.device
        )
        vec = torch.cat([local.reshape(1), extra])
        dist.all_reduce(vec, op=dist.ReduceOp.SUM, group=self.group)
        if not read:
            return vec[0] / self.world, bool(skipped)
        total = vec.cpu().tolist()
        mine = [float(c) for c in check]
        bad = [
            i
            for i, (s, c) in enumerate(zip(total[2:], mine))
            if not math.isclose(s, self.world * c, rel_tol=1e-12, abs_tol=1e-300)
        ]
        if bad:
            raise StateError(
                f"AutoLRS: the ranks of the process group disagree (rank {self.rank} has "
                f"{mine}, the mean over {self.world} ranks is "
                f"{[s / self.world for s in total[2:]]} for (step, phase, stage, lr)). Every "
                "rank must call tuner.step() once per optimizer step, with the same tuner "
                "arguments and seed"
            )
        return total[0] / self.world, total[1] > 0

    def mean(self, value: float) -> float:
        """``value`` averaged across ranks."""
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return float(t.item()) / self.world

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank."""
        t = torch.tensor([0.0 if flag else 1.0], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return float(t.item()) == 0.0

    def from_rank0(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a picklable value)."""
        box = [obj]
        dist.broadcast_object_list(box, src=self.src, group=self.group, device=self.device)
        return box[0]


class RankZeroPredictor:
    """Wraps a predictor so every rank uses rank 0's forecast (fits may differ in last bits)."""

    def __init__(self, inner: Any, sync: RankSync) -> None:
        self.inner = inner
        self.sync = sync

    def forecast(self, values: Any, target: float, *, steps: Any = None) -> Any:
        return self.sync.from_rank0(self.inner.forecast(values, target, steps=steps))

    def __getattr__(self, name: str) -> Any:
        # state_dict, load_state_dict and any configuration read through to the predictor.
        if name in ("inner", "sync"):
            raise AttributeError(name)
        return getattr(self.inner, name)
