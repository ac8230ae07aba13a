"""LLMSearcher, its client and LLAMBOSampler against a real loopback Chat Completions server.

The server (``tests/llm_server.py``) scripts every failure the searcher must survive; it
tests mechanics only (its predictions are random), never search quality.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("openai")

from autolr import AutoLRS, BudgetPolicy, ConfigError, ConfigTypeError
from autolr.searchers import GPSearcher, Param, RandomSearcher
from autolr.searchers._base import _derive_seed
from autolr.searchers._llm import LLMSearcher, expected_improvement, extract_json
from autolr.searchers._llm_client import LLMClient, retry_after_seconds

from .conftest import make_regression, tiny_mlp
from .llm_server import LLMServer, closed_port_url

GOLDEN = Path(__file__).parent / "data" / "llm_prompts"
LR = Param("lr", 1e-5, 1.0, log=True)
# Observations of the sampler phase (>= n_initial, finite): best 1.0 at lr=1e-2.
OBS = [(1e-4, 3.0), (1e-3, 2.0), (1e-2, 1.0), (1e-1, 2.5)]
# Slack on the deadline for thread scheduling on a loaded 2-core CI machine.
SLACK = 0.5


@pytest.fixture(scope="module")
def server():
    with LLMServer(sleep=3.0) as srv:
        yield srv


@pytest.fixture
def srv(server):
    """The module's server, reset to healthy with no script."""
    server.behaviour, server.faults, server.retry_after, server.sleep = "healthy", {}, 0.05, 3.0
    server.set_script([])
    server.replies.clear()
    yield server
    server.set_script([])
    server.replies.clear()


def make(url: str, *, obs=OBS, fallback=None, **kw) -> LLMSearcher:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("seed", 0)
    s = LLMSearcher(
        [LR], task="tiny MLP regression", base_url=url, model="m", fallback=fallback, **kw
    )
    for lr, v in obs:
        s.observe({"lr": lr}, v)
    return s


def random_fallback() -> RandomSearcher:
    return RandomSearcher([LR], seed=7)


# --------------------------------------------------------------------------- parsing / EI
def test_extract_json_prose_fence_and_garbage() -> None:
    assert extract_json('Sure!\n```json\n{"configs": [{"lr": 0.1}]}\n```\nBye') == {
        "configs": [{"lr": 0.1}]
    }
    assert extract_json('Here: {"predictions": [1, 2]} (as asked) {"x": 1}') == {
        "predictions": [1, 2]
    }
    assert extract_json("a { broken [ reply") is None
    assert extract_json("no json at all") is None


def test_expected_improvement_matches_hand_values() -> None:
    # EI(mu, s; best) = s * (z Phi(z) + phi(z)), z = (best - mu) / s.
    assert expected_improvement(1.0, 0.5, 1.0) == pytest.approx(0.5 * 0.3989422804, rel=1e-9)
    # z = 1: 1 * (0.8413447461 + 0.2419707245)
    assert expected_improvement(0.0, 1.0, 1.0) == pytest.approx(1.0833154706, rel=1e-9)
    assert expected_improvement(0.9, 0.0, 1.0) == pytest.approx(0.1)
    assert expected_improvement(1.2, 0.0, 1.0) == 0.0


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    date = "Sun, 06 Dec 2026 04:00:10 GMT"
    now = 1796529600.0  # 2026-12-06 04:00:00 UTC
    assert retry_after_seconds({"Retry-After": date}, now=now) == pytest.approx(10.0)
    assert retry_after_seconds({}) is None


# ------------------------------------------------------------------------ healthy path
def _scored(srv, *predictions: str):
    """A searcher whose next suggestion proposes 0.003, 0.03 and 0.005 and gets these
    two scoring replies."""
    s = make(srv.base_url, n_candidates=3, n_samples=2)
    srv.replies.extend(['{"configs": [{"lr": 0.003}, {"lr": 0.03}, {"lr": 0.005}]}', *predictions])
    return s


