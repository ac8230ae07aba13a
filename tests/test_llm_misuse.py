"""Misuse and hostile replies of the LLM client and searcher (bugs found by probing).

Misuse is a ConfigError/ConfigTypeError/StateError at once; broken or huge replies, slow
servers and odd numbers are events that make a suggestion fall back, never an exception
into the loop and never a wait longer than ``timeout``.
"""

from __future__ import annotations

import copy
import decimal
import json
import math
import socket
import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("openai")

from autolr import ConfigError, ConfigTypeError, StateError
from autolr.searchers import Param
from autolr.searchers import _llm_client as client_module
from autolr.searchers._llm import LLMSearcher, _number, extract_json
from autolr.searchers._llm_client import ChatRequest, LLMClient, LLMError

from .llm_server import LLMServer, closed_port_url

LR = Param("lr", 1e-5, 1.0, log=True)
OBS = [(1e-4, 3.0), (1e-3, 2.0), (1e-2, 1.0), (1e-1, 2.5)]
REQ = ChatRequest((("user", "hi"),))
# Slack on the deadline for thread scheduling on a loaded 2-core CI machine.
SLACK = 0.5


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    with LLMServer() as srv:
        yield srv


@pytest.fixture
def srv(server: LLMServer) -> Iterator[LLMServer]:
    server.behaviour, server.faults, server.sleep = "healthy", {}, 2.0
    server.set_script([])
    server.replies.clear()
    server.log.clear()
    yield server
    server.set_script([])
    server.replies.clear()


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in (*client_module.ENV_BASE_URL, *client_module.ENV_API_KEY, *client_module.ENV_MODEL):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def make(url: str, obs=OBS, **kw) -> LLMSearcher:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("seed", 0)
    s = LLMSearcher([LR], task="x", base_url=url, model="m", **kw)
    for lr, v in obs:
        s.observe({"lr": lr}, v)
    return s


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


# ------------------------------------------------------------------ 9: configuration
@pytest.mark.parametrize(
    "url", ["127.0.0.1:8000/v1", "ftp://127.0.0.1/v1", "not a url", "http://", "http://h:x/v1"]
)
def test_base_url_must_be_an_http_url(no_env, url: str) -> None:
    with pytest.raises(ConfigError) as e:
        LLMClient(base_url=url, model="m")
    assert str(e.value) == (
        "base_url must be an http:// or https:// URL with a host, such as "
        f"'http://127.0.0.1:8000/v1', got {url!r}"
    )
    with pytest.raises(ConfigError, match=r"^base_url must be an http"):
        LLMSearcher([LR], base_url=url, model="m")


def test_base_url_from_the_environment_is_named(no_env) -> None:
    no_env.setenv("AUTOLR_LLM_BASE_URL", "localhost:8000")
    with pytest.raises(ConfigError, match=r"^\$AUTOLR_LLM_BASE_URL must be an http:// or https"):
        LLMClient(model="m")
    no_env.delenv("AUTOLR_LLM_BASE_URL")
    no_env.setenv("OPENAI_BASE_URL", "ftp://x/v1")
    with pytest.raises(ConfigError, match=r"^\$OPENAI_BASE_URL must be .* got 'ftp://x/v1'"):
        LLMSearcher([LR], model="m")
    no_env.setenv("OPENAI_BASE_URL", "HTTPS://example.invalid:8443/v1")  # valid: kept as is
    assert LLMClient(model="m").base_url == "HTTPS://example.invalid:8443/v1"


def test_base_url_of_the_wrong_type(no_env) -> None:
    with pytest.raises(ConfigTypeError) as e:
        LLMClient(base_url=8000, model="m")
    assert str(e.value) == (
        "base_url must be a str such as 'http://127.0.0.1:8000/v1', got int 8000"
    )


