"""Setting one LR on an optimizer whose parameter groups keep their ratios."""

from __future__ import annotations

import torch

__all__ = ["GroupLRs"]


class GroupLRs:
    """Writes an LR into every parameter group, scaled by the group's ratio to the first.

    The ratios are read once, from the LRs the optimizer was built with; shared by the
    in-loop tuner and Ray's ``TuneCheckpointer`` so both apply an LR the same way.

    Example:
        >>> p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([{"params": [p], "lr": 0.1}, {"params": [q], "lr": 0.05}])
        >>> GroupLRs(opt).set(1.0)
        >>> [g["lr"] for g in opt.param_groups]
        [1.0, 0.5]
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        base = [float(g["lr"]) for g in optimizer.param_groups]
        self.optimizer = optimizer
        self.first = base[0]
        self.scales = [lr / base[0] if base[0] > 0 else 1.0 for lr in base]

    def set(self, lr: float) -> None:
        """Set ``lr`` on the first group and the scaled LRs on the others."""
        for group, scale in zip(self.optimizer.param_groups, self.scales):
            value = lr * scale
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(value)  # fused/capturable optimizers keep lr as a tensor
            else:
                group["lr"] = value
