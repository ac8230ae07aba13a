"""Misuse of autolr.stn is refused early with an autolr error (or one warning), changing nothing;
valid edge cases (frozen weights, tied layers, empty or unbatched inputs, mid-pass resume) work."""

from __future__ import annotations

import copy
import gc
import io
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from autolr import ConfigError, ConfigTypeError, StateError, stn


def _drop_space() -> stn.HyperSpace:
    return stn.HyperSpace().add("drop", 0.1, low=0.0, high=0.9)


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 2))


def _build(variant: str = "stn", **kw) -> tuple[stn.STNTuner, nn.Module, stn.HyperSpace]:
    torch.manual_seed(0)
    space = _drop_space()
    net = stn.convert(_mlp(), space, dropout={"2": "drop"})
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    kw.setdefault("train_steps", 1)
    return (
        stn.STNTuner(net, space, F.cross_entropy, opt, hyper_lr=0.05, variant=variant, **kw),
        net,
        space,
    )


def _batches(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(n)
    ]


def _no_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


# ---------------------------------------------------------------------- 1. resume mid-pass
@pytest.mark.parametrize("loader", [False, True])
@pytest.mark.parametrize("variant", ["stn", "delta"])
@pytest.mark.parametrize("cut", [1, 2, 3])  # mid-pass, and at the end of a pass
def test_resume_continues_at_the_saved_validation_batch(variant: str, cut: int, loader) -> None:
    train, val = _batches(7, 1), _batches(3, 2)
    if loader:  # its iter() draws from the RNG: resuming must not add a draw
        xs, ys = torch.cat([b[0] for b in val]), torch.cat([b[1] for b in val])
        val = DataLoader(TensorDataset(xs, ys), batch_size=8)
    tuner, net, _ = _build(variant)
    for b in train[:cut]:
        tuner.step(b, val)
    assert tuner.state_dict()["val_pos"] == cut
    buf = io.BytesIO()
    torch.save({"model": net.state_dict(), "opt": tuner.optimizer.state_dict(),
                "tuner": tuner.state_dict(), "rng": torch.get_rng_state()}, buf)  # fmt: skip
    ref = [tuner.step(b, val) for b in train[cut:]]
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    tuner2, net2, space2 = _build(variant)
    net2.load_state_dict(ckpt["model"])
    tuner2.optimizer.load_state_dict(ckpt["opt"])
    tuner2.load_state_dict(ckpt["tuner"])
    assert tuner2.state_dict()["val_pos"] == cut  # still pending: saved again as loaded
    torch.set_rng_state(ckpt["rng"])
    assert [tuner2.step(b, val) for b in train[cut:]] == ref
    assert tuner2.schedule() == tuner.schedule()
    assert torch.equal(space2.unconstrained, tuner.space.unconstrained)


def test_state_without_val_pos_loads_and_bad_val_pos_is_refused() -> None:
    train, val = _batches(2, 1), _batches(3, 2)
    tuner, _, _ = _build()
    for b in train:
        tuner.step(b, val)
    old = copy.deepcopy(tuner.state_dict())
    del old["val_pos"]  # saved before the key existed: restarts the pass, as it did then
    fresh, _, _ = _build()
    fresh.load_state_dict(old)
    assert fresh.state_dict()["val_pos"] == 0
    for bad in (-1, "2", 1.5):
        state = {**tuner.state_dict(), "val_pos": bad}
        target, _, _ = _build()
        before = target.state_dict()
        with pytest.raises(StateError, match="'val_pos' must be an int >= 0"):
            target.load_state_dict(state)
        assert target.state_dict()["global_step"] == before["global_step"] == 0


# ---------------------------------------------------------------------- 2. frozen parameters
@pytest.mark.parametrize("variant", ["stn", "delta"])
def test_frozen_parameters_are_left_alone(variant: str) -> None:
    torch.manual_seed(0)
    space = _drop_space()
    net = stn.convert(_mlp(), space, dropout={"2": "drop"})
    net[0].bias.requires_grad_(False)
    net[3].response_bias.requires_grad_(False)  # a frozen response parameter, too
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    tuner = stn.STNTuner(net, space, F.cross_entropy, opt, variant=variant, train_steps=1)
    frozen = (net[0].bias.clone(), net[3].response_bias.clone())
    w0 = net[0].weight.clone()
    x, y = _batches(1, 0)[0]
    for _ in range(3):
        tuner.step((x, y), [(x, y)])
    assert torch.equal(net[0].bias, frozen[0]) and torch.equal(net[3].response_bias, frozen[1])
    assert not torch.equal(net[0].weight, w0) and tuner.skipped_steps == 0


