"""Misuse of the Flower integration is loud and early; faults in a running ServerApp are logged.

Construction and ClientApp helpers raise autolr's ConfigError / ConfigTypeError naming the
argument; resume() and load_state_dict() raise StateError and change nothing; a round that
cannot move the model says why in one WARNING.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="needs the flower extra")

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from autolr import ConfigError, ConfigTypeError, StateError
from autolr.integrations.flower import (
    LOCAL_LR_KEY,
    ROUND_KEY,
    FedHyperStrategy,
    fedhyper_client,
    local_lr,
    strategy_round,
    train_reply,
)

from .test_flower import LocalGrid, _nodes, _reply, _task_identity, _tiny_strategy  # noqa: F401


def _w0(shape=(3,), dtype=np.float32, fill=0.0) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.full(shape, fill, dtype))})


def _ok(msg: Message) -> Message:
    return _reply(msg, np.ones(3, np.float32))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _msg(config: dict | None = None, arrays: ArrayRecord | None = None) -> Message:
    content = {"config": ConfigRecord(config or {})}
    if arrays is not None:
        content["arrays"] = arrays
    return Message(RecordDict(content), dst_node_id=2, message_type="train")


def _state_of(strategy: FedHyperStrategy) -> tuple:
    return (
        strategy.server,
        strategy.round,
        list(strategy._keys),
        [p.clone() for p in strategy._params],
    )


def _assert_unchanged(strategy: FedHyperStrategy, before: tuple) -> None:
    server, round_, keys, params = before
    assert strategy.server is server and strategy.round == round_ and strategy._keys == keys
    assert len(strategy._params) == len(params)
    for p, q in zip(strategy._params, params):
        torch.testing.assert_close(p, q)


# ---------------------------------------------------------------------- F1: empty samples
def test_round_that_samples_no_node_warns_once_naming_the_settings(caplog):
    strategy = _tiny_strategy(fraction_train=0.2, min_train_nodes=0)  # int(3 * 0.2) = 0
    with caplog.at_level(logging.WARNING, logger="flwr"):
        strategy.start(LocalGrid({1: _ok, 2: _ok, 3: _ok}), _w0(), num_rounds=2, timeout=1.0)
    msgs = [m for m in _warnings(caplog) if m.startswith("FedHyperStrategy")]
    assert len(msgs) == 2, msgs  # one per round
    for rnd, m in enumerate(msgs, 1):
        assert f"round {rnd}: sampled no node" in m
        assert "fraction_train=0.2" in m and "3 connected nodes" in m
        assert "min_train_nodes=0" in m
    assert [e.sampled for e in strategy.rounds] == [(), ()]


def test_sampling_some_nodes_or_skipping_training_on_purpose_does_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="flwr"):
        s = _tiny_strategy(fraction_train=0.5, min_train_nodes=0)  # int(3 * 0.5) = 1 node
        s.start(LocalGrid({1: _ok, 2: _ok, 3: _ok}), _w0(), num_rounds=1, timeout=1.0)
        assert len(s.rounds[0].aggregated) == 1
        off = _tiny_strategy(fraction_train=0.0)  # FedAvg warns once, at construction
        off.start(LocalGrid({1: _ok, 2: _ok}), _w0(), num_rounds=2, timeout=1.0)
    assert not [m for m in _warnings(caplog) if "FedHyperStrategy" in m]


# ---------------------------------------------------------------------- F2: checkpoint path
def test_checkpoint_path_is_checked_at_construction(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        _tiny_strategy(checkpoint=tmp_path / "missing" / "fedhyper.pt")
    with pytest.raises(ConfigError, match="must be a file path, got the folder"):
        _tiny_strategy(checkpoint=tmp_path)
    with pytest.raises(ConfigTypeError, match=r"checkpoint must be a str or os\.PathLike"):
        _tiny_strategy(checkpoint=5)
    ok = _tiny_strategy(checkpoint=str(tmp_path / "fedhyper.pt"))  # valid: a new file
    assert ok.checkpoint == tmp_path / "fedhyper.pt"


@pytest.mark.parametrize("content", [b"truncated", b"", b"PK\x03\x04junk"])
def test_unreadable_checkpoint_raises_state_error_and_changes_nothing(tmp_path, content):
    path = tmp_path / "fedhyper.pt"
    path.write_bytes(content)
    strategy = _tiny_strategy(checkpoint=path)
    before = _state_of(strategy)
    with pytest.raises(StateError, match=r"cannot read the checkpoint .*Delete it"):
        strategy.resume(_w0())
    _assert_unchanged(strategy, before)


# ---------------------------------------------------------------------- F3: another model
def _checkpoint_of(tmp_path, arrays: ArrayRecord):
    path = tmp_path / "fedhyper.pt"
    first = _tiny_strategy(checkpoint=path)
    first.start(LocalGrid({1: _ok, 2: _ok}), arrays, num_rounds=1, timeout=1.0)
    return path


@pytest.mark.parametrize(
    ("other", "match"),
    [
        (
            ArrayRecord({"fc.weight": Array(np.zeros((10, 5), np.float32))}),
            r"holds a model with arrays \['w'\], initial_arrays has \['fc.weight'\]",
        ),
        (_w0(shape=(4,)), r"'w' of shape \(3,\) and dtype float32, initial_arrays has shape \(4,"),
        (_w0(dtype=np.float64), r"float32, initial_arrays has shape \(3,\) and dtype float64"),
    ],
    ids=["keys", "shape", "dtype"],
)
def test_resume_refuses_a_checkpoint_of_another_model(tmp_path, other, match):
    path = _checkpoint_of(tmp_path, _w0())
    strategy = _tiny_strategy(checkpoint=path)
    before = _state_of(strategy)
    with pytest.raises(StateError, match=match):
        strategy.resume(other)
    _assert_unchanged(strategy, before)
    arrays, done = _tiny_strategy(checkpoint=path).resume(_w0())  # the same model resumes
    assert done == 1 and arrays["w"].numpy().tolist() == [1.0, 1.0, 1.0]


def test_resume_checks_initial_arrays_type(tmp_path):
    with pytest.raises(ConfigTypeError, match="initial_arrays must be a flwr"):
        _tiny_strategy().resume({"w": np.zeros(3)})


# ---------------------------------------------------------------------- F4: non-finite model
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_initial_model_is_a_config_error_not_blamed_on_clients(bad):
    strategy = _tiny_strategy()
    w = np.zeros(3, np.float32)
    w[1] = bad
    with pytest.raises(ConfigError, match="'w' of the model holds NaN/inf"):
        strategy.start(LocalGrid({1: _ok, 2: _ok}), ArrayRecord({"w": Array(w)}), num_rounds=1)
    assert strategy.rounds == [] and strategy.server is None


def test_loading_bad_arrays_into_a_built_strategy_changes_nothing():
    strategy = _tiny_strategy()
    two = ArrayRecord({"a": Array(np.zeros(2, np.float32)), "b": Array(np.zeros(2, np.float32))})
    grid = LocalGrid({1: lambda m: None, 2: lambda m: None})  # min_available_nodes=2
    strategy.configure_train(1, two, ConfigRecord(), grid)
    before = _state_of(strategy)
    nan_b = ArrayRecord({"a": Array(np.ones(2, np.float32)), "b": Array(np.full(2, np.nan, "f4"))})
    with pytest.raises(ConfigError, match="'b' of the model holds NaN/inf"):
        strategy.configure_train(2, nan_b, ConfigRecord(), grid)
    bad_shape = ArrayRecord({"a": Array(np.ones(2, np.float32)), "b": Array(np.ones(3, "f4"))})
    with pytest.raises(ConfigError, match=r"'b' has shape \(3,\), expected \(2,\)"):
        strategy.configure_train(2, bad_shape, ConfigRecord(), grid)
    _assert_unchanged(strategy, before)  # 'a' was not half-loaded


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (torch.tensor([0.0, float("nan"), 0.0]), r"arrays\[0\] \('w'\) holds NaN/inf"),
        (torch.tensor([0.0, float("-inf"), 0.0]), r"arrays\[0\] \('w'\) holds NaN/inf"),
        (torch.zeros(3, dtype=torch.bfloat16), r"dtype torch.bfloat16, expected float16/32/64"),
        (torch.zeros(3, dtype=torch.int64), r"dtype torch.int64, expected float16/32/64"),
    ],
    ids=["nan", "inf", "bf16", "int"],
)
def test_load_state_dict_refuses_bad_model_arrays_and_changes_nothing(array, match):
    done = _tiny_strategy()
    done.start(LocalGrid({1: _ok, 2: _ok}), _w0(), num_rounds=1, timeout=1.0)
    state = done.state_dict()
    state["arrays"] = [array]
    target = _tiny_strategy()
    target.start(LocalGrid({1: _ok, 2: _ok}), _w0(fill=5.0), num_rounds=1, timeout=1.0)
    before = _state_of(target)
    with pytest.raises(StateError, match=match):
        target.load_state_dict(state)
    _assert_unchanged(target, before)


# ---------------------------------------------------------------------- F5: train_reply params
def test_train_reply_refuses_a_state_dict_single_tensor_and_non_tensors():
    model = torch.nn.Linear(3, 1)
    msg = _msg(arrays=ArrayRecord(model.state_dict()))
    with pytest.raises(ConfigTypeError, match=r"got a mapping .*state_dict\.values"):
        train_reply(msg, model.state_dict(), 8)
    with pytest.raises(ConfigTypeError, match="got one tensor"):
        train_reply(msg, model.weight, 8)
    with pytest.raises(ConfigTypeError, match=r"params\[0\] must be a torch.Tensor, got str"):
        train_reply(msg, list(model.state_dict()), 8)
    with pytest.raises(ConfigTypeError, match=r"params\[1\] must be a torch.Tensor, got ndarray"):
        train_reply(msg, [model.weight, np.zeros(1, np.float32)], 8)
    with pytest.raises(ConfigTypeError, match="params must be an iterable of tensors, got int"):
        train_reply(msg, 3, 8)
    with pytest.raises(ConfigTypeError, match="msg must be a flwr"):
        train_reply({"arrays": None}, [model.weight, model.bias], 8)
    # valid: parameters() and state_dict().values() (unchanged)
    for params in (model.parameters(), model.state_dict().values()):
        reply = train_reply(msg, params, 8)
        np.testing.assert_array_equal(
            reply.content["arrays"]["weight"].numpy(), model.weight.detach().numpy()
        )


def test_train_reply_sends_bf16_as_float32_and_refuses_dtypes_an_arrayrecord_cannot_carry():
    model = torch.nn.Linear(3, 1)
    msg = _msg(arrays=ArrayRecord(model.state_dict()))
    bf16 = [p.detach().to(torch.bfloat16) for p in model.parameters()]
    reply = train_reply(msg, bf16, 8)
    got = reply.content["arrays"]["weight"].numpy()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, bf16[0].float().numpy())  # exact
    ints = train_reply(msg, [torch.ones(1, 3, dtype=torch.int64), torch.ones(1)], 8)
    assert ints.content["arrays"]["weight"].numpy().dtype == np.int64  # unchanged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "ComplexHalf support is experimental"
        chalf = torch.zeros(1, 3, dtype=torch.complex32)
    with pytest.raises(ConfigTypeError, match=r"params\[0\] has dtype torch.complex32"):
        train_reply(msg, [chalf, torch.ones(1)], 8)


# ---------------------------------------------------------------------- F6: zero weights
def test_round_with_all_weights_zero_warns_why_it_was_skipped(caplog):
    def zero(msg):
        return _reply(msg, np.ones(3, np.float32), 0)

    strategy = _tiny_strategy()
    with caplog.at_level(logging.WARNING, logger="flwr"):
        result = strategy.start(LocalGrid({1: zero, 2: zero}), _w0(), num_rounds=1, timeout=1.0)
    msgs = _warnings(caplog)
    fh = [m for m in msgs if "FedHyperStrategy" in m]
    assert len(fh) == 1, msgs
    assert "round skipped, model and LRs unchanged: all weights zero" in fh[0]
    assert "'num-examples' is 0" in fh[0]
    assert not [m for m in msgs if "division by zero" in m]
    assert strategy.rounds[0].report.skipped
    assert result.train_metrics_clientapp[1]["fedhyper-aggregated"] == 0


def test_round_with_only_non_finite_updates_says_it_was_skipped(caplog):
    def nan(msg):
        return _reply(msg, np.full(3, np.nan, np.float32))

    strategy = _tiny_strategy()
    with caplog.at_level(logging.WARNING, logger="flwr"):
        strategy.start(LocalGrid({1: nan, 2: _ok}), _w0(), num_rounds=1, timeout=1.0)
        assert not [m for m in _warnings(caplog) if "round skipped" in m]  # one was usable
        strategy.start(LocalGrid({1: nan, 2: nan}), _w0(), num_rounds=1, timeout=1.0)
    fh = [m for m in _warnings(caplog) if "round skipped" in m]
    assert len(fh) == 1 and fh[0].endswith("every update was non-finite")


# ---------------------------------------------------------------------- F7: bool arguments
@pytest.mark.parametrize("name", ["weighted", "send_previous_update"])
@pytest.mark.parametrize("value", ["no", "false", 0, None])
def test_strategy_bool_arguments_must_be_bools(name, value):
    with pytest.raises(ConfigTypeError, match=f"{name} must be a bool"):
        _tiny_strategy(**{name: value})
    assert getattr(_tiny_strategy(**{name: False}), name) is False


def test_fedhyper_client_cl_must_be_a_bool():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    msg = _msg({LOCAL_LR_KEY: 0.1})
    with pytest.raises(ConfigTypeError, match="cl must be a bool"):
        fedhyper_client(msg, opt, cl="no")
    assert fedhyper_client(msg, opt, cl=False).hypergrad_lr == 0.0


# ---------------------------------------------------------------------- F8: raw errors
def test_fedhyper_client_unknown_argument_is_a_config_type_error():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigTypeError, match=r"unexpected keyword argument\(s\) \['grace'\]"):
        fedhyper_client(_msg({LOCAL_LR_KEY: 0.1}), opt, grace=1)
    client = fedhyper_client(_msg({LOCAL_LR_KEY: 0.1}), opt, global_coef=0.2, max_growth=1.5)
    assert (client.global_coef, client.max_growth) == (0.2, 1.5)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("abc", ConfigTypeError),
        ("0.1", ConfigTypeError),
        (float("nan"), ConfigError),
        (float("inf"), ConfigError),
        (-1.0, ConfigError),
        (0.0, ConfigError),
    ],
)
def test_local_lr_refuses_bad_values_naming_the_key(value, error):
    with pytest.raises(error, match="'fedhyper-local-lr' in the message's 'config' ConfigRecord"):
        local_lr(_msg({LOCAL_LR_KEY: value}))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(error, match="'fedhyper-local-lr'"):
        fedhyper_client(_msg({LOCAL_LR_KEY: value}), opt)


def test_local_lr_default_is_checked_and_valid_values_pass():
    with pytest.raises(ConfigTypeError, match="default must be a finite float > 0, got 'x'"):
        local_lr(_msg(), "x")
    with pytest.raises(ConfigError, match="default must be a finite float > 0"):
        local_lr(_msg(), -0.1)
    assert local_lr(_msg({LOCAL_LR_KEY: 0.25})) == 0.25
    assert local_lr(_msg({LOCAL_LR_KEY: 1})) == 1.0
    assert local_lr(_msg(), 0.05) == 0.05


@pytest.mark.parametrize(("value", "error"), [("abc", ConfigTypeError), (-1, ConfigError)])
def test_strategy_round_refuses_bad_values_naming_the_key(value, error):
    with pytest.raises(error, match="'fedhyper-round' in the message's 'config' ConfigRecord"):
        strategy_round(_msg({ROUND_KEY: value}))
    assert strategy_round(_msg({ROUND_KEY: 3})) == 3
    assert strategy_round(_msg()) is None
