"""Study ``llm``: cost and robustness of the LLM-proposal searcher (LLAMBO), and its quality.

Always (no endpoint needed), against the scripted loopback server of ``tests/llm_server.py``:

* **cost**: per suggestion on a 1-D LR objective, wall milliseconds, Chat Completions calls,
  HTTP attempts and tokens with a healthy server, next to ``GPSearcher`` on the same loop;
* **faults**: the issue's mix (30 % garbage replies, 10 % timeouts, 10 % HTTP 503) and each
  failure alone: fallback rate, suggestions in bounds, exceptions, longest wait vs the
  configured timeout, events by kind;
* **replay**: an AutoLRS run (``logreg``) with ``LLMSearcher`` under the fault mix, then the
  same run replayed from its cache with the server down: are the stage records identical?

The scripted server answers at random, so none of this measures search quality. That part
runs only when an endpoint is configured (``AUTOLR_LLM_BASE_URL`` and ``AUTOLR_LLM_MODEL``,
optionally ``AUTOLR_LLM_API_KEY``; or the ``OPENAI_*`` equivalents): per bench task and
seed, the peak LR of a cosine schedule is searched with ``n_trials`` trials by
``LLMSearcher``, ``GPSearcher`` and random (Sobol) search; the figure of merit is the best
final validation loss found. Otherwise the report says plainly that it skipped.

``autolr bench --study llm [--quick] [--seeds N] [--out DIR]`` (needs ``openai``; the
loopback server is loaded from the source checkout's ``tests/``).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib.util
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from autolr._jsonio import write_json

__all__ = ["run"]

QUICK_TASKS = ("logreg",)
FULL_TASKS = ("logreg", "mlp")
FAULT_MIX = {"garbage": 0.3, "timeout": 0.1, "http_5xx": 0.1}
TIMEOUT = 0.5  # seconds per suggestion in the fault runs (the server's "timeout" sleeps 2x)


def _server_module() -> ModuleType:
    """``tests/llm_server.py`` of the source checkout (not part of the wheel)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "llm_server.py"
    if not path.exists():
        raise FileNotFoundError(
            f"--study llm needs the loopback server {path}; run it from a source checkout"
        )
    spec = importlib.util.spec_from_file_location("_autolr_llm_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _objective(lr: float, c: float) -> float:
    return (math.log10(lr) - c) ** 2


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))] if xs else math.nan