def test_choice_by_expected_improvement_uses_the_spread(srv) -> None:
    s = _scored(
        srv, "Predictions: [0.9, 0.5, 0.95]", '```json\n{"predictions": [0.9, 1.5, 0.95]}\n```'
    )
    cfgs = s.suggest(2)
    # best = 1.0; spread floor 1e-3 * (3 - 1) = 0.002. EI: 0.003 -> 0.1 (mean 0.9, sd floor),
    # 0.03 -> 0.5 * phi(0) = 0.1995 (mean 1.0, sd 0.5), 0.005 -> 0.05. The mean alone would
    # pick 0.003 first; EI prefers the uncertain 0.03.
    assert [c["lr"] for c in cfgs] == pytest.approx([0.03, 0.003], rel=1e-9)
    assert s.last_source == "llm" and s.events == []
    assert [k for _, k in srv.log[-3:]] == ["configs", "predictions", "predictions"]


def test_warm_start_is_zero_shot_and_in_bounds(srv) -> None:
    s = make(srv.base_url, obs=[])
    cfgs = s.suggest(3)
    assert s.last_source == "llm-warm"
    assert all(LR.low <= c["lr"] <= LR.high for c in cfgs)
    assert len({c["lr"] for c in cfgs}) == 3
    prompt = srv.bodies[-1]["messages"][-1]["content"]
    assert "tiny MLP regression" in prompt and "->" not in prompt  # no results shown
    assert srv.log[-1] == ("healthy", "configs")
    # More configs than n_candidates: the LLM is asked for at least n.
    s = make(srv.base_url, obs=[], n_candidates=2)
    assert len({c["lr"] for c in s.suggest(5)}) == 5 and s.last_source == "llm-warm"


def test_healthy_loop_and_usage(srv) -> None:
    s = make(srv.base_url, obs=[], n_samples=2)
    for _ in range(6):
        (c,) = s.suggest()
        assert LR.low <= c["lr"] <= LR.high
        s.observe(c, (math.log10(c["lr"]) + 2) ** 2)
    assert s.n_llm == 6 and s.n_fallbacks == 0
    # 3 warm-start calls, then 3 x (1 proposal + 2 scoring calls).
    assert s.usage.requests == 3 + 3 * 3 == s.usage.attempts
    assert s.usage.prompt_tokens > 0 and s.usage.completion_tokens > 0


# --------------------------------------------------------------------------- failures
FAILURES = [
    # behaviour, expected fallback kind, other event kind expected (or None)
    ("garbage", "malformed", None),
    ("nan", "nan", None),
    ("out_of_bounds", "out_of_bounds", None),
    ("duplicates", "too_few", "duplicate"),
    ("too_few", "too_few", None),
    ("timeout", "timeout", None),
    ("trickle", "timeout", None),
    ("http_4xx", "http_4xx", None),
    ("http_5xx", "http_5xx", None),
    ("rate_limit", "rate_limit", None),
]


@pytest.mark.parametrize("warm", [False, True], ids=["sampler", "warm"])
@pytest.mark.parametrize(("behaviour", "kind", "other"), FAILURES, ids=[f[0] for f in FAILURES])
def test_failure_falls_back_for_that_suggestion(srv, behaviour, kind, other, warm) -> None:
    # The warm start needs n valid configs; each of its 2 rounds yields one of these.
    n = 3 if warm and behaviour in ("duplicates", "too_few") else 1
    srv.behaviour = behaviour
    # Short only where the timeout is what is tested: elsewhere a loaded CI machine (or the
    # first openai import) must not turn a fast garbage reply into a timeout.
    timeout = 0.3 if kind == "timeout" else 3.0
    obs = [] if warm else OBS
    s = make(srv.base_url, obs=obs, timeout=timeout, fallback=random_fallback())
    oracle = random_fallback()
    t0 = time.monotonic()
    cfgs = s.suggest(n)
    elapsed = time.monotonic() - t0
    assert elapsed < timeout + SLACK and s.last_llm_seconds <= elapsed
    assert cfgs == oracle.suggest(n)  # exactly the fallback's suggestion
    assert all(LR.low <= c["lr"] <= LR.high for c in cfgs)
    assert s.last_source == "gp-fallback" and s.n_fallbacks == 1
    last = s.events[-1]
    assert last["fallback"] and last["call"] == 0
    assert last["kind"] == kind or (kind == "timeout" and last["kind"] == "deadline")
    if other:
        assert any(e["kind"] == other and not e["fallback"] for e in s.events)
    # The next suggestion tries the LLM again (a longer timeout: the machine may be busy).
    srv.behaviour, s.timeout = "healthy", 5.0
    s.suggest()
    assert s.last_source in ("llm", "llm-warm")