# ---------------------------------------------------------------------- 3. float32 overflow
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init": 1e39, "low": 0.0}, r"init=1e\+39 overflows float32"),
        ({"init": 0.5, "low": 0.0, "high": 1.0, "init_scale": 1e39}, "init_scale=1e.39 overflows"),
        ({"init": 0.0, "low": -1e39, "high": 1e39}, "low=-1e.39 overflows float32"),
        ({"init": 0.0, "low": -1e308, "high": 1e308}, "low=-1e.308 overflows float32"),
        ({"init": 0.0, "low": -3e38, "high": 3e38}, "high - low = 6e.38 overflows float32"),
        ({"init": 1 - 1e-16, "low": -1e10, "high": 1.0}, "too close to a bound"),
        ({"init": 0.5, "low": 0.0, "high": 1.0, "init_scale": 1e-50}, "underflows to 0"),
    ],
)
def test_values_that_overflow_float32_are_refused(kwargs: dict, match: str) -> None:
    space = stn.HyperSpace().add("ok", 0.1, low=0.0, high=0.9)
    before = {k: v.clone() for k, v in space.state_dict().items() if torch.is_tensor(v)}
    init = kwargs.pop("init")
    with pytest.raises(ConfigError, match=match):
        space.add("a", init, **kwargs)
    assert space.names == ["ok"]  # nothing added
    assert all(torch.equal(v, space.state_dict()[k]) for k, v in before.items() if k[0] != "_")
    space.add("a", 0.5, low=0.0, high=1.0)  # still extensible
    big = stn.HyperSpace().add("wd", 3e38, low=0.0).add("u", -3e38)  # large but representable
    assert all(torch.isfinite(torch.tensor(list(big.values().values()))))


# ---------------------------------------------------------------------- 4, 5. convert arguments
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"include": nn.Linear},
            r"include must be a list or tuple, e\.g\. include=\(nn\.Linear,\)",
        ),
        ({"include": ["Linear"]}, "include must hold type entries"),
        ({"exclude": "3"}, r"exclude must be a list or tuple, e\.g\. exclude=\('head',\), got str"),
        ({"exclude": [3]}, "exclude must hold str entries"),
        ({"dropout": ["2"]}, r"dropout must be a dict \{module name: hyperparameter\}"),
        ({"dropout": {"2": 3}}, r"dropout must map module names \(str\)"),
    ],
)
def test_convert_argument_types_are_checked(kwargs: dict, match: str) -> None:
    space, net = _drop_space(), _mlp()
    with pytest.raises(ConfigTypeError, match=match):
        stn.convert(net, space, **kwargs)
    assert [type(m) for m in net] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    space.add("wd", 1e-3, low=0.0)  # the refused call did not freeze the space


def test_convert_exclude_names_whole_modules() -> None:
    net = nn.Sequential(*[nn.Linear(4, 4) for _ in range(11)])
    stn.convert(net, _drop_space(), exclude=["10"])
    assert type(net[10]) is nn.Linear
    assert all(isinstance(net[i], stn.StnLinear) for i in range(10))


def test_refused_convert_changes_neither_space_nor_model() -> None:
    space, net = _drop_space(), _mlp()
    with pytest.raises(ConfigError, match=r"not nn\.Dropout"):
        stn.convert(net, space, dropout={"3": "drop"})
    assert [type(m) for m in net] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    space.add("wd", 1e-3, low=0.0)  # not frozen
    stn.convert(net, space, dropout={"2": "drop"})
    layers = list(net)
    bigger = _drop_space().add("wd", 1e-3, low=0.0).add("c", 0.5)
    with pytest.raises(ConfigError, match="StnLinear has 2 hyper inputs but the space has 3"):
        stn.convert(net, bigger)
    assert list(net) == layers and all(
        m._stn_space is space for m in layers if hasattr(m, "_stn_space")
    )
    bigger.add("d", 0.5)  # not frozen either
    with pytest.raises(ConfigError, match="HyperSpace is empty"):
        stn.convert(_mlp(), stn.HyperSpace())


