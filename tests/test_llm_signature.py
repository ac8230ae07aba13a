"""LLMSearcher takes LLMClient's arguments from the client itself (names, defaults, checks)."""

from __future__ import annotations

import inspect

import pytest

from autolr import ConfigError, ConfigTypeError
from autolr.searchers import LLMClient, LLMSearcher, Param

CLIENT_ARGS = {
    name: p
    for name, p in inspect.signature(LLMClient).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}
URL = "http://127.0.0.1:9/v1"  # nothing listens; nothing here sends a request
SPACE = [Param("lr", 1e-4, 1.0, log=True)]


def test_every_client_argument_is_a_searcher_argument_with_the_clients_default():
    searcher = inspect.signature(LLMSearcher).parameters
    for name, p in CLIENT_ARGS.items():
        assert searcher[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert searcher[name].default == p.default, name


def test_every_client_argument_reaches_the_client(tmp_path):
    settings = {
        "base_url": URL,
        "api_key": "secret",
        "model": "m",
        "max_retries": 0,
        "backoff": 0.5,
        "max_concurrency": 2,
        "cache_dir": str(tmp_path),
        "cache_mode": "replay",
    }
    assert set(settings) == set(CLIENT_ARGS)  # a new client argument: give it a value here
    assert all(settings[k] != p.default for k, p in CLIENT_ARGS.items())
    client = LLMSearcher(SPACE, seed=0, **settings).client
    seen = {k: getattr(client, k) for k in settings if k != "api_key"}
    assert seen == {k: v for k, v in settings.items() if k != "api_key"}
    assert client._api_key == "secret"


def test_a_ready_client_is_used_as_it_is():
    client = LLMClient(base_url=URL, model="m")
    assert LLMSearcher(SPACE, client=client, model="other").client is client
    with pytest.raises(ConfigTypeError, match=r"client must be an? .*LLMClient"):
        LLMSearcher(SPACE, client="http://x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [{"max_retries": -1}, {"backoff": -0.1}, {"max_concurrency": 0}, {"cache_mode": "sometimes"}],
    ids=lambda bad: next(iter(bad)),
)
def test_a_bad_client_argument_gives_the_clients_message(bad):
    with pytest.raises(ConfigError) as direct:
        LLMClient(base_url=URL, model="m", **bad)
    with pytest.raises(type(direct.value)) as via:
        LLMSearcher(SPACE, base_url=URL, model="m", **bad)
    assert str(via.value) == str(direct.value)


def test_an_unknown_keyword_names_it_and_what_is_allowed():
    with pytest.raises(ConfigTypeError, match=r"\['modle'\].*'model'") as info:
        LLMSearcher(SPACE, base_url=URL, modle="m")
    assert isinstance(info.value, TypeError)  # as Python's own unknown-keyword error
