"""Fast tests of the LLM client and searcher against the real HTTP protocol (issue 18).

Mutation testing of ``searchers/_llm_client.py`` and ``searchers/_llm.py`` left mutants the
loop-level tests of ``test_llm_searcher.py`` cannot see. These pin the pieces one by one,
each against an independent oracle: a raw loopback HTTP server (:class:`_Raw`) whose every
reply (status, headers, body) the test writes by hand and whose requests it reads back
(payload, ``Authorization``), hand-computed hashes, delays and expected improvements, and
exact error messages. Every test takes well under a second.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("openai")

from autolr import ConfigError, ConfigTypeError, StateError
from autolr.searchers import GPSearcher, Param, RandomSearcher
from autolr.searchers import _llm_client as client_module
from autolr.searchers._base import _derive_seed
from autolr.searchers._llm import (
    SYSTEM_PROMPT,
    LLMSearcher,
    _Fallback,
    _fmt,
    _fmt_bound,
    _number,
    expected_improvement,
    extract_json,
)
from autolr.searchers._llm_client import (
    ChatRequest,
    LLMClient,
    LLMError,
    Usage,
    client_or_new,
    retry_after_seconds,
)

from .llm_server import LLMServer, closed_port_url


def completion(*contents: str | None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Chat Completions reply body with these choices' contents."""
    body: dict[str, Any] = {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
            for i, c in enumerate(contents)
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


class _Raw:
    """A loopback HTTP server that answers each request with the next queued reply.

    A reply is ``(status, headers, body, delay)``; when the queue is empty it answers 200
    with one choice ``"ok"``. Requests are recorded as ``(headers, parsed JSON body)``.
    """

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict[str, str], Any, float]] = []
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.times: list[float] = []
        raw = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n))
                raw.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                raw.times.append(time.monotonic())
                status, headers, payload, delay = (
                    raw.replies.pop(0) if raw.replies else (200, {}, completion("ok"), 0.0)
                )
                time.sleep(delay)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def reply(self, status: int = 200, body: Any = None, headers=None, delay=0.0) -> None:
        self.replies.append(
            (status, headers or {}, completion("ok") if body is None else body, delay)
        )


@pytest.fixture(scope="module")
def raw_server() -> Iterator[_Raw]:
    srv = _Raw()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def raw(raw_server: _Raw) -> Iterator[_Raw]:
    raw_server.replies.clear()
    raw_server.requests.clear()
    raw_server.times.clear()
    yield raw_server
    raw_server.replies.clear()


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in (*client_module.ENV_BASE_URL, *client_module.ENV_API_KEY, *client_module.ENV_MODEL):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


REQ = ChatRequest((("system", "be brief"), ("user", "hi")))


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


# ------------------------------------------------------------------- request / usage
def test_request_payload_defaults_and_key_by_hand() -> None:
    assert REQ.payload("m") == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "n": 1,
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 512,
    }
    text = (
        '{"max_tokens":512,"messages":[{"content":"be brief","role":"system"},'
        '{"content":"hi","role":"user"}],"model":"m","n":1,"temperature":0.7,"top_p":0.95}'
    )
    assert REQ.key("m") == hashlib.sha256(text.encode()).hexdigest()
    seeded = ChatRequest((("user", "hi"),), n=2, temperature=0.1, top_p=0.5, max_tokens=9, seed=0)
    body = seeded.payload("x")
    assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"]) == (2, 0.1, 0.5, 9)
    assert body["seed"] == 0  # seed 0 is sent (only None is left out)
    assert seeded.key("x") != ChatRequest((("user", "hi"),), 2, 0.1, 0.5, 9, seed=1).key("x")


def test_usage_defaults_total_and_dict() -> None:
    u = Usage()
    assert u.as_dict() == {
        "requests": 0,
        "attempts": 0,
        "completions": 0,
        "cache_hits": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "seconds": 0.0,
        "failures": 0,
        "total_tokens": 0,
    }
    u = Usage(prompt_tokens=3, completion_tokens=4)
    assert u.total_tokens == 7 and u.as_dict()["total_tokens"] == 7


# ----------------------------------------------------------------------- Retry-After
def test_retry_after_every_form_and_fallback() -> None:
    assert retry_after_seconds(None) is None and retry_after_seconds({}) is None
    assert retry_after_seconds({"X-Other": "1"}) is None
    assert retry_after_seconds({"RETRY-AFTER-MS": "250"}) == 0.25  # any case
    assert retry_after_seconds({"retry-after-ms": "-5"}) == 0.0
    assert retry_after_seconds({"retry-after": "-5"}) == 0.0
    # A bad retry-after-ms falls back to retry-after.
    assert retry_after_seconds({"retry-after-ms": "soon", "Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "soon"}) is None
    now = 1796529600.0  # 2026-12-06 04:00:00 UTC
    assert retry_after_seconds({"Retry-After": "Sun, 06 Dec 2026 03:59:00 GMT"}, now=now) == 0.0
    assert retry_after_seconds({"Retry-After": "tomorrow-ish"}, now=now) is None
    # Without `now`, the wall clock: a date one hour ahead is about 3600 s away.
    ahead = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3600))
    assert 3590 < retry_after_seconds({"Retry-After": ahead}) <= 3600