def test_refused_connection_falls_back_to_the_gp(srv) -> None:
    s = make(closed_port_url(), timeout=0.5)
    oracle = GPSearcher([LR], seed=_derive_seed(0, -1), n_initial=3)
    for lr, v in OBS:
        oracle.observe({"lr": lr}, v)
    assert s.suggest() == oracle.suggest()
    assert s.events[-1]["kind"] == "connection" and s.events[-1]["fallback"]
    # The fallback's own work is not bounded by the timeout, but the LLM wait is.
    assert s.last_llm_seconds < 0.5 + SLACK


@pytest.mark.parametrize(("behaviour", "kind"), [("garbage", "malformed"), ("nan", "nan")])
def test_scoring_failures(srv, behaviour, kind) -> None:
    s = make(srv.base_url, n_samples=2, fallback=random_fallback())
    srv.set_script(["healthy", behaviour, behaviour])
    s.suggest()
    assert s.last_source == "gp-fallback" and s.events[-1]["kind"] == kind
    # One bad sample of three: the others still score every candidate.
    s = make(srv.base_url, n_samples=3, fallback=random_fallback())
    srv.set_script(["healthy", behaviour])
    s.suggest()
    assert s.last_source == "llm"
    assert [e["kind"] for e in s.events] == [kind] and not s.events[0]["fallback"]


def test_5xx_is_retried_then_succeeds(srv) -> None:
    s = make(srv.base_url, obs=[], max_retries=2)
    srv.set_script(["http_5xx", "http_5xx", "healthy"])
    s.suggest()
    assert s.last_source == "llm-warm" and s.usage.attempts == 3 and s.usage.requests == 1
    assert s.events == []


def test_retry_after_is_honoured(srv) -> None:
    srv.retry_after = 0.4  # longer than the client's first backoff (0.25 s)
    s = make(srv.base_url, obs=[], timeout=2.0)
    srv.set_script(["rate_limit", "healthy"])
    t0 = time.monotonic()
    s.suggest()
    assert time.monotonic() - t0 >= 0.4
    assert s.last_source == "llm-warm" and s.usage.attempts == 2


def test_retry_after_past_the_deadline_gives_up_at_once(srv) -> None:
    srv.retry_after = 30.0
    s = make(srv.base_url, obs=[], timeout=3.0, fallback=random_fallback())
    srv.set_script(["rate_limit"])
    t0 = time.monotonic()
    s.suggest()
    assert time.monotonic() - t0 < 1.0  # no pointless wait for a retry it cannot make
    assert s.events[-1]["kind"] == "rate_limit" and s.usage.attempts == 1


def test_concurrency_cap(srv) -> None:
    srv.behaviour, srv.sleep = "timeout", 0.3  # every request takes 0.3 s
    s = make(srv.base_url, n_samples=4, max_concurrency=2, timeout=5.0)
    srv.set_script(["healthy"])  # the proposal answers at once
    t0 = time.monotonic()
    s.suggest()
    # 4 scoring calls, 2 at a time, 0.3 s each: two waves.
    assert time.monotonic() - t0 >= 0.6
    assert s.last_source == "llm"


# --------------------------------------------------------------------- cache and state
def test_cache_replays_offline_exactly(tmp_path, srv) -> None:
    srv.faults = {"garbage": 0.3, "http_5xx": 0.1}
    live = make(srv.base_url, obs=[], cache_dir=tmp_path, timeout=1.0)
    replay = make(closed_port_url(), obs=[], cache_dir=tmp_path, cache_mode="replay")
    for i in range(6):
        (a,) = live.suggest()
        (b,) = replay.suggest()
        assert a == b
        v = (math.log10(a["lr"]) + 2 + 0.1 * i) ** 2
        live.observe(a, v)
        replay.observe(b, v)
    assert replay.usage.attempts == 0 and replay.usage.cache_hits > 0
    assert live.n_llm == replay.n_llm