# ---------------------------------------------------------------------------------- cost
def _loop(searcher: Any, n: int, c: float) -> list[float]:
    """Alternates suggest(1)/observe as AutoLRS does; returns the wall time of each suggest."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        (cfg,) = searcher.suggest()
        times.append(time.perf_counter() - t0)
        searcher.observe(cfg, _objective(cfg["lr"], c))
    return times


def _cost(srv_mod: ModuleType, n: int, seeds: int) -> dict[str, Any]:
    from autolr.searchers import GPSearcher, Param
    from autolr.searchers._llm import LLMSearcher

    p = Param("lr", 1e-5, 1.0, log=True)
    llm_t: list[float] = []
    gp_t: list[float] = []
    usage = collections.Counter()
    n_fb = 0
    with srv_mod.LLMServer() as srv:
        for seed in range(seeds):
            s = LLMSearcher(
                [p],
                task="1-D LR search",
                base_url=srv.base_url,
                model="scripted",
                seed=seed,
                timeout=10.0,
            )
            llm_t += _loop(s, n, -2.0 + 0.3 * seed)
            n_fb += s.n_fallbacks
            usage.update(s.usage.as_dict())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gp_t += _loop(GPSearcher([p], seed=seed), n, -2.0 + 0.3 * seed)
    total = len(llm_t)
    return {
        "suggestions": total,
        "llm_ms_median": 1e3 * statistics.median(llm_t),
        "llm_ms_p90": 1e3 * _pct(llm_t, 0.9),
        "gp_ms_median": 1e3 * statistics.median(gp_t),
        "gp_ms_p90": 1e3 * _pct(gp_t, 0.9),
        "http_ms_mean": 1e3 * usage["seconds"] / total,
        "llm_ms_mean": 1e3 * statistics.fmean(llm_t),
        "calls_per_suggestion": usage["requests"] / total,
        "attempts_per_suggestion": usage["attempts"] / total,
        "prompt_tokens_per_suggestion": usage["prompt_tokens"] / total,
        "completion_tokens_per_suggestion": usage["completion_tokens"] / total,
        "fallback_rate": n_fb / total,
    }


# -------------------------------------------------------------------------------- faults
def _fault_run(
    srv_mod: ModuleType, url: str, n: int, seed: int, prefill: int = 0
) -> dict[str, Any]:
    """``n`` suggest/observe rounds; ``prefill`` observations first (past the warm start)."""
    from autolr.searchers import Param
    from autolr.searchers._llm import LLMSearcher

    p = Param("lr", 1e-5, 1.0, log=True)
    s = LLMSearcher(
        [p], task="1-D LR search", base_url=url, model="scripted", seed=seed, timeout=TIMEOUT
    )
    for i in range(prefill):
        lr = 10.0 ** (-4.5 + 4.0 * i / max(1, prefill - 1))
        s.observe({"lr": lr}, _objective(lr, -2.0))
    waits, llm_waits, in_bounds, exceptions = [], [], 0, 0
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            (cfg,) = s.suggest()
        except Exception:  # counted: the target is zero
            exceptions += 1
            continue
        waits.append(time.perf_counter() - t0)
        llm_waits.append(s.last_llm_seconds)
        in_bounds += p.low <= cfg["lr"] <= p.high
        s.observe(cfg, _objective(cfg["lr"], -2.0))
    kinds = collections.Counter(e["kind"] for e in s.events if e["fallback"])
    return {
        "suggestions": n,
        "fallbacks": s.n_fallbacks,
        "in_bounds": in_bounds,
        "exceptions": exceptions,
        "max_wait_s": max(llm_waits, default=math.nan),
        "median_wait_s": statistics.median(llm_waits) if llm_waits else math.nan,
        "max_suggest_s": max(waits, default=math.nan),
        "fallback_kinds": dict(kinds),
        "calls": s.usage.requests,
    }


def _faults(srv_mod: ModuleType, n_mix: int, n_single: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with srv_mod.LLMServer(faults=FAULT_MIX, seed=0, sleep=2 * TIMEOUT) as srv:
        out["mix"] = _fault_run(srv_mod, srv.base_url, n_mix, 0)
        out["mix"]["served"] = dict(collections.Counter(b for b, _ in srv.log))
    singles = {}
    for b in srv_mod.BEHAVIOURS:  # each fault the loopback server can serve on its own
        if b == "healthy":
            continue
        with srv_mod.LLMServer(behaviour=b, sleep=2 * TIMEOUT, retry_after=0.05) as srv:
            singles[b] = _fault_run(srv_mod, srv.base_url, n_single, 1, 4)
    # A port with no listener: the connection is refused.
    singles["refused"] = _fault_run(srv_mod, srv_mod.closed_port_url(), n_single, 1, 4)
    out["single"] = singles
    return out


# -------------------------------------------------------------------------------- replay
def _autolrs_run(url: str, cache: str, mode: str | None, steps: int) -> tuple[list, list, Any]:
    import torch

    from autolr import AutoLRS, BudgetPolicy
    from autolr.searchers import Param
    from autolr.searchers._llm import LLMSearcher

    from .tasks import TASKS

    task = TASKS["logreg"]
    inst = task.make(0)
    opt = task.make_optimizer(inst.model.parameters(), task.lr_range[0])
    searcher = LLMSearcher(
        [Param("lr", *task.lr_range, log=True)],
        task=task.description,
        base_url=url,
        model="scripted",
        seed=0,
        timeout=TIMEOUT,
        cache_dir=cache,
        cache_mode=mode,
        design="stratified",
    )
    # The plan this study was measured with (before the budget variant's defaults became
    # cooled windows and a 1 - sqrt decay on 2026-12-07): it compares searchers, not plans.
    policy = BudgetPolicy.for_budget(
        steps, searches=3, decay_frac=0.2, cooldown_frac=0.0, decay_shape="linear"
    )
    tuner = AutoLRS(
        inst.model, opt, lr_bounds=task.lr_range, max_steps=steps, searcher=searcher, policy=policy
    )
    torch.manual_seed(1)
    lrs = []
    for _ in range(steps):
        loss = inst.step(opt)
        lrs.append(opt.param_groups[0]["lr"])
        tuner.step(loss.item())
    stages = [dataclasses.asdict(s) for s in tuner.stages]
    return stages, lrs, searcher


def _replay(srv_mod: ModuleType, steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cache:
        with srv_mod.LLMServer(faults=FAULT_MIX, seed=1, sleep=2 * TIMEOUT) as srv:
            t0 = time.perf_counter()
            stages, lrs, live = _autolrs_run(srv.base_url, cache, None, steps)
            live_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        stages2, lrs2, replay = _autolrs_run(srv_mod.closed_port_url(), cache, "replay", steps)
        replay_s = time.perf_counter() - t0
    cands = [c["lr"] for s in stages for c in s["candidates"]]
    from .tasks import TASKS

    lo, hi = TASKS["logreg"].lr_range
    return {
        "steps": steps,
        "stages": len(stages),
        "candidates": len(cands),
        "llm_suggestions": live.n_llm,
        "fallbacks": live.n_fallbacks,
        "candidates_in_bounds": all(lo <= lr <= hi for lr in cands),
        "identical_stage_records": stages == stages2,
        "identical_lr_trace": lrs == lrs2,
        "replay_http_attempts": replay.usage.attempts,
        "live_s": live_s,
        "replay_s": replay_s,
    }


# ------------------------------------------------------------------------------- quality
def _endpoint() -> dict[str, str] | None:
    from autolr.searchers._llm_client import ENV_BASE_URL, ENV_MODEL, _env

    base_url, model = _env(ENV_BASE_URL), _env(ENV_MODEL)
    if not base_url or not model:
        return None
    return {"base_url": base_url, "model": model}


def _quality(tasks: tuple[str, ...], seeds: int, n_trials: int, quick: bool) -> dict[str, Any]:
    import torch

    from autolr.searchers import GPSearcher, Param, RandomSearcher
    from autolr.searchers._llm import LLMSearcher

    from .methods import METHODS, run_once
    from .tasks import TASKS

    torch.set_num_threads(1)
    rows = []
    for name in tasks:
        task = TASKS[name]
        steps = task.quick_budget if quick else task.budget
        p = Param("lr", *task.lr_range, log=True)
        for seed in range(seeds):
            for method in ("llm", "gp", "random"):
                if method == "llm":
                    s: Any = LLMSearcher(
                        [p],
                        task=f"{task.description}; peak LR of a cosine schedule, {steps} steps",
                        objective="final validation loss",
                        seed=seed,
                    )
                elif method == "gp":
                    s = GPSearcher([p], seed=seed)
                else:
                    s = RandomSearcher([p], seed=seed)
                best, trace = math.inf, []
                t0 = time.perf_counter()
                for _ in range(n_trials):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        (cfg,) = s.suggest()
                    v = run_once(task, METHODS["cosine"], seed, steps, lr=cfg["lr"])["final_val"]
                    s.observe(cfg, v)
                    best = min(best, v) if math.isfinite(v) else best
                    trace.append(best)
                row = {"task": name, "seed": seed, "method": method, "best": best, "trace": trace}
                row["seconds"] = time.perf_counter() - t0
                if method == "llm":
                    row["fallbacks"] = s.n_fallbacks
                    row["usage"] = s.usage.as_dict()
                rows.append(row)
                print(f"  quality {name} seed {seed} {method}: best {best:.4g}", flush=True)
    return {"n_trials": n_trials, "runs": rows}


# -------------------------------------------------------------------------------- report
def _markdown(res: dict[str, Any]) -> str:
    c, f, r = res["cost"], res["faults"], res["replay"]
    lines = [
        "# Study `llm`: LLM-proposal searcher (LLAMBO)",
        "",
        f"{res['meta']['platform']}, Python {res['meta']['python']}, load "
        f"{res['meta']['load']}. The loopback server answers at random: these numbers are "
        "about mechanics and cost, not search quality.",
        "",
        "## Cost per suggestion (healthy loopback server, 1-D LR search)",
        "",
        "| searcher | ms median | ms p90 | calls | HTTP attempts | prompt tokens | "
        "completion tokens | fallback rate |",
        "|---|---|---|---|---|---|---|---|",
        f"| LLMSearcher | {c['llm_ms_median']:.1f} | {c['llm_ms_p90']:.1f} | "
        f"{c['calls_per_suggestion']:.2f} | {c['attempts_per_suggestion']:.2f} | "
        f"{c['prompt_tokens_per_suggestion']:.0f} | {c['completion_tokens_per_suggestion']:.0f}"
        f" | {c['fallback_rate']:.0%} |",
        f"| GPSearcher | {c['gp_ms_median']:.1f} | {c['gp_ms_p90']:.1f} | - | - | - | - | - |",
        "",
        f"{c['suggestions']} suggestions; of the LLMSearcher's mean {c['llm_ms_mean']:.1f} ms, "
        f"{c['http_ms_mean']:.1f} ms are spent in Chat Completions calls (openai client, "
        "threads, the loopback server), the rest building prompts and parsing. Tokens are the "
        "scripted server's word counts.",
        "",
        f"## Faults (timeout {TIMEOUT} s per suggestion)",
        "",
        "| server behaviour | suggestions | fallback rate | in bounds | exceptions | "
        "max LLM wait s | max suggest s | fallback kinds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    entries = [("mix: 30 % garbage, 10 % timeout, 10 % 5xx", f["mix"])]
    entries += list(f["single"].items())
    for name, e in entries:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(e["fallback_kinds"].items())) or "-"
        lines.append(
            f"| {name} | {e['suggestions']} | {e['fallbacks'] / e['suggestions']:.0%} | "
            f"{e['in_bounds'] / e['suggestions']:.0%} | {e['exceptions']} | "
            f"{e['max_wait_s']:.2f} | {e['max_suggest_s']:.2f} | {kinds} |"
        )
    lines += [
        "",
        "The mix starts empty (warm start, then the sampler); each single fault starts from 4 "
        "observations (the sampler step). LLM wait: time spent on the LLM per suggestion "
        "(bounded by the timeout); suggest: the whole call, the GP fallback's compute included.",
        "",
        "## Replay of an AutoLRS run from the cache (server down)",
        "",
        f"`logreg`, {r['steps']} steps, fault mix: {r['stages']} stages, {r['candidates']} "
        f"candidates ({r['llm_suggestions']} suggestions by the LLM, {r['fallbacks']} "
        f"fallbacks), all in bounds: {r['candidates_in_bounds']}. Replayed: identical stage "
        f"records: **{r['identical_stage_records']}**, identical LR trace: "
        f"{r['identical_lr_trace']}, HTTP attempts during replay: {r['replay_http_attempts']} "
        f"({r['live_s']:.1f} s live, {r['replay_s']:.1f} s replay).",
        "",
        "## Search quality",
        "",
    ]
    q = res["quality"]
    if q is None:
        lines.append(
            "**Skipped**: no endpoint configured (set `AUTOLR_LLM_BASE_URL` and "
            "`AUTOLR_LLM_MODEL`, optionally `AUTOLR_LLM_API_KEY`). The scripted server "
            "cannot measure quality."
        )
    else:
        lines += [
            f"Endpoint {res['meta']['endpoint']}; best final validation loss after "
            f"{q['n_trials']} trials (cosine schedule, peak LR searched), median over seeds.",
            "",
            "| task | LLMSearcher | GPSearcher | random |",
            "|---|---|---|---|",
        ]
        for task in sorted({row["task"] for row in q["runs"]}):
            cells = []
            for m in ("llm", "gp", "random"):
                vals = [x["best"] for x in q["runs"] if x["task"] == task and x["method"] == m]
                cells.append(f"{statistics.median(vals):.4g}")
            lines.append(f"| {task} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Run the study; writes results.json and results.md into ``args.out``."""
    t_start = time.perf_counter()
    quick = bool(getattr(args, "quick", False))
    seeds = getattr(args, "seeds", None) or (1 if quick else 3)
    srv_mod = _server_module()
    print("llm study: cost", flush=True)
    cost = _cost(srv_mod, 10 if quick else 20, seeds)
    print("llm study: faults", flush=True)
    faults = _faults(srv_mod, 20 if quick else 50, 3 if quick else 6)
    print("llm study: replay", flush=True)
    replay = _replay(srv_mod, 240 if quick else 480)
    endpoint = _endpoint()
    quality = None
    if endpoint is None:
        print("llm study: quality part SKIPPED (set AUTOLR_LLM_BASE_URL and AUTOLR_LLM_MODEL)")
    else:
        print(f"llm study: quality against {endpoint['base_url']} ({endpoint['model']})")
        quality = _quality(QUICK_TASKS if quick else FULL_TASKS, seeds, 8 if quick else 12, quick)
    meta = {
        "quick": quick,
        "seeds": seeds,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "endpoint": None if endpoint is None else f"{endpoint['model']} @ {endpoint['base_url']}",
        "elapsed_s": time.perf_counter() - t_start,
    }
    res = {"meta": meta, "cost": cost, "faults": faults, "replay": replay, "quality": quality}
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "results.json"), res)
    with open(os.path.join(args.out, "results.md"), "w") as fh:
        fh.write(_markdown(res))
    print(f"llm study: done in {meta['elapsed_s']:.0f} s; results in {args.out}/")
    return 0


if __name__ == "__main__":  # python -m autolr.bench.llm [--quick] [--out DIR]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--out", default=os.path.join("bench-results", "llm"))
    raise SystemExit(run(parser.parse_args()))