# ---------------------------------------------------------------------- construction
def test_client_arguments_and_environment(no_env: pytest.MonkeyPatch, raw: _Raw) -> None:
    with pytest.raises(ConfigError) as e:
        LLMClient(base_url=raw.url)
    assert str(e.value) == (
        "model must be a non-empty str, got None; pass model= or set $AUTOLR_LLM_MODEL "
        "(or $OPENAI_MODEL)"
    )
    with pytest.raises(ConfigError, match=r"^model must be a non-empty str, got 3;"):
        LLMClient(base_url=raw.url, model=3)
    for kw, msg in (
        ({"max_retries": -1}, "max_retries must be an int >= 0, got -1"),
        ({"backoff": -1.0}, "backoff must be a finite float >= 0, got -1.0"),
        ({"max_concurrency": 0}, "max_concurrency must be an int >= 1, got 0"),
        ({"cache_mode": "x"}, "cache_mode must be one of 'off', 'readwrite', 'replay', got 'x'"),
        ({"cache_mode": "replay"}, "cache_mode='replay' needs a cache_dir, got None"),
        ({"cache_mode": "readwrite"}, "cache_mode='readwrite' needs a cache_dir, got None"),
    ):
        with pytest.raises(ConfigError) as e:
            LLMClient(base_url=raw.url, model="m", **kw)
        assert str(e.value) == msg
    c = LLMClient(base_url=raw.url, model="m", max_retries=0, backoff=0.0)
    assert (c.max_retries, c.backoff, c.max_concurrency) == (0, 0.0, 4)
    assert (c.cache_mode, c.cache_dir) == ("off", None)
    c = LLMClient(base_url=raw.url, model="m")
    assert (c.max_retries, c.backoff) == (2, 0.25)
    # OpenAI's API (no base_url) needs a key; replay mode needs none.
    with pytest.raises(ConfigError) as e:
        LLMClient(model="m")
    assert str(e.value) == (
        "api_key must be given for OpenAI's API, got None; pass api_key= or set "
        "$AUTOLR_LLM_API_KEY (or $OPENAI_API_KEY), or point base_url at a local server"
    )
    # Environment, AUTOLR_* before OPENAI_*, empty values skipped.
    no_env.setenv("OPENAI_MODEL", "open-model")
    no_env.setenv("AUTOLR_LLM_MODEL", "")
    no_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    no_env.setenv("AUTOLR_LLM_BASE_URL", raw.url)
    no_env.setenv("OPENAI_API_KEY", "k-open")
    c = LLMClient()
    assert (c.model, c.base_url, c._api_key) == ("open-model", raw.url, "k-open")
    no_env.setenv("AUTOLR_LLM_MODEL", "autolr-model")
    no_env.setenv("AUTOLR_LLM_API_KEY", "k-autolr")
    c = LLMClient()
    assert (c.model, c._api_key) == ("autolr-model", "k-autolr")
    assert c.complete(REQ, deadline=soon()) == ["ok"]
    headers, body = raw.requests[-1]
    assert headers["authorization"] == "Bearer k-autolr" and body["model"] == "autolr-model"
    assert repr(c) == f"LLMClient(base_url={raw.url!r}, model='autolr-model', cache_mode='off')"


def test_local_server_key_is_empty_and_sdk_retries_are_off(no_env, raw: _Raw) -> None:
    c = LLMClient(base_url=raw.url, model="m", max_retries=0)
    assert c._api_key == "EMPTY"
    assert c._openai is not None and c._openai.max_retries == 0  # built at construction
    raw.reply(503, {"error": {"message": "down"}})
    with pytest.raises(LLMError) as e:
        c.complete(REQ, deadline=soon())
    assert len(raw.requests) == 1  # one attempt: neither we nor the SDK retried
    assert raw.requests[0][0]["authorization"] == "Bearer EMPTY"
    assert (e.value.kind, e.value.status) == ("http_5xx", 503)
    assert str(e.value).startswith("HTTP 503: ")


def test_replay_mode_needs_no_key_no_sdk(no_env, tmp_path) -> None:
    c = LLMClient(model="m", cache_dir=tmp_path, cache_mode="replay")
    assert c._openai is None and c._api_key is None and c.base_url is None
    (out,) = c.complete_many([REQ], deadline=soon())
    assert isinstance(out, LLMError) and out.kind == "cache_miss"
    assert str(out) == "request not in the replay cache"
    assert (c.usage.requests, c.usage.failures, c.usage.attempts) == (1, 1, 0)


def test_missing_openai_is_reported(no_env, monkeypatch) -> None:
    real = client_module.importlib.util.find_spec
    monkeypatch.setattr(
        client_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "openai" else real(name, *a),
    )
    with pytest.raises(ImportError) as e:
        LLMClient(base_url="http://127.0.0.1:9/v1", model="m")
    assert str(e.value) == (
        "'openai' is required for LLMClient; install it with "
        'pip install "autolr[llm]" (or use cache_mode="replay")'
    )


def test_client_or_new() -> None:
    c = LLMClient(base_url="http://127.0.0.1:9/v1", model="m")
    assert client_or_new(c, model="other") is c
    d = client_or_new(None, base_url="http://127.0.0.1:9/v1", model="n", max_retries=5)
    assert isinstance(d, LLMClient) and (d.model, d.max_retries) == ("n", 5)
    with pytest.raises(ConfigTypeError) as e:
        client_or_new("http://x")
    assert str(e.value) == "client must be an autolr.searchers.LLMClient, got str"


# --------------------------------------------------------------------- calls, retries
def test_reply_texts_and_token_accounting(raw: _Raw) -> None:
    c = LLMClient(base_url=raw.url, model="m")
    raw.reply(body=completion("a", None, "", usage={"prompt_tokens": 7, "completion_tokens": 5}))
    assert c.complete(ChatRequest((("user", "x"),), n=3), deadline=soon()) == ["a", "", ""]
    raw.reply(body=completion("b"))  # no usage reported: nothing added
    raw.reply(body=completion("c", usage={"prompt_tokens": 2, "completion_tokens": 1}))
    assert c.complete_many([REQ], deadline=soon()) == [["b"]]
    assert c.complete_many([REQ], deadline=soon()) == [["c"]]
    u = c.usage
    assert (u.requests, u.attempts, u.completions, u.failures, u.cache_hits) == (3, 3, 5, 0, 0)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (9, 6, 15)
    assert u.seconds > 0.0


def test_reply_without_choices_is_a_protocol_error(raw: _Raw) -> None:
    c = LLMClient(base_url=raw.url, model="m", max_retries=2)
    raw.reply(body=completion())
    (out,) = c.complete_many([REQ], deadline=soon())
    assert isinstance(out, LLMError) and out.kind == "protocol"
    assert str(out) == "reply has no choices" and len(raw.requests) == 1  # not retried
    assert (c.usage.failures, c.usage.completions) == (1, 0)


def test_reply_that_is_not_a_completion_is_a_protocol_error(raw: _Raw) -> None:
    c = LLMClient(base_url=raw.url, model="m", max_retries=2)
    for choices in ([1, 2], 5):
        raw.reply(body={**completion("x"), "choices": choices})
        (out,) = c.complete_many([REQ], deadline=soon())
        assert isinstance(out, LLMError) and out.kind == "protocol"
        assert str(out).startswith("reply is not a chat completion: ")


def test_a_reply_that_is_not_json_is_a_protocol_error(raw: _Raw) -> None:
    c = LLMClient(base_url=raw.url, model="m", max_retries=2)
    raw.reply(body=b"not json")
    (out,) = c.complete_many([REQ], deadline=soon())
    assert isinstance(out, LLMError) and out.kind == "protocol"
    assert str(out).startswith("JSONDecodeError: ") and len(raw.requests) == 1


def test_close_cancels_queued_requests(raw: _Raw) -> None:
    c = LLMClient(base_url=raw.url, model="m", max_concurrency=1)
    pool = c._executor()
    started = threading.Event()
    running = pool.submit(lambda: (started.set(), time.sleep(0.3)))
    queued = pool.submit(lambda: 1)
    assert started.wait(5.0)  # the first one runs, the second waits in the queue
    c.close()
    assert queued.cancelled() and not running.cancelled()


