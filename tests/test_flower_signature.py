"""FedHyperStrategy takes FedHyperServer's arguments from the server itself.

Every keyword argument of the server is one of the strategy's, with the same default, and
reaches the server the strategy builds; a bad value gives the server's own message.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="needs the flower extra")

from flwr.app import Array, ArrayRecord

from autolr import AutoLRError, StateError
from autolr.federated import FedHyperServer
from autolr.integrations.flower import FedHyperStrategy

from .test_flower import LocalGrid, _nodes, _task_identity, _tiny_strategy  # noqa: F401

SERVER_ARGS = {
    name: p
    for name, p in inspect.signature(FedHyperServer).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}

# Values other than the defaults, valid together; between them every server argument differs
# from its default in one of the two (rule="gm" needs the FedAvg step, FedAdam needs rule="g").
NON_DEFAULT = {
    "rule": "gm",
    "global_lr": 0.9,
    "hypergrad_lr": 0.25,
    "global_lr_bounds": (0.5, 4.0),
    "momentum": 0.5,
    "server_optimizer": "avg",
    "adam_betas": (0.8, 0.95),
    "adam_tau": 1e-2,
    "local_lr": 0.05,
    "adapt_local_lr": True,
    "local_hypergrad_lr": 0.02,
    "local_lr_bounds": (0.01, 0.2),
    "normalize": True,
}
ADAM = {**NON_DEFAULT, "rule": "g", "server_optimizer": "adam"}


def test_every_server_argument_is_a_strategy_argument_with_the_servers_default():
    strategy = inspect.signature(FedHyperStrategy).parameters
    for name, p in SERVER_ARGS.items():
        assert strategy[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert strategy[name].default == p.default, name


@pytest.mark.parametrize("kw", [NON_DEFAULT, ADAM], ids=["gm", "adam"])
def test_every_server_argument_reaches_the_server(kw):
    assert set(kw) == set(SERVER_ARGS)  # a new server argument: give it a value here
    assert all(NON_DEFAULT[k] != p.default or ADAM[k] != p.default for k, p in SERVER_ARGS.items())
    strategy = FedHyperStrategy(**kw, fraction_evaluate=0.0)
    w0 = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    strategy.start(LocalGrid(_nodes()), w0, num_rounds=2, timeout=1.0)
    state = strategy.server.state_dict()
    # load_state_dict compares every saved argument with the loading server's.
    FedHyperServer([torch.zeros(2)], **kw).load_state_dict(state)
    for name, value in kw.items():
        default = SERVER_ARGS[name].default
        if value == default:
            continue
        try:
            other = FedHyperServer([torch.zeros(2)], **{**kw, name: default})
        except AutoLRError:
            continue  # the default does not go with the other values (e.g. its LR bounds)
        # Only ``name`` differs, so the refusal shows the server was built with ``value``.
        with pytest.raises(StateError, match="different arguments"):
            other.load_state_dict(state)


@pytest.mark.parametrize(
    "bad",
    [
        {"rule": "adam"},
        {"rule": "gm", "server_optimizer": "adam"},
        {"global_lr": -1.0},
        {"global_lr": 9.0, "global_lr_bounds": (0.1, 1.0)},
        {"hypergrad_lr": -0.1},
        {"momentum": 1.0},
        {"server_optimizer": "sgd"},
        {"adam_betas": (1.5, 0.9)},
        {"adam_tau": 0.0},
        {"local_lr": 0.0},
        {"local_lr_bounds": (0.5, 0.1)},
    ],
    ids=lambda bad: ",".join(bad),
)
def test_a_bad_server_argument_gives_the_servers_message(bad):
    with pytest.raises(AutoLRError) as direct:
        FedHyperServer([torch.zeros(1)], **bad)
    with pytest.raises(type(direct.value)) as via:
        FedHyperStrategy(**bad)
    assert str(via.value) == str(direct.value)


def test_old_names_are_resolved_once_by_the_strategy():
    with pytest.warns(DeprecationWarning, match="FedHyperStrategy: the argument 'hyper_lr'"):
        strategy = _tiny_strategy(hyper_lr=0.4)
    assert strategy._server_kwargs["hypergrad_lr"] == 0.4
    assert set(strategy._server_kwargs) == set(SERVER_ARGS)
