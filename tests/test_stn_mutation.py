"""STNTuner's rules against hand computations and exact messages (issue 18, mutation survivors).

Each test pins one documented behaviour that the tuner's other tests left open: the tuned L2's
targets (by a zero-gradient loss, the decay alone moves the weights), the value a hyper step
returns (the validation loss at the sampled λ', recomputed here), the batch-size weights of
``evaluate``, the deprecated argument name, every message in full and the saved arguments.
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from torch.nn import functional as F

from autolr import ConfigError, ConfigTypeError, StateError, stn

from .conftest import make_regression
from .test_stn import _Net, _snap, _space, _tuner

# Several tests build spaces whose hyperparameters only the gates (or nothing) read, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:STNTuner. hyperparameter:UserWarning")


def _fresh(**kw) -> tuple[stn.STNTuner, torch.nn.Module, stn.HyperSpace]:
    torch.manual_seed(0)
    space = _space()
    net = stn.convert(_Net(), space, dropout={"d1": "drop0", "d2": "drop1"})
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    return stn.STNTuner(net, space, F.mse_loss, opt, **kw), net, space


def _exact(exc: type[Exception], message: str):
    return pytest.raises(exc, match=f"^{re.escape(message)}$")


# ---------------------------------------------------------------------- defaults, arguments
def test_documented_defaults():
    tuner, _, _ = _fresh()
    assert tuner.entropy_weight == 1e-3
    assert (tuner.hyper_delay_steps, tuner.train_steps, tuner.val_steps) == (0, 2, 1)
    assert [g["lr"] for g in tuner.hyper_optimizer.param_groups] == [3e-3, 3e-3]


def test_deprecated_warmup_steps_sets_hyper_delay_steps():
    with pytest.warns(DeprecationWarning, match="warmup_steps"):
        tuner, _, _ = _fresh(warmup_steps=3)
    assert tuner.hyper_delay_steps == 3
    with _exact(
        ConfigError,
        "STNTuner: got both hyper_delay_steps=2 and its deprecated old name warmup_steps=3; "
        "pass only hyper_delay_steps",
    ):
        _fresh(warmup_steps=3, hyper_delay_steps=2)


def test_constructor_messages_are_exact():
    space = _space()
    net = stn.convert(_Net(), space, dropout={"d1": "drop0", "d2": "drop1"})
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with _exact(ConfigTypeError, "space must be an autolr.stn.HyperSpace, got str"):
        stn.STNTuner(net, "space", F.mse_loss, opt)
    head = (
        "STNTuner: loss_fn must be a callable loss_fn(output, target) -> scalar tensor, "
        "e.g. torch.nn.functional.cross_entropy; got "
    )
    with _exact(ConfigTypeError, head + "int 3"):
        stn.STNTuner(net, space, 3, opt)
    with _exact(ConfigTypeError, head + "str 'mse_loss' (pass the function itself, not its name)"):
        stn.STNTuner(net, space, "mse_loss", opt)
    with _exact(ConfigError, "STNTuner: the model was converted with a different HyperSpace"):
        stn.STNTuner(net, _space(), F.mse_loss, opt)
    with _exact(ConfigTypeError, "hyper_optimizer must be a torch.optim.Optimizer, got str"):
        stn.STNTuner(net, space, F.mse_loss, opt, hyper_optimizer="adam")
    far = _space()
    far_net = stn.convert(_Net(), far, dropout={"d1": "drop0"})
    far.to("meta")  # any device but the model's: 'meta' stands in for an accelerator
    with _exact(
        ConfigError,
        "STNTuner: the space is on meta but the model on cpu; call space.to('cpu') before "
        "building the tuner",
    ):
        stn.STNTuner(far_net, far, F.mse_loss, torch.optim.SGD(far_net.parameters(), lr=0.1))


def test_model_and_optimizer_messages_are_exact():
    space = _space()
    with _exact(ConfigTypeError, "model must be a torch.nn.Module, got str"):
        stn.STNTuner("net", space, F.mse_loss, torch.optim.SGD([torch.zeros(1)], lr=0.1))
    plain = _Net()
    with _exact(
        ConfigError,
        "STNTuner: the model has no best-response layer; convert it first with "
        "autolr.stn.convert(model, space)",
    ):
        stn.STNTuner(plain, space, F.mse_loss, torch.optim.SGD(plain.parameters(), lr=0.1))
    net = stn.convert(_Net(), space, dropout={"d1": "drop0"})
    stray = torch.optim.SGD([space.rho, torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with _exact(
        ConfigError, "STNTuner: hyper_optimizer may only hold space.unconstrained / space.rho"
    ):
        stn.STNTuner(
            net, space, F.mse_loss, torch.optim.SGD(net.parameters(), lr=0.1), hyper_optimizer=stray
        )


def test_loss_fn_messages_are_exact():
    x, y = torch.ones(4, 8), torch.zeros(4, 1)
    tail = (
        "; use reduction='mean' (the default of torch's losses) or average a per-example loss "
        "with .mean()"
    )
    head = "STNTuner: loss_fn must return a scalar tensor (the batch's mean loss), but "

    def per_example(out, target):
        return F.mse_loss(out, target, reduction="none")

    def a_float(out, target):
        return 0.5

    tuner, _, _ = _tuner()
    tuner.loss_fn = per_example
    with _exact(
        ConfigError, head + "per_example(output, target) returned a tensor of shape (4, 1)" + tail
    ):
        tuner.train_step((x, y))
    tuner.loss_fn = a_float
    with _exact(ConfigError, head + "a_float(output, target) returned 0.5 (float)" + tail):
        tuner.train_step((x, y))


def test_optimizer_and_batch_messages_are_exact():
    space = _space()
    net = stn.convert(_Net(), space, dropout={"d1": "drop0"})
    with _exact(ConfigTypeError, "optimizer must be a torch.optim.Optimizer, got str"):
        stn.STNTuner(net, space, F.mse_loss, "sgd")
    tuner = stn.STNTuner(net, space, F.mse_loss, torch.optim.SGD(net.parameters(), lr=0.1))
    with _exact(ConfigTypeError, "STNTuner: a batch must be an (inputs, targets) pair"):
        tuner.train_step(torch.ones(4, 8))


def test_a_given_hyper_optimizer_is_the_one_stepped():
    space = _space()
    net = stn.convert(_Net(), space, dropout={"d1": "drop0", "d2": "drop1"})
    hyper = torch.optim.SGD([space.unconstrained, space.rho], lr=0.0)
    tuner = stn.STNTuner(
        net, space, F.mse_loss, torch.optim.SGD(net.parameters(), lr=0.1), hyper_optimizer=hyper
    )
    assert tuner.hyper_optimizer is hyper
    x, y = make_regression(32)
    tuner.train_step((x, y))
    h0 = _snap(space)
    tuner.hyper_step((x, y))  # lr 0: λ and σ stay where they were
    assert all(torch.equal(h0[k], v) for k, v in _snap(space).items())
    assert tuner.hyper_steps == 1


# ---------------------------------------------------------------------- weight step
def test_stn_weight_step_is_sgd_on_the_loss_at_a_per_example_lambda():
    # Reference: one λ' row per example (u = space.sample(batch size)), gates fed net_input(u),
    # the weights' SGD step from that loss. No dropout is tuned: u is the only randomness.
    tuner, net, space = _gated()
    assert math.isnan(tuner.last_train_loss) and math.isnan(tuner.last_val_loss)
    params = list(net.parameters())
    before = [p.detach().clone() for p in params]
    x, y = make_regression(16)
    torch.manual_seed(5)
    u = space.sample(16)
    assert u.shape == (16, 1) and len(set(u.flatten().tolist())) == 16  # one λ' per example
    with space.context(h_net=space.net_input(u), h_param=space.constrained(u)):
        loss = F.mse_loss(net(x), y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    torch.manual_seed(5)
    assert tuner.train_step((x, y)) == pytest.approx(float(loss.detach()), rel=1e-6)
    assert tuner.last_train_loss == pytest.approx(float(loss.detach()), rel=1e-6)
    for p, p0, g in zip(params, before, grads, strict=True):
        expected = p0 if g is None else p0 - 0.1 * g
        assert torch.allclose(p.detach(), expected, atol=1e-6)


def _linear_ref(net, space, x, h):
    """Output at the first-order expansion in ``h`` around 0 (torch.autograd.functional.jvp)."""
    h_param = space.constrained(space.unconstrained.detach()[None] + h.detach())

    def f(hh):
        with space.context(h_net=hh, h_param=h_param):
            return net(x)

    out, tangent = torch.autograd.functional.jvp(f, torch.zeros_like(h), h, create_graph=True)
    return out + tangent


def _gated(**kw) -> tuple[stn.STNTuner, torch.nn.Module, stn.HyperSpace]:
    """One tuned value read by the gates only (no dropout: the sampled u is the only
    randomness of a step), non-zero gate maps V, plain SGD with lr 0.1."""
    torch.manual_seed(0)
    space = stn.HyperSpace().add("h", 0.3, low=0.0, high=1.0, init_scale=1.0)
    net = stn.convert(_Net(), space)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "hyper_bottleneck" in n:
                p.normal_(0.0, 0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    return stn.STNTuner(net, space, F.mse_loss, opt, **kw), net, space


def _zero_grad_loss(out, y):
    return 0.0 * F.mse_loss(out, y)  # a graph, but every gradient is 0


@pytest.mark.parametrize("variant", ["stn", "delta"])
def test_tuned_l2_decays_weight_matrices_only_and_by_one_factor(variant):
    # With a zero loss gradient, SGD moves a decayed W to W·(1 - lr·wd): one factor for every
    # weight matrix (Delta-STN: the general ones at λ, wd = 0.01 exactly, the response ones at
    # λ'), while biases and the gate maps V (hyper_bottleneck) stay put.
    torch.manual_seed(0)
    space = _space().add("wd", 0.01, low=0.0, per_example=False)
    net = stn.convert(_Net(), space, dropout={"d1": "drop0", "d2": "drop1"})
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "hyper_bottleneck" in n:
                p.fill_(0.5)  # non-zero V, so a decay of V would show
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    tuner = stn.STNTuner(net, space, _zero_grad_loss, opt, weight_decay="wd", variant=variant)
    response = {id(p) for p in stn.response_parameters(net)}
    params = dict(net.named_parameters())
    w0 = _snap(net)
    tuner.train_step(make_regression(16))
    w1 = _snap(net)
    factors: dict[bool, set[float]] = {True: set(), False: set()}
    for n, p in w0.items():
        if p.dim() >= 2 and "hyper_bottleneck" not in n:
            ratio = w1[n] / p
            assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=0, atol=1e-6)
            factors[id(params[n]) in response].add(round(float(ratio.flatten()[0]), 5))
        else:
            assert torch.equal(w1[n], p), n
    if variant == "delta":
        assert factors[False] == {0.99}
        assert len(factors[True]) == 1 and 0.9 < factors[True].pop() < 1.0
    else:
        assert len(factors[True] | factors[False]) == 1
        assert 0.9 < (factors[True] | factors[False]).pop() < 1.0  # 1 - wd', wd' ≈ 0.01


def test_tuned_l2_of_exactly_one_is_applied():
    # a bounded wd saturated at its upper bound 1.0 (sigmoid(40) = 1 in float32): with a zero
    # loss gradient and lr 0.5 every weight matrix halves
    torch.manual_seed(0)
    space = stn.HyperSpace().add("wd", 0.5, low=0.0, high=1.0, per_example=False)
    net = stn.convert(_Net(), space)
    with torch.no_grad():
        space.unconstrained.fill_(40.0)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    tuner = stn.STNTuner(net, space, _zero_grad_loss, opt, weight_decay="wd")
    assert space.values()["wd"] == 1.0
    w0 = _snap(net)
    tuner.train_step(make_regression(16))
    assert torch.equal(_snap(net)["fc1.weight"], w0["fc1.weight"] * 0.5)


def test_without_tuned_l2_a_zero_gradient_moves_nothing():
    torch.manual_seed(0)
    space = _space()
    net = stn.convert(_Net(), space, dropout={"d1": "drop0", "d2": "drop1"})
    tuner = stn.STNTuner(net, space, _zero_grad_loss, torch.optim.SGD(net.parameters(), lr=1.0))
    w0 = _snap(net)
    tuner.train_step(make_regression(16))
    assert all(torch.equal(w0[k], v) for k, v in _snap(net).items())


def test_delta_step_is_skipped_when_only_the_response_loss_is_non_finite():
    calls = []

    def second_call_inf(out, y):  # the response pass (b) is the second loss of a delta step
        calls.append(1)
        loss = F.mse_loss(out, y)
        return loss + float("inf") if len(calls) % 2 == 0 else loss

    torch.manual_seed(0)
    space = _space()
    net = stn.convert(_Net(), space, dropout={"d1": "drop0", "d2": "drop1"})
    tuner = stn.STNTuner(
        net, space, second_call_inf, torch.optim.SGD(net.parameters(), lr=0.1), variant="delta"
    )
    w0 = _snap(net)
    loss = tuner.train_step(make_regression(16))
    assert loss == loss and loss < float("inf")  # the general loss (a) is returned, finite
    assert tuner.skipped_steps == 1
    assert all(torch.equal(w0[k], v) for k, v in _snap(net).items())


def _response_step_matches(linearize: bool) -> tuple[stn.STNTuner, torch.nn.Module]:
    """Delta-STN: the response weights move by the SGD step of the loss at λ' with the gates fed
    the centred λ' - λ (same sampled u), first-order in it when ``linearize``."""
    tuner, net, space = _gated(variant="delta", linearize=linearize)
    response = list(stn.response_parameters(net))
    before = [p.detach().clone() for p in response]
    x, y = make_regression(16)
    torch.manual_seed(5)
    u = space.sample(16)
    h = u - space.unconstrained.detach()[None]  # λ = logit(0.3) ≠ 0: λ' - λ ≠ λ' + λ
    if linearize:
        out = _linear_ref(net, space, x, h.detach())
    else:
        with space.context(h_net=h, h_param=space.constrained(u)):
            out = net(x)
    grads = torch.autograd.grad(F.mse_loss(out, y), response)
    torch.manual_seed(5)
    tuner.train_step((x, y))
    for p, p0, g in zip(response, before, grads, strict=True):
        assert torch.allclose(p.detach(), p0 - 0.1 * g, atol=1e-6)
    return tuner, net