def test_4xx_is_not_retried_and_5xx_429_are(raw: _Raw) -> None:
    c = LLMClient(base_url=raw.url, model="m", max_retries=2, backoff=0.0)
    raw.reply(404, {"error": {"message": "nope"}})
    with pytest.raises(LLMError) as e:
        c.complete(REQ, deadline=soon())
    assert (e.value.kind, e.value.status, len(raw.requests)) == ("http_4xx", 404, 1)
    assert str(e.value).startswith("HTTP 404: ")
    raw.requests.clear()
    for _ in range(3):
        raw.reply(429, {"error": {"message": "slow down"}})
    with pytest.raises(LLMError) as e:
        c.complete(REQ, deadline=soon())
    assert (e.value.kind, e.value.status, len(raw.requests)) == ("rate_limit", 429, 3)
    assert str(e.value).startswith("HTTP 429: ")
    assert c.usage.attempts == 4 and c.usage.requests == 2 and c.usage.failures == 2
    raw.requests.clear()
    raw.reply(500, {"error": {"message": "x"}})
    raw.reply(502, {"error": {"message": "x"}})
    assert c.complete(REQ, deadline=soon()) == ["ok"] and len(raw.requests) == 3


def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Records the client's backoff sleeps instead of sleeping (the server thread's zero
    sleeps are recorded too; callers drop them)."""
    calls: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", calls.append)
    return calls


def test_backoff_doubles_and_a_longer_retry_after_wins(raw: _Raw, monkeypatch) -> None:
    calls = sleeps(monkeypatch)
    c = LLMClient(base_url=raw.url, model="m", max_retries=3, backoff=0.1)
    raw.reply(503, {"error": {"message": "x"}})
    raw.reply(503, {"error": {"message": "x"}})
    raw.reply(503, {"error": {"message": "x"}}, headers={"Retry-After": "0.35"})
    assert c.complete(REQ, deadline=soon()) == ["ok"]
    # 0.1, 0.2, then max(0.4, 0.35) = 0.4: the doubled backoff beats a shorter Retry-After
    assert [s for s in calls if s] == pytest.approx([0.1, 0.2, 0.4], rel=1e-12)
    calls.clear()
    raw.reply(503, {"error": {"message": "x"}}, headers={"retry-after-ms": "300"})
    raw.reply(429, {"error": {"message": "x"}}, headers={"Retry-After": "0.5"})
    assert c.complete(REQ, deadline=soon()) == ["ok"]
    assert [s for s in calls if s] == pytest.approx([0.3, 0.5], rel=1e-12)  # longer ones win


def test_a_retry_that_would_end_past_the_deadline_is_not_made(raw: _Raw, monkeypatch) -> None:
    calls = sleeps(monkeypatch)
    c = LLMClient(base_url=raw.url, model="m", max_retries=3, backoff=0.5)
    raw.reply(503, {"error": {"message": "x"}})
    with pytest.raises(LLMError) as e:
        c.complete(REQ, deadline=time.monotonic() + 0.45)  # a 0.5 s backoff would overrun
    assert e.value.kind == "http_5xx" and len(raw.requests) == 1
    assert [s for s in calls if s] == []


def test_backoff_is_capped_at_30_seconds(raw: _Raw, monkeypatch) -> None:
    # A 100 s backoff is cut to 30 s: with 31 s left the retry is made (the sleep recorded,
    # not slept); with 29 s left it is not.
    calls = sleeps(monkeypatch)
    c = LLMClient(base_url=raw.url, model="m", max_retries=1, backoff=100.0)
    raw.reply(503, {"error": {"message": "x"}})
    assert c._call(REQ, time.monotonic() + 31.0)[0] == ["ok"]
    assert [s for s in calls if s] == [30.0]
    raw.reply(503, {"error": {"message": "x"}})
    with pytest.raises(LLMError):
        c._call(REQ, time.monotonic() + 29.0)
    assert [s for s in calls if s] == [30.0]


def test_deadline_timeout_and_connection_kinds(raw: _Raw) -> None:
    c = LLMClient(base_url=raw.url, model="m", max_retries=0)
    with pytest.raises(LLMError) as e:
        c._call(REQ, time.monotonic() - 0.01)
    assert (e.value.kind, str(e.value)) == ("deadline", "no time left for another attempt")
    assert c.usage.attempts == 0 and raw.requests == []
    raw.reply(delay=1.0)
    with pytest.raises(LLMError) as e:
        c._call(REQ, time.monotonic() + 0.3)  # the request's own timeout is what is left
    assert e.value.kind == "timeout" and str(e.value).startswith("request timed out: ")
    dead = LLMClient(base_url=closed_port_url(), model="m", max_retries=0)
    with pytest.raises(LLMError) as e:
        dead._call(REQ, soon())
    assert e.value.kind == "connection" and str(e.value).startswith("connection failed: ")
    assert e.value.status is None


def test_requests_past_the_deadline_are_abandoned_as_timeouts(raw: _Raw) -> None:
    c = LLMClient(base_url=raw.url, model="m", max_concurrency=2)
    raw.reply(delay=0.0)
    raw.reply(delay=3.0)
    t0 = time.monotonic()
    out = c.complete_many([REQ, ChatRequest((("user", "b"),))], deadline=t0 + 1.0)
    assert time.monotonic() - t0 < 2.5
    assert out[0] == ["ok"] or out[1] == ["ok"]  # the quick one, whichever was sent first
    late = [r for r in out if isinstance(r, LLMError)]
    assert len(late) == 1 and late[0].kind == "timeout"
    assert str(late[0]) == "no reply before the deadline"
    assert (c.usage.requests, c.usage.failures) == (2, 1)
    c.close()


def test_pool_size_close_and_reuse(raw: _Raw) -> None:
    c = LLMClient(base_url=raw.url, model="m", max_concurrency=3)
    pool = c._executor()
    assert pool is c._executor() and pool._max_workers == 3
    c.complete(REQ, deadline=soon())
    names = {t.name for t in threading.enumerate()}
    assert any(n.startswith("autolr-llm") for n in names)
    c.close()
    assert c._pool is None and pool._shutdown
    c.close()  # twice is fine
    assert c.complete(REQ, deadline=soon()) == ["ok"]  # a fresh pool
    c.close()


def test_pickled_client_works_and_the_original_keeps_its_connections(raw: _Raw) -> None:
    c = LLMClient(base_url=raw.url, model="m")
    c.complete(REQ, deadline=soon())
    sdk, pool = c._openai, c._pool
    d = pickle.loads(pickle.dumps(c))
    assert (d._openai, d._pool) == (None, None) and d.model == "m"
    assert c._openai is sdk and c._pool is pool and c._lock is not None
    assert d.complete(REQ, deadline=soon()) == ["ok"] and c.complete(REQ, deadline=soon()) == ["ok"]
    assert d.usage.requests == 2 and c.usage.requests == 2  # the counters were copied
    c.close()
    d.close()


# ---------------------------------------------------------------------------- cache
def test_cache_file_layout_content_and_modes(raw: _Raw, tmp_path) -> None:
    c = LLMClient(base_url=raw.url, model="m", cache_dir=tmp_path)
    assert c.cache_mode == "readwrite" and c.cache_dir == os.fspath(tmp_path)
    raw.reply(body=completion("x", "y", usage={"prompt_tokens": 2, "completion_tokens": 3}))
    assert c.complete(REQ, deadline=soon()) == ["x", "y"]
    key = REQ.key("m")
    path = tmp_path / key[:2] / f"{key}.json"
    entry = {
        "request": REQ.payload("m"),
        "texts": ["x", "y"],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3},
    }
    assert path.read_text() == json.dumps(entry, sort_keys=True)  # canonical: keys sorted
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind
    # A hit: no request, counted as a cache hit, no tokens.
    assert c.complete(REQ, deadline=soon()) == ["x", "y"] and len(raw.requests) == 1
    assert (c.usage.cache_hits, c.usage.requests, c.usage.prompt_tokens) == (1, 2, 2)
    # Replay reads it; "off" ignores it.
    replay = LLMClient(model="m", cache_dir=tmp_path, cache_mode="replay")
    assert replay.complete(REQ, deadline=soon()) == ["x", "y"]
    off = LLMClient(base_url=raw.url, model="m", cache_dir=tmp_path, cache_mode="off")
    assert off.complete(REQ, deadline=soon()) == ["ok"] and len(raw.requests) == 2
    # Another model is another key.
    other = LLMClient(base_url=raw.url, model="m2", cache_dir=tmp_path)
    assert other.complete(REQ, deadline=soon()) == ["ok"] and len(raw.requests) == 3


def test_replay_never_writes_and_failures_are_not_cached(raw: _Raw, tmp_path) -> None:
    c = LLMClient(base_url=raw.url, model="m", cache_dir=tmp_path, max_retries=0)
    raw.reply(503, {"error": {"message": "x"}})
    assert isinstance(c.complete_many([REQ], deadline=soon())[0], LLMError)
    assert list(tmp_path.iterdir()) == []
    assert c.complete(REQ, deadline=soon()) == ["ok"]  # a miss: sent
    assert len(list(tmp_path.rglob("*.json"))) == 1
    (tmp_path / "r").mkdir()
    replay = LLMClient(model="m", cache_dir=tmp_path / "r", cache_mode="replay")
    replay._cache_put(REQ, ["z"], {"prompt_tokens": 1})
    assert list((tmp_path / "r").iterdir()) == []
    assert (replay.usage.completions, replay.usage.prompt_tokens) == (1, 1)


def test_corrupt_cache_entries_are_misses(raw: _Raw, tmp_path) -> None:
    c = LLMClient(base_url=raw.url, model="m", cache_dir=tmp_path)
    key = REQ.key("m")
    path = tmp_path / key[:2] / f"{key}.json"
    path.parent.mkdir()
    for text in ("{not json", '{"other": 1}', '{"texts": "abc"}', '{"texts": ["a", 1]}', "[1]"):
        path.write_text(text)
        assert c._cache_get(REQ) is None, text
    path.write_text('{"texts": ["a", "b"]}')
    assert c._cache_get(REQ) == ["a", "b"]


def test_an_unwritable_cache_only_costs_the_replay(raw: _Raw, tmp_path) -> None:
    # Unwritable at construction: a ConfigError (see test_llm_misuse.py). Unwritable later
    # (here: the folder replaced by a file): the call succeeds, one warning is given.
    folder = tmp_path / "cache"
    c = LLMClient(base_url=raw.url, model="m", cache_dir=folder)
    folder.rmdir()
    folder.write_text("")
    with pytest.warns(RuntimeWarning, match="could not write its cache"):
        assert c.complete(REQ, deadline=soon()) == ["ok"]
    assert c.usage.failures == 0


# =========================================================================== searcher

LR = Param("lr", 1e-4, 1.0, log=True)
X = Param("x", 0.0, 10.0)
OBS = [(1e-3, 3.0), (1e-2, 1.0), (1e-1, 2.0)]  # best 1.0, worst 3.0


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LLMServer]:
    with LLMServer() as srv:
        yield srv


@pytest.fixture
def srv(llm_server: LLMServer) -> Iterator[LLMServer]:
    llm_server.behaviour, llm_server.faults = "healthy", {}
    llm_server.set_script([])
    llm_server.replies.clear()
    llm_server.bodies.clear()
    llm_server.log.clear()
    yield llm_server
    llm_server.replies.clear()


def searcher(url: str | None = None, params=(LR,), obs=OBS, **kw: Any) -> LLMSearcher:
    kw.setdefault("seed", 0)
    kw.setdefault("timeout", 5.0)
    kw.setdefault("fallback", RandomSearcher(list(params), seed=7))
    s = LLMSearcher(list(params), base_url=url or "http://127.0.0.1:9/v1", model="m", **kw)
    for lr, v in obs:
        s.observe({"lr": lr}, v)
    return s


def test_number_format_and_bounds_by_hand() -> None:
    assert [_number(v) for v in (3, 2.5, " 0.25 ", "1e-3")] == [3.0, 2.5, 0.25, 0.001]
    assert [_number(v) for v in (True, False, "abc", None, [1], {"a": 1})] == [None] * 6
    assert isinstance(_number(3), float)
    assert _fmt(0.00316227, 4) == "0.003162" and _fmt(123456.0, 3) == "1.23e+05"
    assert _fmt_bound(0.987654, 4, low=False) == "0.9876"
    assert _fmt_bound(0.987654, 4, low=True) == "0.9877"
    assert _fmt_bound(0.123456, 4, low=True) == "0.1235"
    assert _fmt_bound(0.123456, 4, low=False) == "0.1234"
    assert _fmt_bound(-0.123456, 4, low=True) == "-0.1234"
    assert _fmt_bound(-0.123456, 4, low=False) == "-0.1235"
    assert _fmt_bound(0.0, 4, low=True) == "0" and _fmt_bound(1e-4, 2, low=True) == "0.0001"
    assert _fmt_bound(123456.0, 2, low=True) == "1.3e+05"


def test_extract_json_prefers_fenced_json_and_skips_broken_starts() -> None:
    assert extract_json('first {"a": 1} then ```{"b": 2}```') == {"b": 2}
    assert extract_json('```\n[1, 2]\n``` and {"a": 1}') == [1, 2]
    assert extract_json('```json\nnot json\n``` {"a": 1}') == {"a": 1}
    assert extract_json('x [1, {"a": ] {"ok": true}') == {"ok": True}
    assert extract_json("[3]") == [3]
    assert extract_json(None) is None and extract_json(3) is None
    assert extract_json('"just a string" 1.5') is None


def test_expected_improvement_below_the_best_and_degenerate_std() -> None:
    # z = -1: 1 * (-Phi(-1) + phi(1)) = -0.1586552539 + 0.2419707245
    assert expected_improvement(2.0, 1.0, 1.0) == pytest.approx(0.0833154706, rel=1e-9)
    # z = 0.5 with std 2: 2 * (0.5 Phi(0.5) + phi(0.5)), from the tables
    ei = 2.0 * (0.5 * 0.6914624613 + 0.3520653268)
    assert expected_improvement(0.0, 2.0, 1.0) == pytest.approx(ei, rel=1e-9)
    assert expected_improvement(0.5, -1.0, 1.0) == 0.5
    assert expected_improvement(0.5, 0.0, 1.0) == 0.5


def test_searcher_defaults_and_fallback(no_env) -> None:
    s = LLMSearcher([LR], base_url="http://127.0.0.1:9/v1", model="m", seed=3, design="stratified")
    assert (s.timeout, s.n_initial, s.n_candidates, s.min_candidates) == (30.0, 3, 8, 4)
    assert (s.n_samples, s.alpha, s.max_context, s.max_rounds) == (3, 0.1, 20, 2)
    assert (s.dup_tol, s.digits, s.task, s.objective) == (1e-3, 4, "", "loss")
    assert (s.last_source, s.last_llm_seconds, s.n_llm, s.n_fallbacks, s.events) == (
        None,
        0.0,
        0,
        0,
        [],
    )
    fb = s.fallback
    assert isinstance(fb, GPSearcher) and fb.seed == _derive_seed(3, -1)
    assert (fb.n_initial, fb.design, s.design) == (3, "stratified", "stratified")
    assert s.client.model == "m" and s.usage is s.client.usage
    s = LLMSearcher([LR], base_url="http://127.0.0.1:9/v1", model="m", n_candidates=1)
    assert s.min_candidates == 1
    s = LLMSearcher([LR], base_url="http://127.0.0.1:9/v1", model="m", n_candidates=9)
    assert s.min_candidates == 4
    s = LLMSearcher([LR], base_url="http://127.0.0.1:9/v1", model="m", n_initial=5)
    assert s.fallback.n_initial == 5
    s = LLMSearcher(
        [LR], base_url="http://127.0.0.1:9/v1", model="m", task="  t  ", objective="val"
    )
    assert (s.task, s.objective) == ("t", "val")
    assert repr(searcher(obs=OBS[:2])) == (
        "LLMSearcher(params=[Param(name='lr', low=0.0001, high=1.0, log=True)], seed=0, "
        "model='m', n_observations=2)"
    )
    # A fallback over another box is moved to this one.
    fb = RandomSearcher([Param("lr", 0.5, 0.9)], seed=1)
    s = searcher(fallback=fb)
    assert s.fallback is fb and fb.bounds["lr"] == (1e-4, 1.0)
    # Edge values that are allowed.
    s = searcher(alpha=-1.0, dup_tol=0.0, digits=2, min_candidates=1)
    assert (s.alpha, s.dup_tol, s.digits, s.min_candidates) == (-1.0, 0.0, 2, 1)


# Each numeric argument: a refused value and what its message says is allowed.
REFUSED = {
    "timeout": (0.0, "a finite float in (0, 1e+06]"),
    "n_initial": (0, "an int >= 1"),
    "n_candidates": (0, "an int >= 1"),
    "min_candidates": (0, "an int >= 1"),
    "n_samples": (0, "an int >= 1"),
    "alpha": (-1.5, "a finite float >= -1"),
    "max_context": (0, "an int >= 1"),
    "max_rounds": (0, "an int >= 1"),
    "dup_tol": (-0.1, "a finite float >= 0"),
    "digits": (1, "an int in [2, 17]"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_searcher_argument_messages(name: str) -> None:
    value, allowed = REFUSED[name]
    with pytest.raises(ConfigError) as e:
        searcher(**{name: value})
    assert str(e.value) == f"{name} must be {allowed}, got {value!r}"


def test_searcher_type_messages() -> None:
    url = "http://127.0.0.1:9/v1"
    with pytest.raises(ConfigTypeError) as e:
        LLMSearcher([LR], base_url=url, model="m", objective="")
    assert str(e.value) == "task and objective must be str (objective non-empty), got '', ''"
    with pytest.raises(ConfigTypeError) as e:
        LLMSearcher([LR], base_url=url, model="m", task=3)
    assert str(e.value).endswith("got 3, 'loss'")
    with pytest.raises(ConfigTypeError) as e:
        LLMSearcher([LR], base_url=url, model="m", nope=1, also=2)
    assert str(e.value).startswith(
        "LLMSearcher got unexpected keyword arguments ['also', 'nope']; besides its own it "
        "takes LLMClient's ['base_url', 'api_key', 'model', 'max_retries', "
    )
    other = RandomSearcher([Param("wd", 0.0, 1.0)])
    with pytest.raises(ConfigTypeError) as e:
        LLMSearcher([LR], base_url=url, model="m", fallback=other)
    assert str(e.value) == f"fallback must be a Searcher over ['lr'], got {other!r}"
    with pytest.raises(ConfigTypeError, match="fallback must be a Searcher"):
        LLMSearcher([LR], base_url=url, model="m", fallback="gp")


def test_the_fallback_follows_observations_bounds_seed_and_state() -> None:
    s = searcher()
    assert s.fallback.observations == s.observations and len(s.fallback) == 3
    s.observe({"lr": 0.5}, 4.0, noise=0.2)
    assert s.fallback.noises == s.noises == [None, None, None, 0.2]
    s.set_bounds("lr", 1e-3, 0.5)
    assert s.fallback.bounds["lr"] == (1e-3, 0.5)
    s.reseed_rng(11)
    assert s.seed == 11 and s.fallback.seed == _derive_seed(11, -1)
    state = s.state_dict()
    assert set(state["fallback"]) == set(s.fallback.state_dict())
    t = searcher(obs=[])
    t.load_state_dict(state)
    assert t.fallback.observations == s.fallback.observations and t.fallback.seed == s.fallback.seed
    s.reset()
    assert len(s) == 0 and len(s.fallback) == 0
    for bad in ([], {"fallback": 3}, {}):
        with pytest.raises(StateError) as e:
            t.load_state_dict(bad)
        assert str(e.value) == "state is not a valid LLMSearcher state_dict: no 'fallback' entry"


def test_events_are_truncated_and_bounded() -> None:
    s = searcher()
    s._event(4, "nan", "x" * 400, count=3, fb=True)
    assert s.events == [
        {"call": 4, "kind": "nan", "count": 3, "detail": "x" * 300, "fallback": True}
    ]
    s._event(5, "malformed", "d")
    assert s.events[-1] == {
        "call": 5,
        "kind": "malformed",
        "count": 1,
        "detail": "d",
        "fallback": False,
    }
    for i in range(1000):
        s._event(i, "nan", str(i))
    assert (
        len(s.events) == 1000 and s.events[0]["detail"] == "0" and s.events[-1]["detail"] == "999"
    )


def test_parse_configs_validates_each_entry() -> None:
    s = searcher(params=(LR, X), obs=[], dup_tol=0.01)
    known = [(1e-2, 5.0)]
    accepted: list[tuple[float, ...]] = []
    reply = json.dumps(
        {
            "configurations": [
                {"lr": 1e-4, "x": 10.0},  # both bounds inclusive
                {"lr": "0.5", "x": 0},  # numeric string, int
                {"lr": 1e-2, "x": 5.0},  # known
                {"lr": 0.5, "x": 0.09},  # within 0.01 of the accepted one (unit 0.009)
                {"lr": 0.5, "x": 0.2},  # 0.02 away in x: kept
                {"lr": 2.0, "x": 1.0},
                {"lr": 0.1, "x": -0.1},
                {"lr": 0.1},
                {"lr": True, "x": 1.0},
                [0.1, 1.0],
                {"lr": 0.1, "x": "NaN"},
            ]
        }
    )
    dropped = s._parse_configs(reply, known, accepted)
    assert accepted == [(1e-4, 10.0), (0.5, 0.0), (0.5, 0.2)]
    assert dropped == {"duplicate": 2, "out_of_bounds": 2, "malformed": 3, "nan": 1}
    assert s._parse_configs('{"configs": []}', [], []) == {"malformed": 1}
    assert s._parse_configs('{"other": [1]}', [], []) == {"malformed": 1}
    assert s._parse_configs("nothing", [], []) == {"malformed": 1}
    # "configs" wins over "configurations"
    acc: list[tuple[float, ...]] = []
    s._parse_configs('{"configs": [{"lr": 0.3, "x": 1}], "configurations": [1]}', [], acc)
    assert acc == [(0.3, 1.0)]


def test_duplicates_by_the_largest_unit_cube_distance() -> None:
    s = searcher(params=(LR, X), obs=[], dup_tol=0.1)
    # lr 1e-4..1 in log units: 1e-2 -> 0.5; x 0..10: 5 -> 0.5
    assert s._is_duplicate((10**-1.6, 5.0), [(1e-2, 5.0)])  # 0.1 in lr exactly: a duplicate
    assert not s._is_duplicate((10**-1.5, 5.0), [(1e-2, 5.0)])  # 0.125 in lr
    assert not s._is_duplicate((1e-2, 6.5), [(1e-2, 5.0)])  # 0.15 in x
    assert s._is_duplicate((1e-2, 6.0), [(0.9, 0.0), (1e-2, 5.0)])  # any of the others
    assert not s._is_duplicate((1e-2, 5.0), [])


def reply_configs(*lrs: float) -> str:
    return json.dumps({"configs": [{"lr": x} for x in lrs]})


def test_request_settings_and_seeds(srv: LLMServer) -> None:
    s = searcher(srv.base_url, n_candidates=3, n_samples=2, seed=5)
    s.suggest()  # call 0 fails (nothing queued is valid), call 1 is the one checked
    srv.bodies.clear()
    srv.replies.extend([reply_configs(3e-3, 0.03, 5e-3), "[0.9, 0.5, 0.95]", "[0.9, 1.5, 0.95]"])
    (cfg,) = s.suggest()
    seed = _derive_seed(5, 1) & 0x7FFFFFFF
    prop, *scores = srv.bodies
    assert prop["seed"] == seed
    assert sorted(b["seed"] for b in scores) == [seed + 1000, seed + 1001]
    assert (prop["temperature"], prop["top_p"], prop["max_tokens"]) == (0.8, 0.95, 64 + 48 * 3)
    assert [(b["temperature"], b["top_p"], b["max_tokens"]) for b in scores] == [
        (0.7, 0.95, 32 + 16 * 3)
    ] * 2
    system = {"role": "system", "content": SYSTEM_PROMPT}
    assert prop["messages"] == [system, {"role": "user", "content": s.candidate_prompt(3)}]
    surrogate = s.surrogate_prompt([(3e-3,), (0.03,), (5e-3,)])
    assert scores[0]["messages"] == [system, {"role": "user", "content": surrogate}]
    assert cfg == {"lr": 0.03} and s.last_source == "llm"


def test_sampler_asks_for_n_candidates_and_ranks_by_ei(srv: LLMServer) -> None:
    s = searcher(srv.base_url, n_candidates=2, n_samples=1, min_candidates=1)
    # n = 3 > n_candidates: asks for 3; need max(3, 1) = 3. Predictions: EI ranks.
    srv.replies.extend([reply_configs(3e-3, 0.03, 5e-3), "[1.2, 0.5, 0.8]"])
    cfgs = s.suggest(3)
    assert [c["lr"] for c in cfgs] == [0.03, 5e-3, 3e-3]
    assert "with 3 configurations" in srv.bodies[0]["messages"][1]["content"]
    assert "with 3 numbers" in srv.bodies[1]["messages"][1]["content"]
    # Ties keep the LLM's order (all predictions equal, same floor std).
    srv.bodies.clear()
    srv.replies.extend([reply_configs(4e-3, 0.04), "[0.9, 0.9]"])
    assert [c["lr"] for c in s.suggest()] == [4e-3]
    assert "with 2 configurations" in srv.bodies[0]["messages"][1]["content"]


def test_propose_rounds_need_and_the_fallback_kind(srv: LLMServer) -> None:
    # need = max(1, min_candidates 2): one valid config in round 0 is not enough.
    s = searcher(srv.base_url, n_candidates=3, min_candidates=2, n_samples=1, max_rounds=2)
    srv.replies.extend([reply_configs(3e-3), reply_configs(0.03), "[0.5, 0.6]"])
    (cfg,) = s.suggest()
    assert s.last_source == "llm" and cfg == {"lr": 3e-3}
    assert [k for _, k in srv.log] == ["configs", "configs", "predictions"]
    assert [b["seed"] for b in srv.bodies[:2]] == [srv.bodies[0]["seed"], srv.bodies[0]["seed"] + 1]
    # Too few after max_rounds: "too_few" (some valid), else the commonest rejection.
    srv.log.clear()
    s = searcher(srv.base_url, n_candidates=3, min_candidates=2, max_rounds=1)
    srv.replies.append(reply_configs(3e-3))
    s.suggest()
    assert [k for _, k in srv.log] == ["configs"]
    assert s.events[-1]["kind"] == "too_few" and s.events[-1]["fallback"]
    assert s.events[-1]["detail"] == "1 valid configs, 2 needed"
    s = searcher(srv.base_url, n_candidates=3, max_rounds=2)
    srv.replies.extend(
        [
            json.dumps({"configs": [{"lr": 5.0}, {"lr": 9.0}, {"lr": "x"}]}),
            json.dumps({"configs": [{"lr": 7.0}]}),
        ]
    )
    s.suggest()
    fb = s.events[-1]
    assert fb["kind"] == "out_of_bounds" and fb["fallback"]
    assert fb["detail"] == (
        "no valid config in 2 proposal calls: {'out_of_bounds': 3, 'malformed': 1}"
    )
    assert [(e["kind"], e["count"], e["detail"]) for e in s.events[:-1]] == [
        ("out_of_bounds", 2, "proposal round 0: 2 dropped"),
        ("malformed", 1, "proposal round 0: 1 dropped"),
        ("out_of_bounds", 1, "proposal round 1: 1 dropped"),
    ]
    assert s.n_fallbacks == 1 and s.n_llm == 0 and s.last_source == "gp-fallback"


def test_warm_start_asks_for_a_little_slack(srv: LLMServer) -> None:
    s = searcher(srv.base_url, obs=[], n_candidates=8, n_initial=3)
    srv.replies.append(reply_configs(1e-3, 1e-2, 1e-1))
    assert s.suggest() == [{"lr": 1e-3}]  # the first valid one
    srv.replies.append(json.dumps({"configs": [{"lr": 5.0}, {"lr": 2e-3}, {"lr": 3e-3}]}))
    assert s.suggest() == [{"lr": 2e-3}]
    assert s.events == [
        {
            "call": 1,
            "kind": "out_of_bounds",
            "count": 1,
            "detail": "proposal round 0: 1 dropped",
            "fallback": False,
        }
    ]
    s = searcher(srv.base_url, obs=[], n_candidates=8, n_initial=3)
    srv.replies.append(reply_configs(1e-3, 1e-2, 1e-1))
    assert s.suggest() == [{"lr": 1e-3}]
    assert "with 3 configurations" in srv.bodies[-1]["messages"][1]["content"]  # n + 2
    assert s.last_source == "llm-warm" and s._n_suggest_calls == 1
    srv.replies.append(reply_configs(2e-3, 2e-2))
    s = searcher(srv.base_url, obs=[], n_candidates=2, n_initial=3)
    assert s.suggest() == [{"lr": 2e-3}]
    assert "with 2 configurations" in srv.bodies[-1]["messages"][1]["content"]
    # Warm while observed + pending < n_initial, or no finite value yet.
    s = searcher(srv.base_url, obs=OBS[:2], n_initial=3)
    srv.replies.append(reply_configs(3e-2, 3e-3))
    s.suggest(pending=[{"lr": 0.5}])
    assert s.last_source == "llm"  # 2 + 1 pending = 3: the sampler
    s = searcher(srv.base_url, obs=[(1e-2, math.nan)] * 3, n_initial=3)
    srv.replies.append(reply_configs(3e-2, 3e-3))
    s.suggest()
    assert s.last_source == "llm-warm"
    assert "Already chosen (do not repeat):" in srv.bodies[-1]["messages"][1]["content"]


def test_pending_configs_are_not_proposed_again(srv: LLMServer) -> None:
    s = searcher(srv.base_url, n_candidates=2, min_candidates=1, n_samples=1)
    srv.replies.extend([reply_configs(0.5, 0.05), "[0.5]"])
    assert s.suggest(pending=[{"lr": 0.5}]) == [{"lr": 0.05}]
    assert s.events[0]["kind"] == "duplicate" and not s.events[0]["fallback"]
    assert 'Already running (do not repeat):\n{"lr":0.5}' in srv.bodies[0]["messages"][1]["content"]
    with pytest.raises(ConfigError, match="n must be an int >= 1, got 0"):
        s.suggest(0)


def test_scoring_mean_spread_and_floor(srv: LLMServer) -> None:
    s = searcher(srv.base_url, n_samples=3, max_concurrency=1)  # replies in call order
    srv.replies.extend(['{"predictions": [1.0, 2.0]}', "[3.0, 2.0]", "[2.0, NaN]"])
    out = s._score([(3e-3,), (0.03,)], 0, 1, soon())
    # candidate 0: 1, 3, 2 -> mean 2, population sd sqrt(2/3); candidate 1: 2, 2 -> sd 0,
    # floored at 1e-3 * (3 - 1)
    assert out == [(pytest.approx(2.0), pytest.approx(math.sqrt(2 / 3))), (2.0, 0.002)]
    assert [(e["kind"], e["count"]) for e in s.events] == [("nan", 1)]
    assert s.events[0]["detail"] == "scoring call 2: 1 non-finite"
    # All values equal: the floor is 1e-3 * max(|best|, 1).
    t = searcher(srv.base_url, obs=[(1e-3, -4.0), (1e-2, -4.0)], n_samples=1)
    srv.replies.append("[1.0]")
    assert t._score([(3e-3,)], 0, 1, soon()) == [(1.0, 0.004)]
    t = searcher(srv.base_url, obs=[(1e-3, 0.5)], n_samples=1)
    srv.replies.append("[1.0]")
    assert t._score([(3e-3,)], 0, 1, soon()) == [(1.0, 0.001)]


def test_scoring_failures_name_the_last_kind(srv: LLMServer) -> None:
    s = searcher(srv.base_url, n_samples=2, max_concurrency=1)
    srv.replies.extend(["[1.0]", '{"predictions": [1, "x"]}'])
    with pytest.raises(_Fallback) as e:
        s._score([(3e-3,), (0.03,)], 0, 1, soon())
    assert e.value.kind == "malformed"
    assert [ev["detail"] for ev in s.events] == [
        "scoring call 0: not 2 numbers",
        "scoring call 1: not 2 numbers",
    ]
    srv.set_script(["http_4xx"])
    srv.replies.append("[NaN]")
    t = searcher(srv.base_url, n_samples=2, max_retries=0, max_concurrency=1)
    with pytest.raises(_Fallback) as e:
        t._score([(3e-3,)], 0, 1, soon())
    assert e.value.kind == "nan"  # the last failure, in call order
    assert [ev["kind"] for ev in t.events] == ["http_4xx", "nan"]
    assert t.events[0]["detail"].startswith("scoring call 0: HTTP 400")


def test_context_rows_spread_failures_and_order() -> None:
    s = searcher(params=(X,), obs=[], max_context=5)
    values = [5.0, math.nan, 1.0, 4.0, math.inf, 2.0, 3.0, 6.0]
    xs = [0.0, 1.0, 5.0, 9.0, 2.0, 4.0, 6.0, 10.0]
    for x, v in zip(xs, values):
        s.observe({"x": x}, v)
    # best (5 + 1) // 2 = 3: indices 2, 5, 6 (x 5, 4, 6); failures 5 // 4 = 1: the newest (4);
    # then the farthest from x {5, 4, 6, 2}: x = 10 (index 7, gap 4).
    rows = s.context_rows()
    assert rows == [4, 7, 6, 5, 2]
    assert s._history_lines() == [
        "Evaluated configurations (5 of 8), as config -> loss:",
        '{"x":2} -> diverged',
        '{"x":10} -> 6',
        '{"x":6} -> 3',
        '{"x":4} -> 2',
        '{"x":5} -> 1',
    ]
    # max_context 4: the best 2 (indices 2, 5), one failure (4 // 4), then x = 10.
    s.max_context = 4
    assert s.context_rows() == [4, 7, 5, 2]
    # A tie on the gap goes to the older observation.
    t = searcher(params=(X,), obs=[], max_context=2)
    for x, v in ((5.0, 1.0), (0.0, 3.0), (10.0, 2.0)):
        t.observe({"x": x}, v)
    assert t.context_rows() == [1, 0]


def test_target_by_hand() -> None:
    assert searcher(alpha=0.5).target() == pytest.approx(1.0 - 0.5 * 2.0)
    assert searcher(obs=[(1e-3, 2.0), (1e-2, 2.0)]).target() == pytest.approx(2.0 - 0.1 * 0.2)
    assert searcher(obs=[(1e-3, -2.0)]).target() == pytest.approx(-2.0 - 0.1 * 0.2)
    assert searcher(obs=[(1e-3, 0.0)]).target() == pytest.approx(-0.01)
    assert searcher(obs=[(1e-3, 1.0), (1e-2, math.nan)], alpha=-0.5).target() == pytest.approx(1.05)


def test_prompt_text_by_hand() -> None:
    s = searcher(params=(LR, X), obs=[], task="", objective="val loss", digits=3)
    s.observe({"lr": 1e-3, "x": 2.5}, 0.123456)
    s.observe({"lr": 0.5, "x": 7.0}, math.nan)
    header = (
        "Task: tune a training run\n"
        "Objective: val loss (lower is better).\n"
        'Search space (JSON): {"lr":{"low":0.0001,"high":1.0,"scale":"log"},'
        '"x":{"low":0.0,"high":10.0,"scale":"linear"}}\n'
        "Log-scale parameters (lr) are written in natural units; think of them in orders of "
        "magnitude."
    )
    assert s.warm_prompt(2, [(0.01, 1.0)]) == "\n".join(
        [
            header,
            "Already chosen (do not repeat):",
            '{"lr":0.001,"x":2.5}',
            '{"lr":0.5,"x":7}',
            '{"lr":0.01,"x":1}',
            "Propose 2 diverse configurations likely to give a low val loss, inside the search "
            "space and away from its boundaries.",
            'Reply with JSON only, exactly: {"configs": [...]} with 2 configurations, each an '
            'object with keys "lr", "x".',
        ]
    )
    history = [
        "Evaluated configurations (2 of 2), as config -> val loss:",
        '{"lr":0.5,"x":7} -> diverged',
        '{"lr":0.001,"x":2.5} -> 0.123',
    ]
    assert s.candidate_prompt(4) == "\n".join(
        [
            header,
            *history,
            "Best val loss so far: 0.123. Propose 4 new, distinct configurations you expect to "
            "reach val loss = 0.122, inside the search space, away from its boundaries and not "
            "repeating any configuration above.",
            'Reply with JSON only, exactly: {"configs": [...]} with 4 configurations, each an '
            'object with keys "lr", "x".',
        ]
    )
    assert s.surrogate_prompt([(0.02, 3.0), (0.2, 4.0)]) == "\n".join(
        [
            header,
            *history,
            "Predict the val loss of each candidate:",
            '1. {"lr":0.02,"x":3}',
            '2. {"lr":0.2,"x":4}',
            'Reply with JSON only, exactly: {"predictions": [...]} with 2 numbers, one per '
            "candidate in order.",
        ]
    )
    lin = searcher(params=(X,), obs=[], task="t")
    assert "Log-scale" not in lin.warm_prompt(1) and lin.warm_prompt(1).startswith("Task: t\n")
    assert "Already chosen" not in lin.warm_prompt(1)


def test_suggest_unit_hook_uses_the_llm(srv: LLMServer) -> None:
    import torch

    s = searcher(srv.base_url, params=(X,), obs=[], n_initial=2)
    srv.replies.append(json.dumps({"configs": [{"x": 2.5}, {"x": 7.5}]}))
    u = s._suggest_unit(2, torch.empty(0, 1, dtype=torch.float64))
    assert u.tolist() == [[0.25], [0.75]]
    s = searcher(closed_port_url(), params=(X,), obs=[], timeout=0.5)
    u = s._suggest_unit(1, torch.empty(0, 1, dtype=torch.float64))
    assert u.shape == (1, 1) and s.last_source == "gp-fallback" and s.n_fallbacks == 1


class _BrokenClient(LLMClient):
    """A client whose transport has a bug (raises something that is not an LLMError)."""

    def complete_many(self, requests, *, deadline):
        raise RuntimeError("boom")


def test_a_bug_in_the_llm_step_falls_back_and_is_recorded() -> None:
    client = _BrokenClient(base_url="http://127.0.0.1:9/v1", model="m")
    s = searcher(client=client)
    oracle = RandomSearcher([LR], seed=7)
    for lr, v in OBS:
        oracle.observe({"lr": lr}, v)
    assert s.suggest(2) == oracle.suggest(2)
    assert s.events == [
        {
            "call": 0,
            "kind": "internal",
            "count": 1,
            "detail": "RuntimeError: boom",
            "fallback": True,
        }
    ]
    assert (s.last_source, s.n_fallbacks, s.n_llm) == ("gp-fallback", 1, 0)