def test_state_dict_roundtrip_weights_only(srv) -> None:
    s = make(srv.base_url, obs=OBS[:2])
    for _ in range(3):
        (c,) = s.suggest()
        s.observe(c, (math.log10(c["lr"]) + 2) ** 2, noise=0.1)
    s.observe({"lr": 0.9}, math.nan)
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    t = make(srv.base_url, obs=[])
    t.load_state_dict(state)
    assert t.observations == s.observations and t.noises == s.noises
    assert t.suggest(2) == s.suggest(2)  # same requests, same (seeded) replies
    # The fallback's state travels too: with the LLM down both fall back identically.
    u = make(closed_port_url(), obs=[], timeout=0.3)
    u.load_state_dict(s.state_dict())
    v = make(closed_port_url(), obs=[], timeout=0.3)
    v.load_state_dict(s.state_dict())
    assert u.suggest() == v.suggest() and u.last_source == "gp-fallback"
    with pytest.raises(ValueError, match="fallback"):
        t.load_state_dict(GPSearcher([LR]).state_dict())


# ---------------------------------------------------------------------------- prompts
def golden_searcher() -> LLMSearcher:
    s = LLMSearcher(
        [LR, Param("wd", 0.0, 0.05), Param("beta", 0.123456, 0.987654)],
        task="ResNet-18 on CIFAR-10, SGD with momentum 0.9, batch 128",
        objective="validation loss",
        base_url=closed_port_url(),
        model="m",
        max_context=6,
        seed=0,
    )
    rows = [
        (3e-4, 0.01, 0.9, 1.234),
        (0.3, 0.0, 0.5, math.nan),
        (1e-2, 0.02, 0.8, 0.5678),
        (2e-3, 0.04, 0.3, 0.789),
        (5e-5, 0.001, 0.2, 2.1),
        (0.1, 0.03, 0.7, math.inf),
        (7e-3, 0.015, 0.85, 0.5901),
        (4e-2, 0.005, 0.95, 0.95),
        (1e-3, 0.025, 0.6, 0.61),
    ]
    for lr, wd, beta, v in rows:
        s.observe({"lr": lr, "wd": wd, "beta": beta}, v)
    return s


def golden_prompts() -> dict[str, str]:
    s = golden_searcher()
    fresh = LLMSearcher(
        s.params, task=s.task, objective=s.objective, base_url=closed_port_url(), model="m"
    )
    pending = [(5e-3, 0.01, 0.5)]
    return {
        "warm.txt": fresh.warm_prompt(4),
        "candidates.txt": s.candidate_prompt(8, pending),
        "surrogate.txt": s.surrogate_prompt([(6e-3, 0.012, 0.81), (0.02, 0.0, 0.9)]),
    }