# ---------------------------------------------------------------------- 6. regulariser bounds
@pytest.mark.parametrize(
    "spec",
    [
        {"init": 1.5, "low": 0.0, "high": 3.0},
        {"init": 0.1, "low": -0.5, "high": 0.9},
        {"init": 0.1, "low": 0.0},
        {"init": 0.1},
        {"init": 0, "low": 0, "high": 1, "discrete": True},
    ],
)
def test_dropout_hyperparameter_outside_unit_interval_is_refused(spec: dict) -> None:
    space = stn.HyperSpace().add("drop", spec.pop("init"), **spec)
    net = _mlp()
    with pytest.raises(
        ConfigError,
        match=r"dropout hyperparameter 'drop' must be continuous with bounds 0 <= low < high <= 1",
    ):
        stn.convert(net, space, dropout={"2": "drop"})
    assert type(net[2]) is nn.Dropout
    # a StnDropout placed by hand is checked by the tuner
    net = nn.Sequential(nn.Linear(4, 8), stn.StnDropout("drop"), nn.Linear(8, 2))
    stn.convert(net, space_ok := stn.HyperSpace().add("drop", 0.1, low=0.0, high=1.0))
    stn.STNTuner(net, space_ok, F.mse_loss, torch.optim.SGD(net.parameters(), lr=0.1))  # high=1 ok
    bad = stn.HyperSpace().add("drop", 0.5, low=0.0, high=2.0)
    with pytest.raises(ConfigError, match="convert: the dropout hyperparameter"):
        stn.convert(nn.Sequential(nn.Linear(4, 8), stn.StnDropout("drop")), bad)


@pytest.mark.parametrize("spec", [{}, {"low": -1.0}, {"high": 1.0}])
def test_weight_decay_hyperparameter_must_be_non_negative(spec: dict) -> None:
    space = _drop_space().add("wd", 1e-3, **spec)
    net = stn.convert(_mlp(), space, dropout={"2": "drop"})
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(
        ConfigError, match=r"weight_decay hyperparameter 'wd' needs a lower bound >= 0"
    ):
        stn.STNTuner(net, space, F.cross_entropy, opt, weight_decay="wd")
    assert not space.centred


# ---------------------------------------------------------------------- 7. autograd disabled
@pytest.mark.parametrize("block", [torch.no_grad, torch.inference_mode])
def test_steps_inside_no_grad_are_refused(block) -> None:
    tuner, net, space = _build()
    x, y = _batches(1, 0)[0]
    w0, h0 = copy.deepcopy(net.state_dict()), space.unconstrained.clone()
    with block():
        for name, call in [("hyper_step", lambda: tuner.hyper_step((x, y))),
                           ("train_step", lambda: tuner.train_step((x, y))),
                           ("step", lambda: tuner.step((x, y), [(x, y)]))]:  # fmt: skip
            with pytest.raises(StateError, match=rf"^STNTuner\.{name}: autograd is disabled"):
                call()
    assert tuner.global_step == tuner.hyper_steps == 0
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in w0.items())
    assert torch.equal(space.unconstrained, h0)
    tuner.step((x, y), [(x, y)])  # fine outside the block


# ---------------------------------------------------------------------- 8. one variant per space
def test_second_tuner_of_another_variant_on_the_same_space_is_refused() -> None:
    t1, net, space = _build("delta")
    opt = t1.optimizer
    with pytest.raises(ConfigError, match="already tuned by a variant='delta' STNTuner"):
        stn.STNTuner(net, space, F.cross_entropy, opt, variant="stn")
    assert space.centred and t1.variant == "delta"
    stn.STNTuner(net, space, F.cross_entropy, opt, variant="delta")  # same variant: fine
    del t1
    gc.collect()
    t3 = stn.STNTuner(net, space, F.cross_entropy, opt, variant="stn")  # the first is gone
    assert not space.centred and t3.variant == "stn"


