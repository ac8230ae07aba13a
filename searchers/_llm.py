"""LLM-proposal search (LLAMBO, Liu et al., ICLR 2024) over an OpenAI-compatible endpoint.

Each suggestion is one of:

* **warm start** (fewer than ``n_initial`` observed or running configs, or no finite result
  yet): one zero-shot call with the task description and the search space asks for diverse
  configurations; the first ``n`` valid ones are used;
* **candidate sampling + LLM surrogate**: one call shows the observations and asks for
  ``n_candidates`` configurations expected to reach a *target* value better than the best
  seen (``best - alpha * range``); then ``n_samples`` calls (concurrent) ask the LLM to
  predict each candidate's value. Per candidate, the mean and spread of the predictions give
  an expected improvement over the best value, and the ``n`` highest are chosen.

Replies are parsed leniently (JSON anywhere in the text, code fences and prose around it)
and validated strictly: entries that are not numbers, NaN, outside the bounds (never
clipped) or within ``dup_tol`` of an observed, running or already proposed config are
dropped. A suggestion *falls back* to the embedded :class:`~autolr.searchers.GPSearcher`
(which sees the same observations) when a proposal call fails (timeout, refused connection,
HTTP 4xx/5xx, 429 after retries, no time left), when ``max_rounds`` proposal calls leave
fewer than ``max(n, min_candidates)`` valid configs, or when no scoring call gives a finite
prediction for every candidate. Each fallback and each dropped reply or entry is recorded in
:attr:`LLMSearcher.events`; nothing raises into the caller, and the searcher never waits
longer than ``timeout`` per suggestion, retries included.
"""

from __future__ import annotations

import copy
import decimal
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from autolr._errors import ConfigTypeError, StateError
from autolr._forward import keyword_only, set_forwarding_signature
from autolr._stats import std_dev
from autolr._validate import check_float, check_int

from ._base import Param, Searcher, _derive_seed
from ._gp import GPSearcher
from ._llm_client import MAX_TIMEOUT, ChatRequest, LLMClient, LLMError, Usage, client_or_new

__all__ = ["LLMSearcher"]

SYSTEM_PROMPT = (
    "You help tune the hyperparameters of a machine-learning training run. "
    "Reply with JSON only, no prose."
)
# Kinds of events (see LLMSearcher.events); transport kinds come from LLMError.
EVENT_KINDS = (
    "timeout",
    "connection",
    "http_4xx",
    "http_5xx",
    "rate_limit",
    "deadline",
    "cache_miss",
    "protocol",
    "malformed",
    "nan",
    "out_of_bounds",
    "duplicate",
    "too_few",
    "internal",
)
# Sampling settings of the released LLAMBO scripts (candidates 0.8, surrogate 0.7; top_p 0.95).
_T_PROPOSE, _T_SCORE, _TOP_P = 0.8, 0.7, 0.95
_MAX_EVENTS = 1000
_RESERVE = 0.05  # seconds of the timeout kept for work after the last reply (at most)
_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
# Most significant digits in prompts: a float64 has 17, more would only print binary noise.
_MAX_DIGITS = 17
# Bounds are rounded in a private decimal context (the thread's may be changed by the user).
_DECIMAL = decimal.Context(prec=40)
# Most entries of one proposal reply that are read, per config asked for.
_ENTRIES_PER_CONFIG = 4


