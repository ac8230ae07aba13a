"""FedHyperServer / FedHyperClient constructors and the server's input flattening, pinned.

Written for the mutation run of issue 18 (mutation/README.md): every argument check by its
whole message, the defaults by value (written out by hand here), the edges that must pass,
and what ``FedHyperServer.step`` does with each kind of malformed client reply.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import torch

from autolr import ConfigError, ConfigTypeError
from autolr.federated import FedHyperClient, FedHyperServer


def _x() -> torch.Tensor:
    return torch.zeros(2)


def _raises(exc: type[Exception], message: str, build: Any, *args: Any, **kw: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(exc, match="^" + re.escape(message) + "$"):
            build(*args, **kw)


def _sgd(*lrs: float) -> torch.optim.SGD:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr}
                            for lr in lrs])  # fmt: skip


# ---------------------------------------------------------------------- FedHyperServer
def test_every_server_constructor_message_in_full() -> None:
    S = FedHyperServer
    x = _x()
    cases: list[tuple[type[Exception], str, Any, dict[str, Any]]] = [
        (TypeError, "FedHyperServer() got an unexpected keyword argument 'lr'", [x], {"lr": 1}),
        (ConfigError, "FedHyperServer: got both hypergrad_lr=2 and its deprecated old name "
         "hyper_lr=0.5; pass only hypergrad_lr", [x], {"hyper_lr": 0.5, "hypergrad_lr": 2}),
        (ConfigError, "FedHyperServer: got both local_hypergrad_lr=0.0 and its deprecated old "
         "name local_hyper_lr=0.5; pass only local_hypergrad_lr",
         [x], {"local_hyper_lr": 0.5, "local_hypergrad_lr": 0.0}),
        (ConfigError, "hyper_lr must be a finite float >= 0, got -1", [x], {"hyper_lr": -1}),
        (ConfigError, "local_hyper_lr must be a finite float >= 0, got -1",
         [x], {"local_hyper_lr": -1}),
        (ConfigTypeError, "params must be an iterable of tensors, e.g. model.parameters()", x, {}),
        (ConfigError, "params is empty: the server needs the global model's parameters", [], {}),
        (ConfigTypeError, "params must hold tensors, got float", [x, 3.0], {}),
        (ConfigError, "params must share one device and one dtype",
         [x, torch.zeros(1, dtype=torch.float64)], {}),
        (ConfigError, "params must be floating point, got torch.int64",
         [torch.zeros(2, dtype=torch.int64)], {}),
        (ConfigError, "rule must be one of 'none', 'g', 'gm', got 'G'", [x], {"rule": "G"}),
        (ConfigError, "server_optimizer must be one of 'avg', 'adam', got 'sgd'",
         [x], {"server_optimizer": "sgd"}),
        (ConfigError, "rule='gm' adds server momentum; with Adam use rule='g'",
         [x], {"rule": "gm", "server_optimizer": "adam"}),
    ]  # fmt: skip
    # ConfigError for one param: the whole message for each argument set
    numbers = {
        "global_lr must be a finite float > 0, got 0.0": {"global_lr": 0.0},
        "hypergrad_lr must be a finite float >= 0, got -0.5": {"hypergrad_lr": -0.5},
        "momentum must be a finite float in [0, 1), got 1.0": {"momentum": 1.0},
        "momentum must be a finite float in [0, 1), got -0.1": {"momentum": -0.1},
        "global_lr_bounds must be a pair (low, high) with 0 < low <= high, both finite, got "
        "(0.0, 1.0)": {"global_lr_bounds": (0.0, 1.0)},
        "global_lr 0.1 lies outside global_lr_bounds (0.2, 5.0)":
            {"global_lr": 0.1, "global_lr_bounds": (0.2, 5.0)},
        "global_lr 6.0 lies outside global_lr_bounds (0.2, 5.0)":
            {"global_lr": 6.0, "global_lr_bounds": (0.2, 5.0)},
        "adam_betas[0] must be a finite float in [0, 1), got 1.0": {"adam_betas": (1.0, 0.5)},
        "adam_betas[1] must be a finite float in [0, 1), got -0.5": {"adam_betas": (0.5, -0.5)},
        "adam_betas[0] must be a finite float in [0, 1), got -0.5": {"adam_betas": (-0.5, 0.5)},
        "adam_betas[1] must be a finite float in [0, 1), got 1.0": {"adam_betas": (0.5, 1.0)},
        "adam_tau must be a finite float > 0, got 0.0": {"adam_tau": 0.0},
        "local_lr must be a finite float > 0, got 0": {"local_lr": 0},
        "local_hypergrad_lr must be a finite float >= 0, got -2": {"local_hypergrad_lr": -2},
        "local_lr_bounds must be a pair (low, high) with 0 < low <= high, both finite, got "
        "(0.5, 0.1)": {"local_lr_bounds": (0.5, 0.1)},
        "local_lr 0.01 lies outside local_lr_bounds (0.1, 1.0)": {"local_lr_bounds": (0.1, 1.0)},
        "local_lr 2.0 lies outside local_lr_bounds (0.1, 1.0)":
            {"local_lr": 2.0, "local_lr_bounds": (0.1, 1.0)},
    }  # fmt: skip
    cases += [(ConfigError, message, [x], kw) for message, kw in numbers.items()]
    for exc, message, params, kw in cases:
        _raises(exc, message, S, params, **kw)


def test_server_defaults_by_value() -> None:
    x = _x()
    s = FedHyperServer([x])
    assert (s.rule, s.server_optimizer, s.normalize, s.adapt_local_lr) == ("g", "avg", False, False)
    assert (s.initial_global_lr, s.global_lr, s.hypergrad_lr, s.local_hypergrad_lr) == (1, 1, 1, 1)
    assert (s.momentum, s.adam_betas, s.adam_tau) == (0.9, (0.9, 0.99), 1e-3)
    assert (s.initial_local_lr, s.local_lr, s.local_lr_bounds) == (0.01, 0.01, (0.001, 0.1))
    assert s.global_lr_bounds == (0.2, 5.0)
    assert (s.round, s.momentum_coef, s.skipped_rounds, s.dropped_updates) == (0, 0.0, 0, 0)
    assert s.previous_update is None and s.effective_global_lr == 1.0
    n = FedHyperServer([x], normalize=True)
    assert (n.normalize, n.hypergrad_lr, n.local_hypergrad_lr) == (True, 0.3, 0.3)
    assert FedHyperServer([x], normalize=1).normalize is True  # stored as a bool
    assert FedHyperServer([x], adapt_local_lr=1).adapt_local_lr is True
    # the default clip bounds of η (written out: the release's values widened to hold η_0)
    bounds = {
        ("g", "avg", 1.0): (0.2, 5.0),
        ("g", "avg", 0.1): (0.1, 5.0),
        ("g", "avg", 8.0): (0.2, 8.0),
        ("none", "avg", 0.5): (0.2, 5.0),
        ("gm", "avg", 1.0): (0.8, 5.0),
        ("gm", "avg", 10.0): (8.0, 10.0),
        ("g", "adam", 0.5): (0.05, 5.0),
        ("none", "adam", 2.0): (0.2, 20.0),
    }
    for (rule, opt, eta0), expected in bounds.items():
        s = FedHyperServer([x], rule=rule, server_optimizer=opt, global_lr=eta0)
        assert s.global_lr_bounds == pytest.approx(expected, rel=1e-12), (rule, opt, eta0)
        assert s.global_lr == eta0 and s.rule == rule and s.server_optimizer == opt
    assert FedHyperServer([x], local_lr=0.5).local_lr_bounds == pytest.approx((0.05, 5.0))


def test_server_edges_that_must_pass_and_renamed_arguments() -> None:
    x = _x()
    s = FedHyperServer([x, torch.zeros(3, 1)], global_lr=0.2, global_lr_bounds=(0.2, 0.2),
                       hypergrad_lr=0, momentum=0, adam_betas=(0, 0), local_lr=0.1,
                       local_lr_bounds=(0.1, 0.1), local_hypergrad_lr=0)  # fmt: skip
    assert (s.global_lr_bounds, s.local_lr_bounds, s.momentum) == ((0.2, 0.2), (0.1, 0.1), 0.0)
    assert (s.hypergrad_lr, s.local_hypergrad_lr, s.adam_betas) == (0.0, 0.0, (0.0, 0.0))
    assert FedHyperServer([x], global_lr=5.0).global_lr == 5.0  # at the default high bound
    assert FedHyperServer(p for p in [x]).params[0] is x  # any iterable, e.g. parameters()
    with pytest.warns(DeprecationWarning, match="'hyper_lr' is deprecated"):
        old = FedHyperServer([x], hyper_lr=0.25, hypergrad_lr=None)
    assert old.hypergrad_lr == 0.25 and old.local_hypergrad_lr == 1.0
    with pytest.warns(DeprecationWarning, match="'local_hyper_lr' is deprecated"):
        old = FedHyperServer([x], local_hyper_lr=0.125, normalize=True)
    assert old.local_hypergrad_lr == 0.125 and old.hypergrad_lr == 0.3


# ---------------------------------------------------------------------- FedHyperServer._flatten
def test_each_malformed_client_reply_by_its_whole_message() -> None:
    x, y = _x(), torch.zeros(3)
    server = FedHyperServer([x, y])
    cases: list[tuple[type[Exception], str, Any]] = [
        (ConfigTypeError, "client_params[0] must be a sequence of tensors like the server's "
         "params", [x, y]),  # a tensor: one client, not a list of clients
        (ConfigTypeError, "client_params[1] must be a sequence of tensors like the server's "
         "params", [[x, y], 5]),
        (ConfigError, "client_params[0] has 1 tensors, the server has 2 params", [[x]]),
        (ConfigError, "client_params[1] has 3 tensors, the server has 2 params",
         [[x, y], [x, y, y]]),
        (ConfigTypeError, "client_params[0][1] is a float, not a tensor", [[x, 3.0]]),
        (ConfigTypeError, "client_params[0][0] is a list, not a tensor", [[[0.0, 0.0], y]]),
        (ConfigError, "client_params[0][1] has shape (3, 1), expected (3,)",
         [[x, torch.zeros(3, 1)]]),
    ]  # fmt: skip
    for exc, message, replies in cases:
        _raises(exc, message, server.step, replies)
    assert server.round == 0 and torch.equal(x, _x())  # nothing happened


def test_client_replies_are_cast_to_the_server_dtype_before_the_difference() -> None:
    # Global weights in float32, a float64 reply 1e-9 above them: cast first, the reply is the
    # global weight itself (1e-9 is far below float32's spacing at 1/3), so Δ = 0; subtracting
    # in float64 would give Δ = 1e-9.
    third = torch.tensor([1 / 3, 1 / 3], dtype=torch.float32)
    server = FedHyperServer([third.clone()])
    reply = third.double() + 1e-9
    report = server.step([[reply]])
    assert report.update_norm == 0.0 and torch.equal(server.params[0], third)
    # generators (client_model.parameters()) and tensors that require grad are accepted
    w = torch.nn.Parameter(torch.tensor([[1.0, 2.0]]))
    s2 = FedHyperServer([torch.zeros(1, 2)])
    report = s2.step([(p for p in [w])])
    assert report.update_norm == pytest.approx(5**0.5) and s2.params[0].tolist() == [[1.0, 2.0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_replies_and_a_cpu_state_are_moved_to_a_cuda_server() -> None:
    x = torch.zeros(2, device="cuda")
    server = FedHyperServer([x])
    report = server.step([[torch.tensor([1.0, 2.0])]])  # a reply on the CPU
    # round 0 is FedAvg with η_0 = 1: the global model becomes the reply, on the GPU
    assert x.device.type == "cuda" and x.tolist() == [1.0, 2.0]
    assert report.update_norm == pytest.approx(5**0.5)
    src = FedHyperServer([torch.zeros(2)])  # a state saved on the CPU: Δ_0 = (1, 0)
    src.step([[torch.tensor([1.0, 0.0])]])
    dst = FedHyperServer([src.params[0].cuda()])
    dst.load_state_dict(src.state_dict())
    assert dst.previous_update[0].device.type == "cuda"
    assert dst.step([[torch.tensor([1.5, 0.5], device="cuda")]]).global_lr == 1.5


def test_a_float64_state_loads_into_a_float32_server_in_its_dtype() -> None:
    # The state's buffers (Δ_{t-1}) come back in the server's dtype: the next round's dot
    # product with a float32 update works and gives the float64 server's LR.
    src = FedHyperServer([torch.zeros(2, dtype=torch.float64)])
    src.step([[torch.tensor([1.0, 0.0], dtype=torch.float64)]])  # round 0: Δ_0 = (1, 0)
    dst = FedHyperServer([src.params[0].float()])
    dst.load_state_dict(src.state_dict())
    assert dst.previous_update[0].dtype == torch.float32
    a = src.step([[torch.tensor([1.5, 0.5], dtype=torch.float64)]])  # Δ_1 = (0.5, 0.5)
    b = dst.step([[torch.tensor([1.5, 0.5])]])
    assert a.global_lr == b.global_lr == 1.5  # η_g = 1 + β⟨Δ_0, Δ_1⟩ = 1 + 0.5
    assert dst.params[0].tolist() == [1.75, 0.75] and dst.params[0].dtype == torch.float32


# ---------------------------------------------------------------------- FedHyperClient
def test_every_client_constructor_message_in_full() -> None:
    C = FedHyperClient
    cases: list[tuple[type[Exception], str, Any, dict[str, Any]]] = [
        (TypeError, "FedHyperClient() got an unexpected keyword argument 'lr'",
         _sgd(0.1), {"lr": 1}),
        (ConfigError, "FedHyperClient: got both hypergrad_lr=2 and its deprecated old name "
         "hyper_lr=0.5; pass only hypergrad_lr", _sgd(0.1), {"hyper_lr": 0.5, "hypergrad_lr": 2}),
        (ConfigError, "hyper_lr must be a finite float >= 0, got -1", _sgd(0.1), {"hyper_lr": -1}),
        (ConfigTypeError, "optimizer must be a torch.optim.Optimizer, got int", 5, {}),
        (ConfigError, "hypergrad_lr must be a finite float >= 0, got -0.5",
         _sgd(0.1), {"hypergrad_lr": -0.5}),
        (ConfigError, "global_coef must be a finite float >= 0, got -0.1",
         _sgd(0.1), {"global_coef": -0.1}),
        (ConfigError, "max_growth must be a finite float >= 1, got 0.9",
         _sgd(0.1), {"max_growth": 0.9}),
        (ConfigError, "scale_bounds must be a pair (low, high) with 0 < low <= high, both "
         "finite, got (0.0, 2.0)", _sgd(0.1), {"scale_bounds": (0.0, 2.0)}),
        (ConfigError, "scale_bounds must contain 1, got (2.0, 3.0)",
         _sgd(0.1), {"scale_bounds": (2.0, 3.0)}),
        (ConfigError, "scale_bounds must contain 1, got [0.1, 0.5]",
         _sgd(0.1), {"scale_bounds": [0.1, 0.5]}),
    ]  # fmt: skip
    for exc, message, optimizer, kw in cases:
        _raises(exc, message, C, optimizer, **kw)
    _raises(ConfigError, "call begin_round() before step()", C(_sgd(0.1)).step)


def test_client_defaults_edges_and_renamed_argument() -> None:
    c = FedHyperClient(_sgd(0.0, 0.2, 0.4))  # the first group with a positive LR is the base
    assert (c.hypergrad_lr, c.global_coef, c.max_growth, c.scale_bounds) == (1, 0.1, 1.1, (0.1, 10))
    assert (c.base_lr, c.scale, c.lr, c.steps, c.skipped_hyper_steps) == (0.2, 1.0, 0.2, 0, 0)
    edge = FedHyperClient(_sgd(0.1), hypergrad_lr=0, global_coef=0, max_growth=1,
                          scale_bounds=(1, 1))  # fmt: skip
    assert (edge.hypergrad_lr, edge.global_coef, edge.max_growth) == (0.0, 0.0, 1.0)
    assert edge.scale_bounds == (1.0, 1.0)
    with pytest.warns(DeprecationWarning, match="'hyper_lr' is deprecated"):
        old = FedHyperClient(_sgd(0.1), hyper_lr=0.25, hypergrad_lr=1.0)  # 1.0: the default
    assert old.hypergrad_lr == 0.25
    # each group's LR is set from the base, frozen groups stay at 0 (see GroupLRs)
    opt = _sgd(0.0, 0.2, 0.4)
    client = FedHyperClient(opt)
    assert client.optimizer is opt  # the wrapped optimizer stays reachable, as on HypergradientLR
    client.begin_round(0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0, 0.1, 0.2])
    assert len(client._params) == 3  # every group's parameters are watched
