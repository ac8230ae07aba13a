"""Self-Tuning Networks: best-response layers and schedules for regularisation hyperparameters.

STN (MacKay et al., ICLR 2019) and Delta-STN (Bae & Grosse, NeurIPS 2020) tune regularisation
hyperparameters (dropout rates, L2, augmentation strengths) online, during a single training
run, by training each layer's weights as a function of the hyperparameters and following the
validation loss through that best response.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from autolr import stn
    >>> space = stn.HyperSpace().add("drop", 0.05, low=0.0, high=0.9)
    >>> net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 2))
    >>> net = stn.convert(net, space, dropout={"2": "drop"})
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    >>> tuner = stn.STNTuner(net, space, nn.functional.cross_entropy, opt, hyper_lr=0.01)
    >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    >>> for _ in range(6):
    ...     _ = tuner.step((x, y), [(x, y)])
    >>> sorted(tuner.schedule().at(6))
    ['drop']
"""

from ._layers import (
    StnConv2d,
    StnDropout,
    StnLinear,
    StnModule,
    convert,
    general_parameters,
    response_parameters,
)
from ._regularizers import (
    BatchAugment,
    Brightness,
    Contrast,
    Cutout,
    adjust_brightness,
    adjust_contrast,
    cutout,
    l2_penalty,
)
from ._schedule import Schedule
from ._space import HyperContext, HyperSpace, current_context
from ._tuner import STNTuner

__all__ = [
    "BatchAugment",
    "Brightness",
    "Contrast",
    "Cutout",
    "HyperContext",
    "HyperSpace",
    "STNTuner",
    "Schedule",
    "StnConv2d",
    "StnDropout",
    "StnLinear",
    "StnModule",
    "adjust_brightness",
    "adjust_contrast",
    "convert",
    "current_context",
    "cutout",
    "general_parameters",
    "l2_penalty",
    "response_parameters",
]