def test_cache_dir_is_created_and_checked_at_construction(tmp_path) -> None:
    url = closed_port_url()
    folder = tmp_path / "a" / "b"
    c = LLMClient(base_url=url, model="m", cache_dir=folder)
    assert folder.is_dir() and list(folder.iterdir()) == []  # created, probe removed
    blocker = tmp_path / "file"
    blocker.write_text("")
    for bad in (blocker, blocker / "sub"):
        with pytest.raises(ConfigError, match=r"^cache_dir must be a folder the cache can be"):
            LLMClient(base_url=url, model="m", cache_dir=bad)
        with pytest.raises(ConfigError, match=r"^cache_dir must be a folder"):
            LLMSearcher([LR], base_url=url, model="m", cache_dir=bad)
    # "off" ignores the folder; a replay needs it to exist.
    LLMClient(base_url=url, model="m", cache_dir=tmp_path / "none", cache_mode="off")
    assert not (tmp_path / "none").exists()
    with pytest.raises(ConfigError) as e:
        LLMClient(model="m", cache_dir=tmp_path / "none", cache_mode="replay")
    assert str(e.value).startswith(
        f"cache_mode='replay' needs an existing cache_dir, got {str(tmp_path / 'none')!r}"
    )
    LLMClient(model="m", cache_dir=folder, cache_mode="replay")
    for bad in (5, b"dir"):
        with pytest.raises(ConfigTypeError, match=r"^cache_dir must be a str"):
            LLMClient(base_url=url, model="m", cache_dir=bad)
    c.close()


def test_a_cache_write_failing_later_warns_once(srv, tmp_path) -> None:
    folder = tmp_path / "cache"
    c = LLMClient(base_url=srv.base_url, model="m", cache_dir=folder)
    folder.rmdir()
    folder.write_text("")  # the folder became a file
    with pytest.warns(RuntimeWarning, match="could not write its cache") as rec:
        assert c.complete(REQ, deadline=soon())
        assert c.complete(ChatRequest((("user", "other"),)), deadline=soon())
    assert len([w for w in rec if "could not write" in str(w.message)]) == 1
    assert c.usage.failures == 0


# ------------------------------------------------------------- 10: huge proposal reply
def test_a_huge_proposal_reply_is_read_only_as_far_as_needed(srv) -> None:
    n = 3000
    lrs = [1e-4 * (1 + 9999 * i / n) for i in range(n)]  # distinct, in bounds
    srv.replies[:] = [json.dumps({"configs": [{"lr": x} for x in lrs]})]
    s = make(srv.base_url, obs=[], timeout=1.0, dup_tol=1e-9)
    t0 = time.monotonic()
    (cfg,) = s.suggest()
    assert time.monotonic() - t0 < 1.0 + SLACK  # was ~10 s: every entry, quadratic
    assert s.last_source == "llm-warm" and cfg == {"lr": lrs[0]}


def test_proposal_entries_read_are_capped(srv) -> None:
    # The warm start asks for m = 3 configs: at most 4 m = 12 entries of a reply are read.
    bad = [{"lr": 5.0}] * 50  # out of bounds
    srv.replies[:] = [json.dumps({"configs": [*bad, {"lr": 0.01}]})] * 2
    s = make(srv.base_url, obs=[], max_rounds=2)
    s.suggest()
    dropped = [e for e in s.events if e["kind"] == "out_of_bounds" and not e["fallback"]]
    assert [e["count"] for e in dropped] == [12, 12]  # was 50, 50
    assert s.events[-1]["fallback"] and s.last_source == "gp-fallback"
    # Reading stops once m = 3 configs are accepted: the entries after them are not read.
    srv.replies[:] = [json.dumps({"configs": [{"lr": x} for x in (0.01, 0.02, 0.03, 0.03, 5.0)]})]
    s = make(srv.base_url, obs=[])
    assert s.suggest() == [{"lr": 0.01}] and s.events == []


def test_parsing_stops_at_the_limit_and_extract_json_at_its_deadline() -> None:
    s = make(closed_port_url(), obs=[])
    reply = json.dumps({"configs": [{"lr": 10.0**-k} for k in range(1, 5)]})
    acc: list[tuple[float, ...]] = []
    assert s._parse_configs(reply, [], acc, limit=2) == {} and acc == [(0.1,), (0.01,)]
    assert extract_json('{"a": 1}', deadline=time.monotonic() - 1.0) is None
    assert extract_json('{"a": 1}', deadline=soon()) == {"a": 1}


def test_a_reply_in_hand_is_read_whatever_the_clock_so_a_replay_matches(monkeypatch) -> None:
    # Cutting the parse by the clock made a live run under load fall back where its replay
    # from the cache (instant) read the same reply: the replay's stages differed.
    s = make(closed_port_url())
    replies = {"configs": '{"configs": [{"lr": 0.01}, {"lr": 0.02}]}', "scores": "[0.5, 0.6]"}
    monkeypatch.setattr(
        s.client, "complete_many", lambda reqs, deadline: [[replies[which]]] * len(reqs)
    )
    past = time.monotonic() - 1.0
    which = "configs"
    assert len(s._propose("p", 2, 1, [], 0, 0, past)) == 1  # (0.01 is a known point)
    which = "scores"
    assert len(s._score([(0.01,), (0.02,)], 0, 0, past)) == 2


