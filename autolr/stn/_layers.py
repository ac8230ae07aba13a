"""Best-response layers, hyperparameter-driven dropout and :func:`convert`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .._errors import ConfigError, ConfigTypeError, StateError
from .._validate import check_instance
from ._space import HyperContext, HyperSpace, current_context

__all__ = [
    "StnConv2d",
    "StnDropout",
    "StnLinear",
    "StnModule",
    "convert",
    "general_parameters",
    "response_parameters",
]


class StnModule(nn.Module):
    """Mixin of every hyperparameter-aware module; :func:`convert` attaches the space."""

    # Not a registered submodule: the space's λ must not appear in model.parameters().
    _stn_space: HyperSpace | None = None

    def attach(self, space: HyperSpace) -> None:
        """Read the unperturbed hyperparameters of ``space`` when no context is active."""
        object.__setattr__(self, "_stn_space", space)

    def _context(self) -> HyperContext:
        ctx = current_context(self._stn_space)
        if ctx is None:
            raise StateError(
                f"{type(self).__name__} has no hyperparameters: run it inside "
                "`with space.context(...)` or convert the model with autolr.stn.convert()"
            )
        return ctx


def _gates(layer: nn.Module, ctx: HyperContext, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    if ctx.h_net.shape[-1] != layer.hyper_bottleneck.in_features:
        raise StateError(
            f"{type(layer).__name__} expects {layer.hyper_bottleneck.in_features} hyperparameters, "
            f"the active context has {ctx.h_net.shape[-1]}"
        )
    s = layer.hyper_bottleneck(ctx.h_net.to(layer.hyper_bottleneck.weight.dtype))
    return s[:, :n_out], s[:, n_out:]


def _reset_response(layer: nn.Module) -> None:
    """Kaiming-uniform response weights (non-zero, else V never gets a gradient), V = 0."""
    nn.init.kaiming_uniform_(layer.response_weight, a=math.sqrt(5))
    if layer.response_bias is not None:
        fan_in = layer.response_weight.shape[1:].numel()  # inputs (x kernel) per output unit
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(layer.response_bias, -bound, bound)
    nn.init.zeros_(layer.hyper_bottleneck.weight)


def _rows(s: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if s.shape[0] not in (1, batch):
        raise StateError(
            f"{name}: the hyperparameter context has {s.shape[0]} rows but the layer's input "
            f"batch has {batch}; sample one row per example (or one row for the whole batch)"
        )
    return s


class StnLinear(nn.Linear, StnModule):
    """Linear layer whose weights respond to the hyperparameters.

    ``y = W x + b + s_w ⊙ (W_r x) + s_b ⊙ b_r`` with ``[s_w, s_b] = V h``: each output unit's
    response path is gated by a linear map ``V`` of the hyperparameters ``h``. ``weight`` and
    ``bias`` are the elementary path (same names as :class:`torch.nn.Linear`); ``V`` starts at
    zero so a fresh layer computes exactly the plain linear map.

    Args:
        in_features: Input size.
        out_features: Output size.
        n_hyper: Number of hyperparameters (``len(space)``).
        bias: Whether to use biases.

    Example:
        >>> space = HyperSpace().add("drop", 0.1, low=0.0, high=0.9)
        >>> layer = StnLinear(4, 3, len(space))
        >>> with space.context(space.sample(2)):
        ...     layer(torch.randn(2, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_hyper: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        kw = {"device": device, "dtype": dtype}
        self.response_weight = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.response_bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        self.hyper_bottleneck = nn.Linear(n_hyper, 2 * out_features, bias=False, **kw)
        self.reset_response_parameters()

    def reset_response_parameters(self) -> None:
        """Kaiming-uniform response weights (non-zero, else V never gets a gradient), V = 0."""
        _reset_response(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self._context()
        out = F.linear(x, self.weight, self.bias)
        if ctx.zero_net:
            return out
        s_w, s_b = _gates(self, ctx, self.out_features)
        _rows(s_w, x.shape[0] if x.dim() > 1 else 1, "StnLinear")
        # Broadcast the per-example gates over any middle dimensions (sequence, ...).
        shape = (s_w.shape[0],) + (1,) * max(0, x.dim() - 2) + (self.out_features,)
        resp = s_w.reshape(shape) * F.linear(x, self.response_weight)
        if self.response_bias is not None:
            resp = resp + s_b.reshape(shape) * self.response_bias
        if x.dim() == 1:  # unbatched input: keep nn.Linear's output shape (out_features,)
            resp = resp.squeeze(0)
        return out + resp

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_hyper={self.hyper_bottleneck.in_features}"


class StnConv2d(nn.Conv2d, StnModule):
    """2-d convolution whose filters respond to the hyperparameters (gates per output channel).

    Same construction as :class:`StnLinear`; every :class:`torch.nn.Conv2d` option is kept.

    Example:
        >>> space = HyperSpace().add("drop", 0.1, low=0.0, high=0.9)
        >>> conv = StnConv2d(1, 4, 3, n_hyper=len(space), padding=1)
        >>> conv.attach(space)  # convert() does this; outside a context: unperturbed λ
        >>> conv(torch.randn(2, 1, 5, 5)).shape
        torch.Size([2, 4, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, *, n_hyper: int, **kw):
        super().__init__(in_channels, out_channels, kernel_size, **kw)
        fk = {"device": self.weight.device, "dtype": self.weight.dtype}
        self.response_weight = nn.Parameter(torch.empty_like(self.weight))
        self.response_bias = (
            nn.Parameter(torch.empty(out_channels, **fk)) if kw.get("bias", True) else None
        )
        self.hyper_bottleneck = nn.Linear(n_hyper, 2 * out_channels, bias=False, **fk)
        self.reset_response_parameters()

    def reset_response_parameters(self) -> None:
        """Kaiming-uniform response filters, V = 0."""
        _reset_response(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self._context()
        out = self._conv_forward(x, self.weight, self.bias)
        if ctx.zero_net:
            return out
        s_w, s_b = _gates(self, ctx, self.out_channels)
        batch = x.shape[0] if x.dim() == 4 else 1
        _rows(s_w, batch, "StnConv2d")
        resp = s_w[:, :, None, None] * self._conv_forward(x, self.response_weight, None)
        if self.response_bias is not None:
            resp = resp + (s_b * self.response_bias)[:, :, None, None]
        if x.dim() == 3:  # unbatched input
            resp = resp.squeeze(0)
        return out + resp

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_hyper={self.hyper_bottleneck.in_features}"


class StnDropout(StnModule):
    """Dropout whose rate is the hyperparameter ``name`` (per example in training mode).

    Masks are drawn from detached rates: no gradient flows through the rate itself; the rate is
    tuned through the best-response path only, as in the STN paper. Identity in eval mode.

    Args:
        name: Hyperparameter holding the drop probability: continuous, with both bounds and
            ``0 <= low < high <= 1`` (:func:`convert` and :class:`autolr.stn.STNTuner` check
            it), so the rate stays in ``[0, 1)``.

    Example:
        >>> space = HyperSpace().add("drop", 0.5, low=0.0, high=0.9)
        >>> drop = StnDropout("drop")
        >>> drop.attach(space)
        >>> torch.equal(drop.eval()(torch.ones(2, 3)), torch.ones(2, 3))
        True
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        p = _rows(self._context().param(self.name), x.shape[0], f"StnDropout({self.name!r})")
        p = p.to(x.dtype).clamp(0.0, 0.999).reshape((-1,) + (1,) * (x.dim() - 1))
        keep = 1.0 - p
        mask = torch.bernoulli(keep.expand_as(x))
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def check_rate(space: HyperSpace, name: str, owner: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` can drive a dropout rate (see StnDropout).

    StnDropout clamps the rate to [0, 0.999], so a wider range would be cut off silently.
    """
    spec = space._spec(name)
    if spec.discrete or spec.low is None or spec.high is None or spec.low < 0 or spec.high > 1:
        raise ConfigError(
            f"{owner}: the dropout hyperparameter {name!r} must be continuous with bounds "
            f"0 <= low < high <= 1 (a drop probability), got low={spec.low}, high={spec.high}"
            f"{', discrete=True' if spec.discrete else ''}; add it as e.g. "
            f"space.add({name!r}, 0.1, low=0.0, high=0.9)"
        )


def _names_list(key: str, value: object, item: type, example: str) -> tuple:
    """``value`` as a tuple of ``item`` instances; a lone str or type is refused, not iterated."""
    if isinstance(value, (str, bytes, type)) or not isinstance(value, Iterable):
        raise ConfigTypeError(
            f"convert: {key} must be a list or tuple, e.g. {key}={example}, got "
            f"{type(value).__name__} {value!r}"
        )
    items = tuple(value)
    bad = [v for v in items if not isinstance(v, item)]
    if bad:
        raise ConfigTypeError(
            f"convert: {key} must hold {item.__name__} entries, e.g. {key}={example}, "
            f"got {bad[0]!r}"
        )
    return items


def _convert_one(module: nn.Module, n: int) -> nn.Module:
    if type(module) is nn.Linear:
        new = StnLinear(
            module.in_features, module.out_features, n, bias=module.bias is not None,
            device=module.weight.device, dtype=module.weight.dtype,
        )  # fmt: skip
    elif type(module) is nn.Conv2d:
        new = StnConv2d(
            module.in_channels, module.out_channels, module.kernel_size, n_hyper=n,
            stride=module.stride, padding=module.padding, dilation=module.dilation,
            groups=module.groups, bias=module.bias is not None, padding_mode=module.padding_mode,
            device=module.weight.device, dtype=module.weight.dtype,
        )  # fmt: skip
    else:
        raise ConfigTypeError(f"convert: no best-response layer for {type(module).__name__}")
    with torch.no_grad():
        new.weight.copy_(module.weight)
        if module.bias is not None:
            new.bias.copy_(module.bias)
    new.train(module.training)
    return new


def convert(
    model: nn.Module,
    space: HyperSpace,
    include: Sequence[type[nn.Module]] = (nn.Linear, nn.Conv2d),
    *,
    exclude: Sequence[str] = (),
    dropout: Mapping[str, str] | None = None,
) -> nn.Module:
    """Turn ``model`` into a Self-Tuning Network in place and return it.

    Every submodule whose type is in ``include`` (exact :class:`torch.nn.Linear` /
    :class:`torch.nn.Conv2d`, not subclasses) and whose qualified name is not in ``exclude`` is
    replaced by :class:`StnLinear` / :class:`StnConv2d` with its weights copied into the
    elementary path. Since the gates start at zero the converted model computes exactly what
    the original did. ``forward(x)`` is unchanged: the layers read the hyperparameters from the
    active context (or the space's current λ outside one).

    Args:
        model: The model (modified in place). A module registered under several names (tied
            or shared layers) is replaced under all of them by one new module, so it stays
            shared; excluding any of its names keeps it plain.
        space: The hyperparameters; frozen by this call once every argument is checked.
        include: Layer types to convert (a list or tuple, subset of
            ``(nn.Linear, nn.Conv2d)``).
        exclude: Qualified module names to keep plain (a list or tuple, e.g. ``("head",)``).
        dropout: ``{module name: hyperparameter}``: replace those :class:`torch.nn.Dropout`
            modules by :class:`StnDropout` driven by the hyperparameter (continuous, with
            ``0 <= low < high <= 1``).

    Raises:
        ConfigError: No supported layer found, unknown names, a bad dropout mapping or rate
            bounds, or best-response layers built for a space of another size. Nothing is
            changed (model or space) when it raises.
        ConfigTypeError: ``include``/``exclude`` not a list or tuple (a lone type or str), or
            ``dropout`` not a mapping of str to str.

    Example:
        >>> space = HyperSpace().add("drop", 0.1, low=0.0, high=0.9)
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 2))
        >>> net = convert(net, space, dropout={"2": "drop"})
        >>> [type(m).__name__ for m in net]
        ['StnLinear', 'ReLU', 'StnDropout', 'StnLinear']
    """
    check_instance("model", model, nn.Module)
    check_instance("space", space, HyperSpace)
    include = _names_list("include", include, type, "(nn.Linear,)")
    exclude = _names_list("exclude", exclude, str, "('head',)")
    if dropout is not None and not isinstance(dropout, Mapping):
        raise ConfigTypeError(
            "convert: dropout must be a dict {module name: hyperparameter}, e.g. "
            f"dropout={{'drop': 'p'}}, got {type(dropout).__name__} {dropout!r}"
        )
    dropout = dict(dropout or {})
    bad = [(k, v) for k, v in dropout.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise ConfigTypeError(
            f"convert: dropout must map module names (str) to hyperparameter names (str), "
            f"got {bad[0][0]!r}: {bad[0][1]!r}"
        )
    supported = (nn.Linear, nn.Conv2d)
    for t in include:
        if t not in supported:
            raise ConfigError(f"convert: include may only hold nn.Linear and nn.Conv2d, got {t}")
    if len(space) == 0:  # what freeze() raises, but before anything is changed
        raise ConfigError("HyperSpace is empty: add at least one hyperparameter")
    # Every name of every module (named_modules() lists a shared module under its first name
    # only): a tied layer must be replaced under all its names to stay tied.
    aliases: dict[int, list[str]] = {}
    by_name: dict[str, nn.Module] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        aliases.setdefault(id(m), []).append(n)
        by_name[n] = m
    for key in [*exclude, *dropout]:
        if key not in by_name:
            raise ConfigError(f"convert: no submodule named {key!r} in the model")
    rates: dict[int, str] = {}
    for mod_name, hp in dropout.items():
        space.index(hp)  # raises on an unknown hyperparameter
        mod = by_name[mod_name]
        if not isinstance(mod, nn.Dropout):
            raise ConfigError(f"convert: {mod_name!r} is a {type(mod).__name__}, not nn.Dropout")
        check_rate(space, hp, "convert")
        if rates.setdefault(id(mod), hp) != hp:
            raise ConfigError(
                f"convert: {' and '.join(map(repr, aliases[id(mod)]))} are one shared nn.Dropout "
                f"module; map it to one hyperparameter, got {rates[id(mod)]!r} and {hp!r}"
            )
    # Layers of an earlier convert() are kept: check them now, before anything is replaced.
    for m in model.modules():
        if isinstance(m, StnDropout):
            check_rate(space, m.name, "convert")
        elif isinstance(m, (StnLinear, StnConv2d)) and m.hyper_bottleneck.in_features != len(space):
            raise ConfigError(
                f"convert: {type(m).__name__} has {m.hyper_bottleneck.in_features} hyper "
                f"inputs but the space has {len(space)}"
            )
    excluded = set(exclude)
    targets = [
        m
        for n, m in model.named_modules()
        if n and type(m) in include and excluded.isdisjoint(aliases[id(m)])
    ]
    if not targets and not any(isinstance(m, (StnLinear, StnConv2d)) for m in model.modules()):
        raise ConfigError(
            f"convert: the model has no {' / '.join(t.__name__ for t in include)} layer to "
            "convert; an STN needs at least one best-response layer"
        )
    # Everything checked: from here on nothing fails half-way.
    space.freeze()
    new_layers = [(m, _convert_one(m, len(space))) for m in targets]
    new_drops: dict[int, tuple[nn.Module, nn.Module]] = {}
    for n, hp in dropout.items():
        old = by_name[n]
        if id(old) not in new_drops:
            new_drops[id(old)] = (old, StnDropout(hp))
            new_drops[id(old)][1].train(old.training)
    for old, new in [*new_layers, *new_drops.values()]:
        for n in aliases[id(old)]:
            _replace(model, n, new)
    for m in model.modules():
        if isinstance(m, StnModule):
            m.attach(space)
    return model


def _replace(model: nn.Module, qualified: str, new: nn.Module) -> None:
    parent_name, _, child = qualified.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def response_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Response weights/biases and gate maps ``V`` of every best-response layer."""
    for m in model.modules():
        if isinstance(m, (StnLinear, StnConv2d)):
            yield m.response_weight
            if m.response_bias is not None:
                yield m.response_bias
            yield m.hyper_bottleneck.weight


def general_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Every trainable parameter except :func:`response_parameters` (Delta-STN's ``w₀``)."""
    resp = {id(p) for p in response_parameters(model)}
    for p in model.parameters():
        if id(p) not in resp:
            yield p