class _Fallback(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def _fmt(x: float, digits: int) -> str:
    """``x`` with ``digits`` significant digits, as a JSON number (``1e-05``, ``0.0316``)."""
    return f"{x:.{digits}g}"


def _fmt_bound(x: float, digits: int, *, low: bool) -> str:
    """A bound rounded *inward* to ``digits`` significant digits, so a value copied from the
    prompt is never out of bounds.

    Example:
        >>> _fmt_bound(0.987654, 4, low=False), _fmt_bound(0.123456, 4, low=True)
        ('0.9876', '0.1235')
    """
    d = decimal.Decimal(repr(float(x)))
    if d != 0:
        q = decimal.Decimal(1).scaleb(d.adjusted() - digits + 1, context=_DECIMAL)
        rounding = decimal.ROUND_CEILING if low else decimal.ROUND_FLOOR
        d = d.quantize(q, rounding=rounding, context=_DECIMAL)
    s = _fmt(float(d), digits)
    if (low and float(s) < x) or (not low and float(s) > x):
        return repr(float(x))
    return s


def extract_json(text: str, deadline: float | None = None) -> Any:
    """The first JSON object or array in ``text`` (code fences and prose ignored).

    With a ``deadline`` (a :func:`time.monotonic` time), the search gives up (``None``)
    once it has passed.

    Example:
        >>> extract_json('Sure: ```json\\n{"configs": [{"lr": 0.1}]}\\n``` ok')
        {'configs': [{'lr': 0.1}]}
        >>> extract_json("no json here") is None
        True
    """
    if not isinstance(text, str):
        return None
    chunks = [m.group(1) for m in _FENCE_RE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in chunks:
        chunk = chunk.strip()
        for i, ch in enumerate(chunk):
            if ch not in "{[":
                continue
            if deadline is not None and time.monotonic() > deadline:
                return None
            try:
                obj, _ = decoder.raw_decode(chunk, i)
            except (ValueError, RecursionError):  # RecursionError: nested too deep
                continue
            if isinstance(obj, (dict, list)):
                return obj
    return None


def _number(v: Any) -> float | None:
    """A real number from a JSON value (numbers and numeric strings; not bools)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:  # an int past the float range: invalid, like inf
            return math.inf if v > 0 else -math.inf
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def expected_improvement(mean: float, std: float, best: float) -> float:
    """Analytic EI of a Gaussian prediction below ``best`` (minimisation).

    Example:
        >>> round(expected_improvement(0.0, 1.0, 0.0), 6)  # std * phi(0)
        0.398942
        >>> expected_improvement(2.0, 0.0, 1.0)
        0.0
    """
    if std <= 0.0:
        return max(best - mean, 0.0)
    z = (best - mean) / std
    cdf = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return std * (z * cdf + pdf)


# LLMClient's keyword arguments: LLMSearcher takes them and forwards them when it builds its
# client, so they keep LLMClient's names, defaults and checks (and none can be forgotten).
_CLIENT_ARGS = keyword_only(LLMClient)


class LLMSearcher(Searcher):
    """LLAMBO-style search: an LLM proposes configs and scores them; GP fallback on failure.

    See the module docstring for the algorithm and the failure rules. Observations are shown
    to the LLM compactly and always in the same form (``{"lr":0.003162} -> 0.4123``, values
    with ``digits`` significant digits, log-scale parameters in natural units, failed runs
    as ``diverged``), at most ``max_context`` of them: the best half, up to a quarter of
    failures (most recent first), and the rest chosen to spread over the box.

    Args:
        params: The search dimensions.
        task: Short description of the training run (model, data, optimizer), used by all
            prompts; the zero-shot warm start rests on it.
        objective: Name of the minimised value in the prompts.
        client: An :class:`LLMClient` (shared between searchers to share its cache and
            concurrency cap); ``None`` builds one from ``client_settings``.
        timeout: Most seconds one ``suggest`` waits for the LLM, all calls and retries
            included (the GP fallback's own compute comes on top); at most ``1e6``.
        seed: Seed of all randomness (request seeds and the fallback GP).
        n_initial: Configs (observed or running) before the warm start gives way to the
            candidate sampler.
        n_candidates: Configs asked for per proposal call.
        min_candidates: Fewest valid configs a sampler step needs (default
            ``max(1, n_candidates // 2)``); the warm start needs ``n``.
        n_samples: Scoring calls per sampler step (LLAMBO's Monte-Carlo samples).
        alpha: Target offset: the sampler asks for ``best - alpha * (worst - best)``;
            ``alpha > 0`` extrapolates past the best, ``-1 <= alpha < 0`` aims inside the
            observed range.
        max_context: Most observations shown per prompt.
        max_rounds: Proposal calls per suggestion while too few configs are valid.
        dup_tol: Configs closer than this in every unit-cube coordinate to a known one are
            duplicates.
        digits: Significant digits of the numbers in prompts (2 to 17).
        fallback: A fresh searcher used on failure (default ``GPSearcher`` with this
            ``n_initial`` and ``design``); it gets this searcher's bounds and receives every
            observation.
        design: Initial design of the default fallback.
        **client_settings: :class:`LLMClient`'s arguments (``base_url``, ``api_key``,
            ``model``, ``max_retries``, ``backoff``, ``max_concurrency``, ``cache_dir``,
            ``cache_mode``; same defaults and checks), used when ``client`` is ``None`` (see
            there; environment variables ``AUTOLR_LLM_BASE_URL``, ``AUTOLR_LLM_API_KEY``,
            ``AUTOLR_LLM_MODEL``).

    Raises:
        ConfigError, ConfigTypeError: On invalid arguments or missing model/credentials.
        ImportError: ``openai`` is missing (``pip install "autolr[llm]"``).

    Example:
        >>> from autolr.searchers import Param
        >>> from autolr.searchers._llm import LLMSearcher
        >>> s = LLMSearcher([Param("lr", 1e-5, 1.0, log=True)], task="ResNet-18 on CIFAR-10",
        ...                 base_url="http://127.0.0.1:9/v1", model="m", timeout=0.5, seed=0)
        >>> (cfg,) = s.suggest()   # nothing listens on port 9: the GP fallback answers
        >>> 1e-5 <= cfg["lr"] <= 1.0, s.events[-1]["kind"], s.last_source
        (True, 'connection', 'gp-fallback')
    """

    def __init__(
        self,
        params: Sequence[Param],
        *,
        task: str = "",
        objective: str = "loss",
        client: LLMClient | None = None,
        timeout: float = 30.0,
        seed: int | None = None,
        n_initial: int = 3,
        n_candidates: int = 8,
        min_candidates: int | None = None,
        n_samples: int = 3,
        alpha: float = 0.1,
        max_context: int = 20,
        max_rounds: int = 2,
        dup_tol: float = 1e-3,
        digits: int = 4,
        fallback: Searcher | None = None,
        design: str = "sobol",
        **client_settings: Any,
    ) -> None:
        unknown = sorted(set(client_settings) - set(_CLIENT_ARGS))
        if unknown:
            raise ConfigTypeError(
                f"LLMSearcher got unexpected keyword arguments {unknown}; besides its own it "
                f"takes LLMClient's {list(_CLIENT_ARGS)}"
            )
        super().__init__(params, seed=seed, design=design)
        if not isinstance(task, str) or not isinstance(objective, str) or not objective:
            raise ConfigTypeError(
                f"task and objective must be str (objective non-empty), got {task!r}, {objective!r}"
            )
        self.task, self.objective = task.strip(), objective
        self.timeout = check_float(
            "timeout", timeout, minimum=0, maximum=MAX_TIMEOUT, min_inclusive=False
        )
        self.n_initial = check_int("n_initial", n_initial, minimum=1)
        self.n_candidates = check_int("n_candidates", n_candidates, minimum=1)
        self.min_candidates = (
            max(1, self.n_candidates // 2)
            if min_candidates is None
            else check_int("min_candidates", min_candidates, minimum=1)
        )
        self.n_samples = check_int("n_samples", n_samples, minimum=1)
        self.alpha = check_float("alpha", alpha, minimum=-1)
        self.max_context = check_int("max_context", max_context, minimum=1)
        self.max_rounds = check_int("max_rounds", max_rounds, minimum=1)
        self.dup_tol = check_float("dup_tol", dup_tol, minimum=0)
        self.digits = check_int("digits", digits, minimum=2, maximum=_MAX_DIGITS)
        self.client = client_or_new(client, **client_settings)
        if fallback is None:
            fallback = GPSearcher(
                self.params, seed=_derive_seed(self.seed, -1), n_initial=n_initial, design=design
            )
        elif not isinstance(fallback, Searcher) or fallback.names != self.names:
            raise ConfigTypeError(
                f"fallback must be a Searcher over {list(self.names)}, got {fallback!r}"
            )
        for p in self.params:  # one box for both
            if fallback.bounds[p.name] != (p.low, p.high):
                fallback.set_bounds(p.name, p.low, p.high)
        self.fallback = fallback
        #: What happened, newest last (the last 1000): dicts with ``call`` (suggest call
        #: index), ``kind`` (see ``EVENT_KINDS``), ``count``, ``detail`` and ``fallback``
        #: (whether that suggestion fell back to the GP). Diagnostic, not ``state_dict``.
        self.events: list[dict[str, Any]] = []
        #: ``"llm-warm"``, ``"llm"`` or ``"gp-fallback"``: where the last suggestion came from.
        self.last_source: str | None = None
        #: Seconds the last suggestion spent on the LLM (at most ``timeout`` plus thread
        #: scheduling; the fallback's own compute is not included).
        self.last_llm_seconds = 0.0
        #: Suggest calls answered by the LLM / by the fallback (diagnostic).
        self.n_llm = 0
        self.n_fallbacks = 0

    def __repr__(self) -> str:
        return (
            f"LLMSearcher(params={list(self.params)!r}, seed={self.seed}, "
            f"model={self.client.model!r}, n_observations={len(self)})"
        )

    @property
    def usage(self) -> Usage:
        """Calls, tokens and seconds spent by the client (shared if the client is)."""
        return self.client.usage

    # ------------------------------------------------- observations -> fallback
    def observe(
        self, config: Mapping[str, float], value: float, *, noise: float | None = None
    ) -> None:
        """Records an outcome (see :meth:`Searcher.observe`); the fallback sees it too."""
        super().observe(config, value, noise=noise)
        self.fallback.observe(config, value, noise=noise)

    def reset(self) -> None:
        """Forgets all observations (the fallback's too); the random streams continue."""
        super().reset()
        self.fallback.reset()

    def set_bounds(self, name: str, low: float, high: float) -> None:
        """Moves the box of one parameter (the fallback's too)."""
        super().set_bounds(name, low, high)
        self.fallback.set_bounds(name, low, high)

    def reseed_rng(self, seed: int | None) -> None:
        """Restarts all random streams from ``seed`` (the fallback's from a derived seed)."""
        super().reseed_rng(seed)
        self.fallback.reseed_rng(_derive_seed(self.seed, -1))

    def state_dict(self) -> dict[str, Any]:
        """:meth:`Searcher.state_dict` plus the fallback's state (events/usage excluded)."""
        state = super().state_dict()
        state["fallback"] = self.fallback.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict` (the fallback's state included)."""
        if not isinstance(state, Mapping) or not isinstance(state.get("fallback"), Mapping):
            raise StateError("state is not a valid LLMSearcher state_dict: no 'fallback' entry")
        # Both parts are checked before either changes: the fallback's on a copy first.
        copy.deepcopy(self.fallback).load_state_dict(state["fallback"])
        super().load_state_dict(state)
        self.fallback.load_state_dict(state["fallback"])

    # ---------------------------------------------------------------- events
    def _event(self, call: int, kind: str, detail: str, *, count: int = 1, fb: bool = False):
        self.events.append(
            {"call": call, "kind": kind, "count": count, "detail": detail[:300], "fallback": fb}
        )
        if len(self.events) > _MAX_EVENTS:
            del self.events[: len(self.events) - _MAX_EVENTS]

    # ---------------------------------------------------------------- suggest
    def suggest(
        self, n: int = 1, *, pending: Sequence[Mapping[str, float]] = ()
    ) -> list[dict[str, float]]:
        """Proposes ``n`` configs within the bounds: by the LLM, else by the fallback.

        Unlike other searchers, the LLM step runs outside the process-wide lock around the
        seeded global RNGs (it draws no random numbers), so a slow endpoint never blocks
        searchers in other threads; the fallback takes that lock as usual.

        Args:
            n: Number of configs (``>= 1``).
            pending: Configs already running but not yet observed; suggestions avoid them.
        """
        check_int("n", n, minimum=1)
        pending_rows = [self._config_tuple(c, "pending config") for c in pending]
        call = self._n_suggest_calls
        self._n_suggest_calls += 1
        rows = self._suggest_rows(n, pending_rows, call)
        if rows is None:
            pend = [dict(zip(self.names, r)) for r in pending_rows]
            return self.fallback.suggest(n, pending=pend)
        return [dict(zip(self.names, r)) for r in rows]

    def _suggest_unit(self, n: int, pending: torch.Tensor) -> torch.Tensor:
        # Only for code calling the Searcher hook directly; suggest() does not use it.
        pending_rows = [
            tuple(c[p.name] for p in self.params) for c in self.unit_to_configs(pending)
        ]
        rows = self._suggest_rows(n, pending_rows, self._n_suggest_calls - 1)
        if rows is None:
            pend = [dict(zip(self.names, r)) for r in pending_rows]
            return self.configs_to_unit(self.fallback.suggest(n, pending=pend))
        return self._tuples_to_unit(rows)

    def _suggest_rows(
        self, n: int, pending_rows: list[tuple[float, ...]], call: int
    ) -> list[tuple[float, ...]] | None:
        """The LLM's ``n`` configs (in parameter order), or ``None`` to fall back."""
        t0 = time.monotonic()
        # A small reserve (5 %, at most 50 ms) for waking up and parsing after the last
        # reply, so that the whole LLM step, not just the network wait, fits the timeout.
        deadline = t0 + self.timeout - min(0.05 * self.timeout, _RESERVE)
        rows: list[tuple[float, ...]] | None
        try:
            rows, source = self._llm_rows(n, pending_rows, call, deadline)
        except _Fallback as fb:
            self._event(call, fb.kind, fb.detail, fb=True)
            rows, source = None, "gp-fallback"
        except Exception as exc:  # a bug here must not stop a training run
            self._event(call, "internal", f"{type(exc).__name__}: {exc}", fb=True)
            rows, source = None, "gp-fallback"
        self.last_llm_seconds = time.monotonic() - t0
        self.last_source = source
        if rows is None:
            self.n_fallbacks += 1
        else:
            self.n_llm += 1
        return rows

    def _llm_rows(
        self, n: int, pending: list[tuple[float, ...]], call: int, deadline: float
    ) -> tuple[list[tuple[float, ...]], str]:
        seed = _derive_seed(self.seed, call) & 0x7FFFFFFF
        warm = len(self) + len(pending) < self.n_initial or not any(
            math.isfinite(v) for v in self._raw_values
        )
        if warm:
            m = max(n, min(self.n_candidates, n + 2))  # a little slack for invalid entries
            prompt = self.warm_prompt(m, pending)
            cands = self._propose(prompt, m, n, pending, call, seed, deadline)
            return cands[:n], "llm-warm"
        m = max(n, self.n_candidates)
        prompt = self.candidate_prompt(m, pending)
        need = max(n, self.min_candidates)
        cands = self._propose(prompt, m, need, pending, call, seed, deadline)
        cands = cands[:m]
        scores = self._score(cands, call, seed, deadline)
        best = min(v for v in self._raw_values if math.isfinite(v))
        ei = [expected_improvement(mu, sd, best) for mu, sd in scores]
        order = sorted(range(len(cands)), key=lambda i: -ei[i])  # stable: ties keep LLM order
        return [cands[i] for i in order[:n]], "llm"

    def _propose(
        self,
        prompt: str,
        m: int,
        need: int,
        pending: list[tuple[float, ...]],
        call: int,
        seed: int,
        deadline: float,
    ) -> list[tuple[float, ...]]:
        """Valid, distinct configs from up to ``max_rounds`` calls asking for ``m`` each,
        stopping once ``need`` are accepted."""
        known = [*self._configs, *pending]
        accepted: list[tuple[float, ...]] = []
        rejected: dict[str, int] = {}
        for r in range(self.max_rounds):
            req = ChatRequest(
                (("system", SYSTEM_PROMPT), ("user", prompt)),
                temperature=_T_PROPOSE,
                top_p=_TOP_P,
                max_tokens=64 + 48 * self.dim * m,
                seed=seed + r,
            )
            (texts,) = self.client.complete_many([req], deadline=deadline)
            if isinstance(texts, LLMError):
                raise _Fallback(texts.kind, f"proposal call: {texts}")
            for text in texts:
                # Reads no more than needed (``m`` accepted, at most 4 m entries): a huge
                # reply must not stall the loop. Not cut by the clock, so that a run replayed
                # from the cache reads every reply as the live run did.
                counts = self._parse_configs(
                    text, known, accepted, limit=m, max_entries=_ENTRIES_PER_CONFIG * m
                )
                for kind, c in counts.items():
                    rejected[kind] = rejected.get(kind, 0) + c
                    self._event(call, kind, f"proposal round {r}: {c} dropped", count=c)
            if len(accepted) >= need:
                return accepted
            if time.monotonic() > deadline:
                raise _Fallback(
                    "deadline",
                    f"{len(accepted)} valid configs when time ran out reading the proposals, "
                    f"{need} needed",
                )
        if accepted or not rejected:
            raise _Fallback("too_few", f"{len(accepted)} valid configs, {need} needed")
        kind = max(rejected, key=lambda k: rejected[k])
        raise _Fallback(kind, f"no valid config in {self.max_rounds} proposal calls: {rejected}")

    def _parse_configs(
        self,
        text: str,
        known: list[tuple[float, ...]],
        accepted: list[tuple[float, ...]],
        *,
        limit: int | None = None,
        max_entries: int | None = None,
    ) -> dict[str, int]:
        """Appends the valid configs of one reply to ``accepted``; returns dropped counts.

        Stops once ``accepted`` holds ``limit`` configs or after ``max_entries`` entries of
        the reply; entries not read are not counted.
        """
        obj = extract_json(text)
        if isinstance(obj, dict):
            obj = obj.get("configs", obj.get("configurations"))
        if not isinstance(obj, list) or not obj:
            return {"malformed": 1}
        dropped: dict[str, int] = {}
        # Unit-cube coordinates of the configs to stay away from, computed once.
        near = [self._unit_row(o) for o in (*known, *accepted)]
        for j, entry in enumerate(obj):
            if (limit is not None and len(accepted) >= limit) or (
                max_entries is not None and j >= max_entries
            ):
                break
            kind = None
            row: list[float] = []
            if not isinstance(entry, dict):
                kind = "malformed"
            else:
                for p in self.params:
                    x = _number(entry.get(p.name))
                    if x is None:
                        kind = "malformed"
                    elif not math.isfinite(x):
                        kind = "nan"
                    elif not p.low <= x <= p.high:
                        kind = "out_of_bounds"
                    if kind:
                        break
                    row.append(x)
            u = self._unit_row(row) if kind is None else []
            if kind is None and self._near_any(u, near):
                kind = "duplicate"
            if kind is None:
                accepted.append(tuple(row))
                near.append(u)
            else:
                dropped[kind] = dropped.get(kind, 0) + 1
        return dropped

    def _unit_row(self, row: Sequence[float]) -> list[float]:
        return [p.to_unit(x) for p, x in zip(self.params, row)]

    def _near_any(self, u: list[float], others: list[list[float]]) -> bool:
        """Whether ``u`` is within ``dup_tol`` of one of ``others`` in every coordinate."""
        return any(max(abs(a - b) for a, b in zip(u, o)) <= self.dup_tol for o in others)

    def _is_duplicate(self, row: tuple[float, ...], others: list[tuple[float, ...]]) -> bool:
        return self._near_any(self._unit_row(row), [self._unit_row(o) for o in others])

    def _score(
        self, cands: list[tuple[float, ...]], call: int, seed: int, deadline: float
    ) -> list[tuple[float, float]]:
        """``(mean, std)`` of the LLM's predictions per candidate, over ``n_samples`` calls."""
        prompt = self.surrogate_prompt(cands)
        reqs = [
            ChatRequest(
                (("system", SYSTEM_PROMPT), ("user", prompt)),
                temperature=_T_SCORE,
                top_p=_TOP_P,
                max_tokens=32 + 16 * len(cands),
                seed=seed + 1000 + j,
            )
            for j in range(self.n_samples)
        ]
        preds: list[list[float]] = [[] for _ in cands]
        last = "malformed"
        for j, res in enumerate(self.client.complete_many(reqs, deadline=deadline)):
            texts = [res] if isinstance(res, LLMError) else res
            for text in texts:
                if isinstance(text, LLMError):
                    last = text.kind
                    self._event(call, text.kind, f"scoring call {j}: {text}")
                    continue
                obj = extract_json(text)
                if isinstance(obj, dict):
                    obj = obj.get("predictions")
                values = [_number(v) for v in obj] if isinstance(obj, list) else None
                if values is None or len(values) != len(cands) or None in values:
                    last = "malformed"
                    self._event(call, "malformed", f"scoring call {j}: not {len(cands)} numbers")
                    continue
                bad = sum(not math.isfinite(v) for v in values)  # type: ignore[arg-type]
                if bad:
                    last = "nan"
                    self._event(call, "nan", f"scoring call {j}: {bad} non-finite", count=bad)
                for i, v in enumerate(values):
                    if math.isfinite(v):  # type: ignore[arg-type]
                        preds[i].append(float(v))  # type: ignore[arg-type]
        if any(not p for p in preds):
            raise _Fallback(last, "no finite prediction for some candidate")
        finite = [v for v in self._raw_values if math.isfinite(v)]
        spread = max(finite) - min(finite)
        floor = 1e-3 * (spread if spread > 0 else max(abs(min(finite)), 1.0))
        out = []
        for p in preds:
            mu = sum(p) / len(p)
            sd = std_dev(p, mu, len(p))
            out.append((mu, max(sd, floor)))
        return out

    # ---------------------------------------------------------------- prompts
    def _row_json(self, row: Sequence[float]) -> str:
        items = ",".join(
            f"{json.dumps(p.name)}:{_fmt(x, self.digits)}" for p, x in zip(self.params, row)
        )
        return "{" + items + "}"

    def _header(self) -> str:
        space = {
            p.name: {
                "low": float(_fmt_bound(p.low, self.digits, low=True)),
                "high": float(_fmt_bound(p.high, self.digits, low=False)),
                "scale": "log" if p.log else "linear",
            }
            for p in self.params
        }
        lines = [
            f"Task: {self.task or 'tune a training run'}",
            f"Objective: {self.objective} (lower is better).",
            f"Search space (JSON): {json.dumps(space, separators=(',', ':'))}",
        ]
        if any(p.log for p in self.params):
            logs = ", ".join(p.name for p in self.params if p.log)
            lines.append(
                f"Log-scale parameters ({logs}) are written in natural units; "
                "think of them in orders of magnitude."
            )
        return "\n".join(lines)

    def _format_line(self, kind: str, m: int) -> str:
        keys = ", ".join(json.dumps(p.name) for p in self.params)
        if kind == "configs":
            what = f"configurations, each an object with keys {keys}"
        else:
            what = "numbers, one per candidate in order"
        return f'Reply with JSON only, exactly: {{"{kind}": [...]}} with {m} {what}.'

    def _pending_lines(self, pending: list[tuple[float, ...]]) -> list[str]:
        if not pending:
            return []
        return ["Already running (do not repeat):", *(self._row_json(r) for r in pending)]

    def context_rows(self) -> list[int]:
        """Indices of the observations shown in prompts, in display order.

        At most ``max_context``: the best half (by value), up to a quarter failures (most
        recent first), then greedily the points farthest (unit cube) from those chosen.
        Displayed failures first, then by value from worst to best.
        """
        raw = self._raw_values
        finite = sorted((i for i, v in enumerate(raw) if math.isfinite(v)), key=lambda i: raw[i])
        failed = [i for i, v in enumerate(raw) if not math.isfinite(v)][::-1]
        k = self.max_context
        chosen = finite[: (k + 1) // 2]
        chosen += failed[: k // 4]
        rest = [i for i in finite if i not in chosen]
        units = [[p.to_unit(x) for p, x in zip(self.params, row)] for row in self._configs]
        while rest and len(chosen) < k:

            def gap(i: int) -> float:
                return min(
                    (max(abs(a - b) for a, b in zip(units[i], units[j])) for j in chosen),
                    default=math.inf,
                )

            pick = max(rest, key=lambda i: (gap(i), -i))
            chosen.append(pick)
            rest.remove(pick)
        fails = [i for i in chosen if not math.isfinite(raw[i])]
        good = sorted((i for i in chosen if math.isfinite(raw[i])), key=lambda i: (-raw[i], i))
        return fails + good

    def _history_lines(self) -> list[str]:
        rows = self.context_rows()
        lines = [
            f"Evaluated configurations ({len(rows)} of {len(self)}), as config -> {self.objective}:"
        ]
        for i in rows:
            v = self._raw_values[i]
            shown = _fmt(v, self.digits) if math.isfinite(v) else "diverged"
            lines.append(f"{self._row_json(self._configs[i])} -> {shown}")
        return lines

    def target(self) -> float:
        """The value the candidate sampler asks for: ``best - alpha * (worst - best)``."""
        finite = [v for v in self._raw_values if math.isfinite(v)]
        best, worst = min(finite), max(finite)
        r = worst - best
        if r <= 0.0:
            r = 0.1 * abs(best) if best != 0.0 else 0.1
        return best - self.alpha * r

    def warm_prompt(self, m: int, pending: Sequence[tuple[float, ...]] = ()) -> str:
        """The zero-shot warm-start prompt asking for ``m`` configs."""
        lines = [self._header()]
        known = [*self._configs, *pending]
        if known:
            lines += ["Already chosen (do not repeat):", *(self._row_json(r) for r in known)]
        lines += [
            f"Propose {m} diverse configurations likely to give a low {self.objective}, "
            "inside the search space and away from its boundaries.",
            self._format_line("configs", m),
        ]
        return "\n".join(lines)

    def candidate_prompt(self, m: int, pending: Sequence[tuple[float, ...]] = ()) -> str:
        """The candidate-sampling prompt: history, target value, ``m`` configs asked."""
        best = min(v for v in self._raw_values if math.isfinite(v))
        lines = [
            self._header(),
            *self._history_lines(),
            *self._pending_lines(list(pending)),
            f"Best {self.objective} so far: {_fmt(best, self.digits)}. Propose {m} new, "
            f"distinct configurations you expect to reach {self.objective} = "
            f"{_fmt(self.target(), self.digits)}, inside the search space, away from its "
            "boundaries and not repeating any configuration above.",
            self._format_line("configs", m),
        ]
        return "\n".join(lines)

    def surrogate_prompt(self, cands: Sequence[tuple[float, ...]]) -> str:
        """The scoring prompt: history, then the candidates to predict."""
        lines = [
            self._header(),
            *self._history_lines(),
            f"Predict the {self.objective} of each candidate:",
            *(f"{i + 1}. {self._row_json(r)}" for i, r in enumerate(cands)),
            self._format_line("predictions", len(cands)),
        ]
        return "\n".join(lines)


# help(LLMSearcher) lists LLMClient's arguments, the only ones its **client_settings take.
set_forwarding_signature(LLMSearcher.__init__, _CLIENT_ARGS, keep_kwargs=False)