# ------------------------------------------------------------------ 11: slow replies
def test_a_trickling_reply_is_read_no_further_than_the_deadline(srv) -> None:
    c = LLMClient(base_url=srv.base_url, model="m", max_retries=0)
    srv.sleep = 5.0
    srv.set_script(["trickle"])
    t0 = time.monotonic()
    with pytest.raises(LLMError) as e:
        c._call(REQ, t0 + 0.5)  # httpx's timeout is per read; each read here is quick
    assert e.value.kind == "timeout" and time.monotonic() - t0 < 0.5 + SLACK  # was 5 s
    c.close()


def test_trickling_replies_do_not_starve_later_suggestions(srv) -> None:
    srv.sleep = 8.0
    s = make(srv.base_url, timeout=0.5)
    s.suggest()
    srv.set_script(["trickle", "healthy", "trickle", "trickle", "trickle"])
    s.suggest()
    s.suggest()
    sources = []
    for _ in range(4):
        s.suggest()
        sources.append(s.last_source)
    assert sources == ["llm"] * 4  # was 4 timeouts: the workers were still reading


class _StalledHeaders:
    """Loopback server whose first ``stall`` requests get their status line a byte at a
    time (no read ever times out, nothing bounds the wait); later ones a normal reply."""

    def __init__(self, stall: int) -> None:
        self.stall, self.count, self.stop = stall, 0, threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            while len(body) < length:
                body += conn.recv(65536)
            self.count += 1
            try:
                if self.count <= self.stall:
                    for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                        if self.stop.is_set():
                            return
                        conn.sendall(bytes([byte]))
                        time.sleep(0.05)
                    return
                reply = json.dumps(
                    {
                        "id": "c",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "m",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "ok"},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                ).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(reply)}\r\nConnection: close\r\n\r\n".encode()
                    + reply
                )
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_requests_abandoned_at_the_deadline_leave_the_pool() -> None:
    srv = _StalledHeaders(stall=1)
    try:
        c = LLMClient(base_url=srv.url, model="m", max_concurrency=1, max_retries=0)
        (out,) = c.complete_many([REQ], deadline=soon(0.3))
        assert isinstance(out, LLMError) and out.kind == "timeout"
        # The stalled request still runs, but the next one gets a worker at once.
        assert c.complete(REQ, deadline=soon(2.0)) == ["ok"]
        c.close()
    finally:
        srv.close()


# ---------------------------------------------------------------- 12: atomic load
def test_load_state_dict_changes_nothing_when_the_fallback_part_is_bad() -> None:
    url = closed_port_url()
    s = make(url)
    before = s.state_dict()
    bad = copy.deepcopy(make(url, obs=[], seed=1).state_dict())
    bad["fallback"]["param_names"] = ["other"]
    with pytest.raises(StateError, match=r"param_names must be \['lr'\]"):
        s.load_state_dict(bad)
    assert len(s) == 4 and s.seed == 0 and len(s.fallback) == 4
    assert str(s.state_dict()) == str(before)
    good = make(url, obs=OBS[:2], seed=3).state_dict()
    s.load_state_dict(good)  # a valid state still loads, both parts
    assert len(s) == 2 and s.seed == 3 and len(s.fallback) == 2


# ----------------------------------------------------------- 13, 14: timeout, digits
def test_timeout_and_digits_ranges(srv) -> None:
    url = closed_port_url()
    for timeout in (1e10, 1e7, math.inf):
        with pytest.raises(ConfigError, match=r"^timeout must be a finite float in \(0, 1e\+06\]"):
            LLMSearcher([LR], base_url=url, model="m", timeout=timeout)
    assert LLMSearcher([LR], base_url=url, model="m", timeout=1e6).timeout == 1e6
    for digits in (18, 29, 100):
        with pytest.raises(ConfigError, match=r"^digits must be an int in \[2, 17\]"):
            LLMSearcher([LR], base_url=url, model="m", digits=digits)
    s = make(srv.base_url, obs=[], digits=17)
    for i in range(3):
        (c,) = s.suggest()
        s.observe(c, float(i))
    assert s.n_llm == 3