def test_golden_prompts() -> None:
    prompts = golden_prompts()
    if os.environ.get("AUTOLR_UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in prompts.items():
            (GOLDEN / name).write_text(text + "\n")
    for name, text in prompts.items():
        assert (GOLDEN / name).read_text() == text + "\n", f"{name} changed"


def test_context_is_bounded_and_informative() -> None:
    s = golden_searcher()
    rows = s.context_rows()
    raw = s._raw_values
    assert len(rows) == 6
    # Best half: the 3 lowest finite values (indices 2, 6, 8); the newest failure (5) of at
    # most 6 // 4 = 1; then the two points farthest from those chosen.
    assert {2, 6, 8, 5} <= set(rows)
    assert 1 not in rows  # the older failure
    finite = [raw[i] for i in rows if math.isfinite(raw[i])]
    assert finite == sorted(finite, reverse=True)  # worst first, best last
    text = s.candidate_prompt(8)
    assert text.count("} -> ") == 6 and "(6 of 9)" in text
    # Log-scale parameters in natural units, bounds rounded inward (never out of bounds).
    assert '{"lr":0.01,"wd":0.02,"beta":0.8} -> 0.5678' in text
    assert '"beta":{"low":0.1235,"high":0.9876' in text
    # Target: best - alpha * (worst - best) = 0.5678 - 0.1 * (2.1 - 0.5678) = 0.41458
    assert "validation loss = 0.4146," in text


# ------------------------------------------------------------------ errors and imports
def test_config_errors(monkeypatch) -> None:
    url = closed_port_url()
    with pytest.raises(
        ConfigError, match=r"timeout must be a finite float in \(0, 1e\+06\], got 0"
    ):
        LLMSearcher([LR], base_url=url, model="m", timeout=0)
    with pytest.raises(ConfigTypeError, match=r"client must be an autolr\.searchers\.LLMClient"):
        LLMSearcher([LR], client="http://x")
    with pytest.raises(ConfigError, match="n_candidates must be an int >= 1, got 0"):
        LLMSearcher([LR], base_url=url, model="m", n_candidates=0)
    with pytest.raises(ConfigError, match="cache_mode must be one of"):
        LLMClient(base_url=url, model="m", cache_mode="sometimes")
    for var in ("AUTOLR_LLM_MODEL", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match=r"model must be a non-empty str.*AUTOLR_LLM_MODEL"):
        LLMSearcher([LR], base_url=url)
    monkeypatch.setenv("AUTOLR_LLM_MODEL", "from-env")
    monkeypatch.setenv("AUTOLR_LLM_BASE_URL", url)
    assert LLMSearcher([LR]).client.model == "from-env"


def test_import_autolr_does_not_import_openai() -> None:
    code = (
        "import sys, autolr, autolr.searchers, autolr.searchers._llm, "
        "autolr.searchers._llm_client; print('openai' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------- AutoLRS under faults
def autolrs_run(url: str, cache: Path, mode: str | None) -> tuple[list, list, LLMSearcher]:
    x, y = make_regression(256, 8, seed=0)
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    searcher = LLMSearcher(
        [Param("lr", 1e-3, 1.0, log=True)],
        task="tiny MLP regression",
        base_url=url,
        model="m",
        timeout=0.3,
        seed=0,
        cache_dir=cache,
        cache_mode=mode,
        n_samples=2,
        n_initial=2,
        design="stratified",
    )
    policy = BudgetPolicy.for_budget(240, searches=3, decay_frac=0.2)
    tuner = AutoLRS(
        model, opt, lr_bounds=(1e-3, 1.0), max_steps=240, searcher=searcher, policy=policy
    )
    g = torch.Generator().manual_seed(1)
    lrs = []
    for _ in range(240):
        idx = torch.randint(0, 256, (32,), generator=g)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
        tuner.step(loss.item())
    return [dataclasses.asdict(s) for s in tuner.stages], lrs, searcher


def test_autolrs_under_faults_replays_identically_from_cache(tmp_path) -> None:
    with LLMServer(
        faults={"garbage": 0.3, "timeout": 0.1, "http_5xx": 0.1}, seed=3, sleep=1.0
    ) as srv:
        stages, lrs, live = autolrs_run(srv.base_url, tmp_path, None)
        served = {b for b, _ in srv.log}
    assert {"garbage", "healthy"} <= served  # the fault mix was exercised
    cands = [c["lr"] for s in stages for c in s["candidates"]]
    assert len(cands) >= 8 and all(1e-3 <= lr <= 1.0 for lr in cands)
    assert live.n_llm > 0 and live.n_fallbacks > 0, (live.n_llm, live.n_fallbacks, live.events)
    # Server down, replay from the cache: same stage records, same LR trace, no network.
    stages2, lrs2, replay = autolrs_run(closed_port_url(), tmp_path, "replay")
    assert stages2 == stages and lrs2 == lrs
    assert replay.usage.attempts == 0
    assert (replay.n_llm, replay.n_fallbacks) == (live.n_llm, live.n_fallbacks)


# --------------------------------------------------------------------------- Optuna
optuna = pytest.importorskip("optuna")

from optuna.testing.pytest_samplers import (  # noqa: E402
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)

from autolr.integrations._optuna_llambo import LLAMBOSampler  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
FAST = {"n_samples": 1, "n_candidates": 4, "n_initial": 2}


class TestLLAMBOSamplerContract(
    BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase
):
    @pytest.fixture
    def sampler(self, server):
        return lambda: LLAMBOSampler(
            seed=0, base_url=server.base_url, model="m", timeout=5.0, searcher_options=FAST
        )


@pytest.fixture(scope="module")
def faulty_server():
    faults = {"garbage": 0.3, "http_5xx": 0.1, "nan": 0.1, "out_of_bounds": 0.1}
    with LLMServer(faults=faults, seed=5) as srv:
        yield srv


@pytest.mark.slow
class TestLLAMBOSamplerContractUnderFaults(BasicSamplerTestCase, SingleOnlySamplerTestCase):
    """The basic contract with 60 % of the replies broken: the GP fallback keeps it. (The
    relative-sampling suite under faults passes too, but its GP fits take minutes.)"""

    @pytest.fixture
    def sampler(self, faulty_server):
        return lambda: LLAMBOSampler(
            seed=0,
            client=LLMClient(base_url=faulty_server.base_url, model="m", backoff=0.01),
            timeout=5.0,
            searcher_options=FAST,
        )


def objective(trial) -> float:
    x = trial.suggest_float("x", 1e-4, 1.0, log=True)
    k = trial.suggest_int("k", 1, 8)
    c = trial.suggest_categorical("c", ["a", "b"])
    return (math.log10(x) + 2) ** 2 + 0.1 * k + (c == "b")


def test_llambo_sampler_numeric_through_llm_and_stateless(tmp_path, srv) -> None:
    path = tmp_path / "a.db"
    sampler = LLAMBOSampler(seed=1, base_url=srv.base_url, model="m", searcher_options=FAST)
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="s", sampler=sampler)
    study.optimize(objective, n_trials=5)
    sources = [t.system_attrs.get("autolr:source") for t in study.trials]
    assert sources[0] is None  # the first trial has no relative space yet
    # n_initial=2 observations (trial 0 counts) before the sampler step takes over.
    assert sources[1:] == ["llm-warm", "llm", "llm", "llm"]
    for t in study.trials[1:]:
        assert set(sampler.infer_relative_search_space(study, t)) == {"k", "x"}
    # A fresh sampler (new process, same seed) on a copy of the storage decides alike.
    shutil.copy(path, tmp_path / "b.db")
    fresh = LLAMBOSampler(seed=1, base_url=srv.base_url, model="m", searcher_options=FAST)
    a = study.ask()
    b = optuna.load_study(
        study_name="s", storage=f"sqlite:///{tmp_path / 'b.db'}", sampler=fresh
    ).ask()
    assert a.number == b.number
    assert a.suggest_float("x", 1e-4, 1.0, log=True) == b.suggest_float("x", 1e-4, 1.0, log=True)
    assert a.suggest_int("k", 1, 8) == b.suggest_int("k", 1, 8)


def test_llambo_workers_sharing_a_seed_start_with_distinct_trials(tmp_path) -> None:
    # Two workers (samplers) with one seed on one storage: the first trials have no search
    # space yet, so they are independent draws; seeded per trial, trials 0 and 1 differ,
    # while the same trial number replays the same draw.
    storage = f"sqlite:///{tmp_path / 'w.db'}"
    optuna.create_study(study_name="w", storage=storage)
    a, b = (
        optuna.load_study(
            study_name="w", storage=storage,
            sampler=LLAMBOSampler(seed=7, base_url=closed_port_url(), model="m", timeout=0.2),
        ).ask()
        for _ in range(2)
    )  # fmt: skip
    assert (a.number, b.number) == (0, 1)
    xa, xb = (t.suggest_float("x", 1e-4, 1.0, log=True) for t in (a, b))
    assert xa != xb
    replay = LLAMBOSampler(seed=7, base_url=closed_port_url(), model="m", timeout=0.2)
    study = optuna.create_study(sampler=replay)
    assert study.ask().suggest_float("x", 1e-4, 1.0, log=True) == xa


def test_llambo_sampler_survives_a_dead_endpoint_and_maximises(srv) -> None:
    sampler = LLAMBOSampler(seed=0, base_url=closed_port_url(), model="m", timeout=0.2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: -objective(t), n_trials=4)
    assert [t.system_attrs.get("autolr:source") for t in study.trials[1:]] == ["gp-fallback"] * 3
    assert sampler.last_info["events"][-1]["kind"] == "connection"
    # Maximisation: the prompt shows the negated values, lower is better.
    sampler = LLAMBOSampler(seed=0, base_url=srv.base_url, model="m", searcher_options=FAST)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: -objective(t), n_trials=4)
    prompts = [b["messages"][-1]["content"] for b in srv.bodies]
    proposal = [p for p in prompts if '{"configs": [...]}' in p][-1]  # the last trial's
    best = min(-t.value for t in study.trials[:-1])  # negated: lower is better
    assert f"Best negative objective so far: {best:.4g}." in proposal