def test_delta_response_weights_train_at_the_centred_input():
    _response_step_matches(linearize=False)


def test_delta_linearized_response_step_uses_the_first_order_output():
    tuner, net = _response_step_matches(linearize=True)
    space = tuner.space
    x, y = make_regression(16)
    # the hyper step's validation loss is the first-order one too
    net.eval()
    torch.manual_seed(9)
    u = space.sample(16)
    with torch.no_grad():
        h = space.net_input(u)
    expected = float(F.mse_loss(_linear_ref(net, space, x, h), y).detach())
    torch.manual_seed(9)
    assert tuner.hyper_step((x, y)) == pytest.approx(expected, rel=1e-5)


def test_augment_returning_no_tensor_is_refused_with_its_shape():
    tuner, _, _ = _tuner(augment=lambda x: x.tolist())
    x, y = torch.ones(4, 8), torch.zeros(4, 1)
    with _exact(
        ConfigError,
        "STNTuner: augment returned [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], "
        "[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0... (list); it must return the augmented input "
        "batch, a tensor like its input of shape (4, 8)",
    ):
        tuner.train_step((x, y))


# ---------------------------------------------------------------------- hyper step, evaluate
class _Tempered(torch.nn.Module):
    """A converted net whose output a tuned temperature ``t`` scales: reads the context's
    constrained values (``h_param``), as a user's own regulariser may."""

    def __init__(self, space: stn.HyperSpace) -> None:
        super().__init__()
        self.net = stn.convert(_Net(), space)  # the space is no submodule: not a weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * stn.current_context().param("t")[:, None]