def test_space_state_of_the_other_parameterisation_is_refused() -> None:
    delta_state = stn.HyperSpace(centred=True).add("drop", 0.2, low=0.0, high=0.9).state_dict()
    space = _drop_space()
    before = space.unconstrained.clone()
    with pytest.raises(StateError, match="centred: saved True, this HyperSpace has False"):
        space.load_state_dict(delta_state)
    assert not space.centred and torch.equal(space.unconstrained, before)
    stn.HyperSpace(centred=True).add("drop", 0.1, low=0.0, high=0.9).load_state_dict(delta_state)
    old = {**delta_state, "_extra_state": {"specs": delta_state["_extra_state"]["specs"]}}
    space.load_state_dict(old)  # saved before "centred" existed: loads, centred unchanged
    assert not space.centred


# ---------------------------------------------------------------------- 9. unused hyperparameter
def test_unused_hyperparameter_warns_once_at_construction() -> None:
    space = _drop_space().add("wd", 1e-3, low=0.0).add("b", 0.1, low=0.0, high=0.5)
    net = stn.convert(_mlp(), space)  # forgot dropout={"2": "drop"}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        stn.STNTuner(net, space, F.cross_entropy, opt, weight_decay="wd")
    assert len(record) == 1 and record[0].category is UserWarning
    assert "['drop', 'b'] are read by no StnDropout" in str(record[0].message)
    assert record[0].filename == __file__  # points at the caller's line


def test_no_warning_when_every_hyperparameter_is_read() -> None:
    space = _drop_space().add("wd", 1e-3, low=0.0).add("b", 0.1, low=0.0, high=0.5)
    net = stn.convert(_mlp(), space, dropout={"2": "drop"})
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    aug = stn.BatchAugment([stn.Brightness("b")])
    _no_warning(
        lambda: stn.STNTuner(net, space, F.cross_entropy, opt, weight_decay="wd", augment=aug)
    )

    # a custom hyperparameter-aware module may read any name: no guess, no warning
    class Reader(stn.StnModule):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * (1 + self._context().param("b")[:, None])

    space2 = _drop_space().add("b", 0.1, low=0.0, high=0.5)
    net2 = stn.convert(
        nn.Sequential(nn.Linear(4, 8), Reader(), nn.Dropout(), nn.Linear(8, 2)),
        space2,
        dropout={"2": "drop"},
    )
    _no_warning(
        lambda: stn.STNTuner(
            net2, space2, F.cross_entropy, torch.optim.SGD(net2.parameters(), lr=0.1)
        )
    )


# ---------------------------------------------------------------------- 10. tied modules
class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.dec = self.enc  # one module used twice
        self.d1 = nn.Dropout()
        self.d2 = self.d1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.d2(torch.relu(self.d1(self.enc(x)))))


def test_convert_keeps_shared_modules_shared() -> None:
    torch.manual_seed(0)
    m = _Tied()
    x = torch.randn(3, 4)
    ref = m.eval()(x)
    space = _drop_space()
    stn.convert(m, space, dropout={"d2": "drop"})
    assert isinstance(m.enc, stn.StnLinear) and m.enc is m.dec
    assert isinstance(m.d1, stn.StnDropout) and m.d1 is m.d2
    assert torch.equal(m(x), ref)
    assert len(list(m.parameters())) == 5  # weight, bias, response weight/bias, V: once
    with pytest.raises(ConfigError, match=r"one shared nn\.Dropout module"):
        stn.convert(_Tied(), _drop_space().add("p", 0.2, low=0.0, high=0.5),
                    dropout={"d1": "drop", "d2": "p"})  # fmt: skip
    kept = _Tied()
    stn.convert(nn.ModuleDict({"t": kept, "x": nn.Linear(2, 2)}), _drop_space(), exclude=["t.dec"])
    assert type(kept.enc) is nn.Linear and kept.enc is kept.dec