def test_llambo_sampler_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"searcher_options has unknown keys \['nope'\]"):
        LLAMBOSampler(base_url=closed_port_url(), model="m", searcher_options={"nope": 1})
    with pytest.raises(ConfigError, match="n_samples must be an int >= 1, got 0"):
        LLAMBOSampler(base_url=closed_port_url(), model="m", searcher_options={"n_samples": 0})


# ------------------------------------------------------------------------- benchmark
def test_bench_fault_run_and_skipped_quality(srv, monkeypatch) -> None:
    from autolr.bench import llm as bench
    from tests import llm_server

    srv.faults = {"garbage": 0.5, "http_5xx": 0.5}  # every request fails one way or another
    r = bench._fault_run(llm_server, srv.base_url, 3, 0, prefill=4)
    assert (r["suggestions"], r["fallbacks"], r["in_bounds"], r["exceptions"]) == (3, 3, 3, 0)
    assert r["max_wait_s"] <= bench.TIMEOUT + SLACK
    assert sum(r["fallback_kinds"].values()) == 3
    assert set(r["fallback_kinds"]) <= {"malformed", "http_5xx"}
    for var in ("AUTOLR_LLM_BASE_URL", "OPENAI_BASE_URL", "AUTOLR_LLM_MODEL", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    assert bench._endpoint() is None
    mix = {**r, "served": {}}
    res = {
        "meta": {"platform": "p", "python": "3", "load": 0.0, "endpoint": None},
        "cost": {
            k: 1.0
            for k in (
                "llm_ms_median",
                "llm_ms_mean",
                "http_ms_mean",
                "llm_ms_p90",
                "gp_ms_median",
                "gp_ms_p90",
                "calls_per_suggestion",
                "attempts_per_suggestion",
                "prompt_tokens_per_suggestion",
                "completion_tokens_per_suggestion",
                "fallback_rate",
            )
        }
        | {"suggestions": 1},
        "faults": {"mix": mix, "single": {"garbage": r}},
        "replay": {
            "steps": 1,
            "stages": 1,
            "candidates": 1,
            "llm_suggestions": 1,
            "fallbacks": 0,
            "candidates_in_bounds": True,
            "identical_stage_records": True,
            "identical_lr_trace": True,
            "replay_http_attempts": 0,
            "live_s": 1.0,
            "replay_s": 1.0,
        },
        "quality": None,
    }
    md = bench._markdown(res)
    assert "**Skipped**: no endpoint configured" in md and "| garbage | 3 | 100% | 100% | 0 |" in md


def test_predictions_past_the_float_square_range_are_scored(srv) -> None:
    # A broken reply with huge (finite) predictions: their spread went through (v - mu) ** 2,
    # which raises OverflowError past ~1e154 and ended the suggestion with a crash.
    s = _scored(srv, '{"predictions": [0.9, 1e200, 0.95]}', '{"predictions": [0.9, -1e200, 0.95]}')
    cfgs = s.suggest(1)
    assert s.last_source == "llm" and len(cfgs) == 1
    assert LR.low <= cfgs[0]["lr"] <= LR.high