def test_hyper_step_returns_the_validation_loss_at_the_sampled_lambda():
    # L_val at λ' = λ + σε (one row per example): the gates see net_input(u), the user's
    # modules the constrained λ' (here the temperature t), evaluated in eval mode
    torch.manual_seed(0)
    space = stn.HyperSpace().add("h", 0.3, low=0.0, high=1.0).add("t", 1.5, low=0.5, high=3.0)
    model = _Tempered(space)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "hyper_bottleneck" in n:
                p.normal_(0.0, 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tuner = stn.STNTuner(model, space, F.mse_loss, opt)
    x, y = make_regression(32)
    model.eval()
    torch.manual_seed(7)
    u = space.sample(32)
    with torch.no_grad(), space.context(h_net=space.net_input(u), h_param=space.constrained(u)):
        expected = float(F.mse_loss(model(x), y))
    with torch.no_grad(), space.context():
        at_lambda = float(F.mse_loss(model(x), y))
    assert abs(at_lambda - expected) > 1e-3  # the sampled λ' matters here
    model.train()
    torch.manual_seed(7)
    assert tuner.hyper_step((x, y)) == pytest.approx(expected, rel=1e-6)
    assert model.training  # the train/eval mode is restored


def test_schedule_marks_discrete_hyperparameters():
    torch.manual_seed(0)
    space = (
        stn.HyperSpace()
        .add("drop", 0.2, low=0.0, high=0.9)
        .add("k", 3, low=1, high=8, discrete=True)
    )
    net = stn.convert(_Net(), space, dropout={"d1": "drop"})
    tuner = stn.STNTuner(net, space, F.mse_loss, torch.optim.SGD(net.parameters(), lr=0.1))
    assert tuner.schedule().discrete == ["k"]
    assert tuner.scale_history().discrete == []


def test_evaluate_weights_each_batch_by_its_size_and_a_non_tensor_batch_by_one():
    tuner, net, _ = _tuner("stn")

    class Rows(torch.nn.Module):
        """Takes a tensor batch, or a list of rows (one example: batch size 1 to the tuner)."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x if torch.is_tensor(x) else torch.stack(x)[:1])

    tuner.model = Rows()
    x, y = make_regression(8)
    big, one = (x[:3], y[:3]), ([x[3]], y[3:4])
    l_big, l_one = tuner.evaluate([big]), tuner.evaluate([one])
    assert l_big != pytest.approx(l_one)
    assert tuner.evaluate([big, one]) == pytest.approx((3 * l_big + l_one) / 4, rel=1e-6)


def test_validation_data_that_yields_nothing_message():
    tuner, _, _ = _tuner(train_steps=1)

    class Empty:  # re-iterable, never yields
        def __iter__(self):
            return iter(())

    with _exact(ConfigError, "STNTuner: the validation data yields no batch"):
        tuner.step(make_regression(8), Empty())


# ---------------------------------------------------------------------- state
def test_state_records_every_argument_under_its_name():
    tuner, _, _ = _tuner(train_steps=3, val_steps=2, hyper_delay_steps=4, entropy_weight=0.01)
    assert tuner.state_dict()["config"] == {
        "variant": "stn",
        "names": ["drop0", "drop1", "wd"],
        "linearize": False,
        "warmup_steps": 4,
        "train_steps": 3,
        "val_steps": 2,
        "entropy_weight": 0.01,
        "weight_decay": "wd",
        "hyper_optimizer": "Adam",
    }


PREFIX = "STNTuner.load_state_dict: "


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("config", 3, "'config' must be a dict, got 3"),
        ("last_train_loss", "abc", "'last_train_loss' must be a number, got 'abc'"),
        ("last_val_loss", "abc", "'last_val_loss' must be a number, got 'abc'"),
        ("hist_steps", 5, "'hist_steps' must be a list, got 5"),
        ("hist_values", 5, "'hist_values' must be a list, got 5"),
        ("hist_values", [[0.1, 0.1]],
         "hist_values[0] has 2 entries in the state_dict, 3 expected here"),
        ("hist_scales", [[0.1]], "hist_scales[0] has 1 entries in the state_dict, 3 expected here"),
        ("cycle_pos", 1, "'cycle_pos' must be an int in [0, 1), got 1"),
        ("hist_scales", [[0.1] * 3] * 7,
         "'hist_scales' has 7 entries in the state_dict, 1 expected here"),
    ],
)  # fmt: skip
def test_malformed_state_entries_messages(key, value, message):
    tuner, _, _ = _tuner(train_steps=1)
    state = copy.deepcopy(tuner.state_dict())
    state[key] = value
    with _exact(StateError, PREFIX + message):
        tuner.load_state_dict(state)


def test_hyper_optimizer_state_of_another_setup_message():
    tuner, _, space = _tuner(train_steps=1)
    state = copy.deepcopy(tuner.state_dict())
    state["hyper_optimizer"] = torch.optim.SGD([space.rho], lr=0.1).state_dict()
    with _exact(
        StateError,
        PREFIX + "'hyper_optimizer' has 1 param groups in the state_dict, this Adam has 2: the "
        "state comes from another model or optimizer setup",
    ):
        tuner.load_state_dict(state)


def test_state_round_trips_nan_losses_and_refuses_a_non_finite_history():
    # a fresh tuner's losses are NaN (nothing measured yet): they round-trip
    fresh, _, _ = _tuner(train_steps=1)
    state = copy.deepcopy(fresh.state_dict())
    tuner, _, _ = _tuner(train_steps=1)
    tuner.load_state_dict(state)
    assert math.isnan(tuner.last_train_loss) and math.isnan(tuner.last_val_loss)
    # the history becomes a Schedule, which holds finite numbers: a NaN there is corruption
    state["hist_values"][0][1] = float("nan")
    with pytest.raises(StateError, match="hist_values"):
        _tuner(train_steps=1)[0].load_state_dict(state)


def test_state_of_other_arguments_lists_them():
    saved = _tuner(train_steps=1)[0].state_dict()
    tuner, _, _ = _tuner(train_steps=1, val_steps=2)
    with _exact(
        StateError,
        PREFIX + "the state_dict was saved with different arguments (val_steps: saved 1, this "
        "STNTuner has 2); build the STNTuner with the saved arguments to resume from it",
    ):
        tuner.load_state_dict(saved)
    lacking = copy.deepcopy(saved)
    del lacking["config"]["weight_decay"]
    with _exact(StateError, PREFIX + "the state_dict's 'config' entry lacks ['weight_decay']"):
        _tuner(train_steps=1)[0].load_state_dict(lacking)


def test_version_1_state_checks_the_names():
    tuner, _, _ = _tuner(train_steps=1)
    old = copy.deepcopy(tuner.state_dict())
    old["version"] = 1
    del old["config"]
    tuner.load_state_dict(copy.deepcopy(old))  # version 1 loads
    other = copy.deepcopy(old)
    other["names"] = ["drop0", "dropX", "wd"]
    with pytest.raises(StateError, match="names"):
        tuner.load_state_dict(other)
    other = copy.deepcopy(old)
    other["variant"] = "delta"
    with pytest.raises(StateError, match="variant: saved 'delta', this STNTuner has 'stn'"):
        tuner.load_state_dict(other)


def test_state_restores_every_counter():
    tuner, _, _ = _tuner(train_steps=3)
    state = copy.deepcopy(tuner.state_dict())
    counters = {"global_step": 7, "hyper_steps": 5, "skipped_train_steps": 2,
                "skipped_hyper_steps": 1, "cycle_pos": 2}  # fmt: skip
    state.update(counters, last_train_loss=0.25, last_val_loss=0.5)
    fresh, _, _ = _tuner(train_steps=3)
    fresh.load_state_dict(state)
    assert (fresh.global_step, fresh.hyper_steps, fresh.skipped_steps) == (7, 5, 2)
    assert (fresh.skipped_hyper_steps, fresh.last_train_loss, fresh.last_val_loss) == (1, 0.25, 0.5)
    assert {k: fresh.state_dict()[k] for k in counters} == counters