def test_prompts_do_not_depend_on_the_threads_decimal_context() -> None:
    s = make(closed_port_url(), digits=6)
    expected = s.candidate_prompt(4)
    with decimal.localcontext() as ctx:
        ctx.prec = 3  # a user's setting; was InvalidOperation: every suggestion fell back
        ctx.traps[decimal.Inexact] = True
        assert s.candidate_prompt(4) == expected


# --------------------------------------------------------------- 15: huge integers
def test_integers_past_the_float_range_are_invalid_not_internal(srv) -> None:
    big = "9" * 400
    assert _number(int(big)) == math.inf and _number(-int(big)) == -math.inf
    srv.replies[:] = ['{"configs":[{"lr":0.02},{"lr":0.03},{"lr":' + big + "}]}"]
    s = make(srv.base_url, obs=[])
    assert s.suggest() == [{"lr": 0.02}]
    assert s.last_source == "llm-warm"
    assert [(e["kind"], e["count"]) for e in s.events] == [("nan", 1)]


# ------------------------------------------------------------ 16: client arguments
def test_complete_checks_its_arguments_before_sending(srv) -> None:
    c = LLMClient(base_url=srv.base_url, model="m")
    for deadline in (math.inf, math.nan, time.monotonic() + 2e6):
        with pytest.raises(ConfigError, match=r"^deadline must be"):
            c.complete(REQ, deadline=deadline)
    with pytest.raises(ConfigTypeError, match=r"^deadline must be a finite float, got '5'"):
        c.complete(REQ, deadline="5")
    with pytest.raises(
        ConfigTypeError, match=r"^request must be an autolr\..*ChatRequest, got str"
    ):
        c.complete("hello", deadline=soon())
    with pytest.raises(ConfigTypeError, match=r"^requests must be a sequence of ChatRequest"):
        c.complete_many("hello", deadline=soon())
    with pytest.raises(ConfigTypeError, match=r"^requests\[1\] must be an autolr\."):
        c.complete_many([REQ, "x"], deadline=soon())
    assert srv.log == [] and c.usage.requests == 0  # nothing was sent
    c.close()


def test_chat_request_checks_its_fields() -> None:
    for messages in ([{"role": "user", "content": "x"}], "hi", [("user",)], [("user", 3)], 5):
        with pytest.raises(ConfigTypeError, match=r"^messages must be a sequence of \(role"):
            ChatRequest(messages)
    with pytest.raises(ConfigError, match=r"^messages must hold at least one"):
        ChatRequest(())
    for kw, msg in (
        ({"n": 0}, "n must be an int >= 1, got 0"),
        ({"max_tokens": 0}, "max_tokens must be an int >= 1, got 0"),
        ({"temperature": math.nan}, "temperature must be a finite float >= 0, got nan"),
        ({"top_p": 1.5}, "top_p must be a finite float in [0, 1], got 1.5"),
        ({"seed": "1"}, "seed must be an int, got '1'"),
    ):
        with pytest.raises(ConfigError) as e:
            ChatRequest((("user", "x"),), **kw)
        assert str(e.value) == msg
    # Lists of pairs are the same request as tuples (same payload and cache key).
    r = ChatRequest([["system", "s"], ["user", "u"]])
    assert r.messages == (("system", "s"), ("user", "u"))
    assert r == ChatRequest((("system", "s"), ("user", "u"))) and hash(r)
    assert r.key("m") == ChatRequest((("system", "s"), ("user", "u"))).key("m")


# ------------------------------------------------------------------------- LLAMBO
def test_llambo_searcher_options_must_be_a_mapping() -> None:
    from autolr.integrations.optuna import LLAMBOSampler

    url = closed_port_url()
    for options in ("n_initial", ["n_initial"]):
        with pytest.raises(ConfigTypeError, match=r"^searcher_options must be a mapping"):
            LLAMBOSampler(base_url=url, model="m", searcher_options=options)
    with pytest.raises(ConfigError, match=r"unknown keys \['nope', 1\]"):
        LLAMBOSampler(base_url=url, model="m", searcher_options={"nope": 1, 1: 2})
    with pytest.raises(ConfigError, match=r"^timeout must be a finite float in"):
        LLAMBOSampler(base_url=url, model="m", timeout=1e10)
    with pytest.raises(ConfigError, match=r"^base_url must be an http"):
        LLAMBOSampler(base_url="localhost:8000", model="m")