# ---------------------------------------------------------------------- 11. empty batch
def test_evaluate_skips_empty_batches() -> None:
    tuner, _, _ = _build()
    x, y = _batches(1, 0)[0]
    assert tuner.evaluate([(x, y), (x[:0], y[:0])]) == tuner.evaluate([(x, y)])
    with pytest.raises(ConfigError, match="yields only empty batches"):
        tuner.evaluate([(x[:0], y[:0])])


# ---------------------------------------------------------------------- 12. space state values
@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("_high", torch.tensor([5.0]), r"_high'\]? holds \[5\.0\] but this space's bounds give"),
        ("_low", torch.tensor([float("nan")]), r"_low'\]? holds \[nan\]"),
        ("unconstrained", torch.tensor([float("nan")]), r"unconstrained'\]? holds non-finite"),
        ("rho", torch.tensor([float("inf")]), r"rho'\]? holds non-finite"),
        ("_origin", torch.tensor([float("nan")]), r"_origin'\]? holds non-finite"),
    ],
)
def test_space_state_with_corrupt_tensors_is_refused(key: str, value, match: str) -> None:
    space = _drop_space()
    state = {**space.state_dict(), key: value}
    before = space.values()
    with pytest.raises(StateError, match=match):
        space.load_state_dict(state)
    assert space.values() == before
    tuner, _, _ = _build()
    tstate = tuner.state_dict()
    tstate["space"] = {**tstate["space"], key: value}
    with pytest.raises(StateError, match=match):
        tuner.load_state_dict(tstate)


# ---------------------------------------------------------------------- 13. unbatched input
def test_stn_linear_keeps_the_unbatched_output_shape() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    x = torch.randn(4)
    ref = layer(x)
    space = _drop_space()
    net = stn.convert(nn.Sequential(layer), space)
    assert net(x).shape == ref.shape == (3,)
    with torch.no_grad():
        net[0].hyper_bottleneck.weight.normal_()  # non-zero gates: the response path is on
    u = space.sample(1)
    with space.context(u):
        out, batched = net(x), net(x[None])
    assert out.shape == (3,) and torch.equal(out, batched[0])


# ---------------------------------------------------------------------- minor
def test_minor_misuse_raises_autolr_errors() -> None:
    with pytest.raises(ConfigError, match="cutout: 3 length values for a batch of 2"):
        stn.cutout(torch.ones(2, 1, 4, 4), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ConfigError, match="cutout: 3 holes values for a batch of 2"):
        stn.cutout(torch.ones(2, 1, 4, 4), 2, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ConfigTypeError, match=r"BatchAugment takes a list of ops"):
        stn.BatchAugment(stn.Brightness("b"))
    with pytest.raises(ConfigTypeError, match="every op must be callable"):
        stn.BatchAugment(["b"])
    space = stn.HyperSpace().add("b", 0.1, low=0.0, high=0.5)
    imgs = torch.zeros(2, 1, 3, 3, dtype=torch.uint8)
    for op in (stn.Brightness("b"), stn.Contrast("b")):
        with (
            space.context(space.sample(2)),
            pytest.raises(ConfigTypeError, match=r"needs floating-point images, got torch\.uint8"),
        ):
            stn.BatchAugment([op])(imgs)
    with pytest.raises(ConfigTypeError, match="adjust_brightness needs floating-point"):
        stn.adjust_brightness(imgs, 1.0)
    with pytest.raises(ConfigError, match=r"batch_size must be an int >= 0, got -1"):
        space.sample(-1)
    assert space.sample(0).shape == (0, 1)


@pytest.mark.parametrize("kw", [{"hyper_lr": 0.1}, {"scale_lr": 0.1}])
def test_learning_rates_with_a_custom_hyper_optimizer_are_refused(kw: dict) -> None:
    space = _drop_space()
    net = stn.convert(_mlp(), space, dropout={"2": "drop"})
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    hyper = torch.optim.SGD([space.unconstrained, space.rho], lr=0.01)
    with pytest.raises(
        ConfigError, match="hyper_lr and scale_lr configure the default hyper optimizer only"
    ):
        stn.STNTuner(net, space, F.cross_entropy, opt, hyper_optimizer=hyper, **kw)
    stn.STNTuner(net, space, F.cross_entropy, opt, hyper_optimizer=hyper)  # defaults: fine
