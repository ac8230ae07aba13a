"""A small, bounded client for OpenAI-compatible Chat Completions endpoints.

It wraps the official ``openai`` package (the ``llm`` extra, imported lazily on the first
network call, so ``import autolr`` never imports it) with what a training loop needs from an
unreliable service: a hard deadline per call (retries and backoff included), bounded retries
that honour ``Retry-After``, a cap on concurrent requests, token accounting and an optional
on-disk cache keyed by the request, so that a run can be replayed offline exactly.

Every failure surfaces as :class:`LLMError` with a short ``kind`` (``"timeout"``,
``"connection"``, ``"http_4xx"``, ``"http_5xx"``, ``"rate_limit"``, ``"deadline"``,
``"cache_miss"``, ``"protocol"``); callers decide what to fall back to.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import email.utils
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from autolr._errors import AutoLRError, ConfigError, ConfigTypeError
from autolr._validate import check_choice, check_float, check_instance, check_int

__all__ = ["ChatRequest", "LLMClient", "LLMError", "Usage"]

#: Environment variables read (in this order) when an argument is not given.
ENV_BASE_URL = ("AUTOLR_LLM_BASE_URL", "OPENAI_BASE_URL")
ENV_API_KEY = ("AUTOLR_LLM_API_KEY", "OPENAI_API_KEY")
ENV_MODEL = ("AUTOLR_LLM_MODEL", "OPENAI_MODEL")
_CACHE_MODES = ("off", "readwrite", "replay")
# Longest single backoff sleep; Retry-After above the remaining budget ends the call instead.
_MAX_BACKOFF = 30.0
# Longest wait a deadline may ask for (seconds ahead); thread and socket timeouts overflow
# somewhere past 1e9 s, and no training loop waits for days on one call.
MAX_TIMEOUT = 1e6
# The deadline of the call running in this thread (read by the reply-body guard).
_TLS = threading.local()


class LLMError(AutoLRError):
    """A Chat Completions call that produced no usable reply (an :class:`autolr.AutoLRError`).

    Attributes:
        kind: ``"timeout"``, ``"connection"``, ``"http_4xx"``, ``"http_5xx"``,
            ``"rate_limit"``, ``"deadline"`` (no time left), ``"cache_miss"`` (replay mode)
            or ``"protocol"`` (a reply the ``openai`` client could not read).
        status: The HTTP status, when there was one.
    """

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


@dataclass
class Usage:
    """Token and call accounting of a client (diagnostic, not state).

    Attributes:
        requests: Calls made (each may span several HTTP attempts).
        attempts: HTTP attempts sent (retries included).
        completions: Choices received over the network.
        cache_hits: Calls answered from the cache (no network, no tokens).
        prompt_tokens: Prompt tokens reported by the server.
        completion_tokens: Completion tokens reported by the server.
        seconds: Wall time spent waiting for calls (cache hits included).
        failures: Calls that ended in :class:`LLMError`.
    """

    requests: int = 0
    attempts: int = 0
    completions: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    failures: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, float]:
        """Plain dict (for JSON reports), with ``total_tokens``."""
        return {**asdict(self), "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class ChatRequest:
    """One Chat Completions request; its JSON form is the cache key.

    ``seed`` is sent to the server (most OpenAI-compatible servers honour it) and makes
    otherwise identical requests of different suggestions distinct cache entries.
    """

    messages: tuple[tuple[str, str], ...]
    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int | None = None

    def __post_init__(self) -> None:
        # Checked here, not by the server: a malformed request would otherwise be sent
        # (or fail inside a worker thread as a "protocol" error).
        msgs = self.messages
        pairs = None
        if isinstance(msgs, Sequence) and not isinstance(msgs, (str, bytes)):
            pairs = [
                tuple(m)
                for m in msgs
                if isinstance(m, Sequence)
                and not isinstance(m, (str, bytes))
                and len(m) == 2
                and all(isinstance(x, str) for x in m)
            ]
        if pairs is None or len(pairs) != len(msgs):
            raise ConfigTypeError(
                f"messages must be a sequence of (role, content) pairs of str, got {_short(msgs)}"
            )
        if not pairs:
            raise ConfigError("messages must hold at least one (role, content) pair, got none")
        object.__setattr__(self, "messages", tuple(pairs))
        check_int("n", self.n, minimum=1)
        check_float("temperature", self.temperature, minimum=0)
        check_float("top_p", self.top_p, minimum=0, maximum=1)
        check_int("max_tokens", self.max_tokens, minimum=1)
        if self.seed is not None:
            check_int("seed", self.seed)

    def payload(self, model: str) -> dict[str, Any]:
        """The request body (without transport options)."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": r, "content": c} for r, c in self.messages],
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    def key(self, model: str) -> str:
        """SHA-256 of the canonical JSON of :meth:`payload`."""
        text = json.dumps(self.payload(model), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _env(names: Sequence[str]) -> str | None:
    return _env_named(names)[1]


def _env_named(names: Sequence[str]) -> tuple[str | None, str | None]:
    """The first of ``names`` set to a non-empty value: ``(name, value)``, else Nones."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return name, value
    return None, None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_base_url(url: str, source: str) -> str:
    """``url`` if it is an ``http(s)://host...`` URL, else ConfigError naming ``source``."""
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(
            f"{source} must be an http:// or https:// URL with a host, such as "
            f"'http://127.0.0.1:8000/v1', got {url!r}"
        )
    return url


def _check_deadline(deadline: Any) -> float:
    """A finite :func:`time.monotonic` time at most :data:`MAX_TIMEOUT` seconds ahead."""
    value = check_float("deadline", deadline)
    if value - time.monotonic() > MAX_TIMEOUT:
        raise ConfigError(
            f"deadline must be a time.monotonic() time at most {MAX_TIMEOUT:g} s ahead, "
            f"got {deadline!r} ({value - time.monotonic():.3g} s ahead)"
        )
    return value


def retry_after_seconds(
    headers: Mapping[str, str] | None, now: float | None = None
) -> float | None:
    """Seconds a ``Retry-After`` (or OpenAI's ``retry-after-ms``) header asks to wait.

    Example:
        >>> retry_after_seconds({"retry-after": "1.5"})
        1.5
        >>> retry_after_seconds({"retry-after-ms": "250"})
        0.25
    """
    if not headers:
        return None
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class LLMClient:
    """Chat Completions over HTTP with deadlines, retries, a concurrency cap and a cache.

    Args:
        base_url: Endpoint, e.g. ``"http://127.0.0.1:8000/v1"``; default
            ``$AUTOLR_LLM_BASE_URL``, then ``$OPENAI_BASE_URL``, then OpenAI's API. It must
            be an ``http://`` or ``https://`` URL with a host (a ConfigError names the
            environment variable it came from).
        api_key: Default ``$AUTOLR_LLM_API_KEY``, then ``$OPENAI_API_KEY``; with a
            ``base_url`` and no key, ``"EMPTY"`` (local servers ignore it).
        model: Model name; default ``$AUTOLR_LLM_MODEL``, then ``$OPENAI_MODEL``.
        max_retries: Extra attempts after a timeout, connection error, 5xx or 429 (other
            4xx are not retried). All attempts share the caller's deadline.
        backoff: First backoff in seconds, doubled per retry; a longer ``Retry-After`` wins.
        max_concurrency: Most HTTP requests in flight at once (a thread pool of this size);
            requests abandoned at a deadline no longer count.
        cache_dir: Folder of the on-disk cache (one JSON file per request); ``None``: none.
            In ``"readwrite"`` mode it is created and checked to be writable at
            construction (ConfigError); a write that fails later warns once.
        cache_mode: ``"readwrite"`` (default with ``cache_dir``: hits are served, successful
            network replies stored), ``"replay"`` (hits only, from a ``cache_dir`` that must
            exist; a miss fails at once with kind ``"cache_miss"``, no network) or
            ``"off"``.

    Raises:
        ConfigError, ConfigTypeError: Invalid arguments, or no model / credentials.
        ImportError: ``openai`` is missing and the client may need the network.

    Example:
        >>> c = LLMClient(base_url="http://127.0.0.1:9/v1", model="m")
        >>> c.usage.requests
        0
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        max_retries: int = 2,
        backoff: float = 0.25,
        max_concurrency: int = 4,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_mode: str | None = None,
    ) -> None:
        if base_url:
            if not isinstance(base_url, str):
                raise ConfigTypeError(
                    f"base_url must be a str such as 'http://127.0.0.1:8000/v1', got "
                    f"{type(base_url).__name__} {_short(base_url)}"
                )
            self.base_url: str | None = _check_base_url(base_url, "base_url")
        else:
            name, value = _env_named(ENV_BASE_URL)
            self.base_url = None if value is None else _check_base_url(value, f"${name}")
        model = model or _env(ENV_MODEL)
        if not model or not isinstance(model, str):
            raise ConfigError(
                f"model must be a non-empty str, got {model!r}; pass model= or set "
                f"${ENV_MODEL[0]} (or ${ENV_MODEL[1]})"
            )
        self.model = model
        self.max_retries = check_int("max_retries", max_retries, minimum=0)
        self.backoff = check_float("backoff", backoff, minimum=0)
        self.max_concurrency = check_int("max_concurrency", max_concurrency, minimum=1)
        if cache_mode is None:
            cache_mode = "off" if cache_dir is None else "readwrite"
        check_choice("cache_mode", cache_mode, _CACHE_MODES)
        if cache_mode != "off" and cache_dir is None:
            raise ConfigError(f"cache_mode={cache_mode!r} needs a cache_dir, got None")
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise ConfigTypeError(
                f"cache_dir must be a str or os.PathLike folder, got "
                f"{type(cache_dir).__name__} {_short(cache_dir)}"
            )
        self.cache_mode = cache_mode
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        if not isinstance(self.cache_dir, (str, type(None))):
            raise ConfigTypeError(f"cache_dir must be a str path, got {_short(self.cache_dir)}")
        _check_cache_dir(self.cache_dir, cache_mode)
        self._cache_warned = False
        api_key = api_key or _env(ENV_API_KEY)
        if api_key is None and self.base_url is not None:
            api_key = "EMPTY"
        if api_key is None and cache_mode != "replay":
            raise ConfigError(
                "api_key must be given for OpenAI's API, got None; pass api_key= or set "
                f"${ENV_API_KEY[0]} (or ${ENV_API_KEY[1]}), or point base_url at a local server"
            )
        self._api_key = api_key
        if cache_mode != "replay" and importlib.util.find_spec("openai") is None:
            raise ImportError(
                "'openai' is required for LLMClient; install it with "
                'pip install "autolr[llm]" (or use cache_mode="replay")'
            )
        self.usage = Usage()
        self._lock = threading.Lock()
        self._openai: Any = None
        self._pool: cf.ThreadPoolExecutor | None = None
        if cache_mode != "replay":
            # Import and build the SDK client now (about a second on a busy machine), not
            # inside the first call, whose deadline it would eat.
            self._client()

    def __repr__(self) -> str:
        return (
            f"LLMClient(base_url={self.base_url!r}, model={self.model!r}, "
            f"cache_mode={self.cache_mode!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for worker processes (Ray, Optuna n_jobs with processes): live
        # connections and threads are rebuilt on first use.
        state = dict(self.__dict__)
        state["_lock"] = None
        state["_openai"] = None
        state["_pool"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public
    def complete(self, request: ChatRequest, *, deadline: float) -> list[str]:
        """The choices' texts of one request; see :meth:`complete_many`.

        Raises:
            LLMError: The call got no usable reply.
            ConfigError, ConfigTypeError: ``request`` is not a :class:`ChatRequest`, or
                ``deadline`` is not a finite time at most 1e6 s ahead.
        """
        check_instance("request", request, ChatRequest)
        (out,) = self.complete_many([request], deadline=deadline)
        if isinstance(out, LLMError):
            raise out
        return out

    def complete_many(
        self, requests: Sequence[ChatRequest], *, deadline: float
    ) -> list[list[str] | LLMError]:
        """Runs ``requests`` concurrently (at most ``max_concurrency`` at once).

        Never waits past ``deadline`` (a :func:`time.monotonic` time): requests still
        running then are abandoned and reported as kind ``"timeout"``. An abandoned request
        reads its reply no further than the deadline and no longer counts against
        ``max_concurrency`` (the next calls get fresh worker threads at once).

        Returns:
            Per request, the choices' texts or the :class:`LLMError` it ended in.

        Raises:
            ConfigError, ConfigTypeError: ``requests`` is not a sequence of
                :class:`ChatRequest`, or ``deadline`` is not a finite time at most 1e6 s
                ahead (checked before anything is sent).
        """
        if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence):
            raise ConfigTypeError(
                f"requests must be a sequence of ChatRequest, got {type(requests).__name__}"
            )
        for i, req in enumerate(requests):
            check_instance(f"requests[{i}]", req, ChatRequest)
        deadline = _check_deadline(deadline)
        t0 = time.monotonic()
        results: list[list[str] | LLMError | None] = [None] * len(requests)
        futures: dict[cf.Future, tuple[int, ChatRequest]] = {}
        for i, req in enumerate(requests):
            hit = self._cache_get(req)
            if hit is not None:
                results[i] = hit
                with self._lock:
                    self.usage.cache_hits += 1
            elif self.cache_mode == "replay":
                results[i] = LLMError("cache_miss", "request not in the replay cache")
            else:
                futures[self._executor().submit(self._call, req, deadline)] = (i, req)
        if futures:
            done, not_done = cf.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
            abandoned = False
            for fut in not_done:
                # Queued ones never start; running ones stop reading at the deadline, but a
                # stalled server can hold their threads for up to a read timeout more.
                abandoned |= not fut.cancel()
                results[futures[fut][0]] = LLMError("timeout", "no reply before the deadline")
            if abandoned:
                self._retire_pool()
            for fut in done:
                i, req = futures[fut]
                try:
                    texts, usage = fut.result()
                except LLMError as exc:
                    results[i] = exc
                except Exception as exc:  # nothing may escape into the loop
                    results[i] = LLMError("protocol", f"{type(exc).__name__}: {exc}")
                else:
                    # Stored by the caller's thread, only for replies it accepted in time, so
                    # a replay sees exactly the replies the live run used.
                    self._cache_put(req, texts, usage)
                    results[i] = texts
        with self._lock:
            self.usage.requests += len(requests)
            self.usage.failures += sum(isinstance(r, LLMError) for r in results)
            self.usage.seconds += time.monotonic() - t0
        return [r if r is not None else LLMError("protocol", "no result") for r in results]

    def close(self) -> None:
        """Shuts the thread pool down (without waiting for abandoned requests)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # ---------------------------------------------------------------- network
    def _retire_pool(self) -> None:
        """Leaves the current pool to its abandoned requests (it ends with them) so that
        the next requests are not queued behind them."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)  # other callers' queued requests still run there

    def _executor(self) -> cf.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(
                    max_workers=self.max_concurrency, thread_name_prefix="autolr-llm"
                )
            return self._pool

    def _client(self) -> Any:
        with self._lock:
            if self._openai is None:
                import openai  # the llm extra; lazily so import autolr never needs it

                # Retries are ours (they must share the deadline); the SDK's are off.
                self._openai = openai.OpenAI(
                    base_url=self.base_url,
                    api_key=self._api_key,
                    max_retries=0,
                    http_client=_deadline_http_client(openai),
                )
            return self._openai

    def _call(self, req: ChatRequest, deadline: float) -> tuple[list[str], dict[str, int]]:
        """One request with retries, in a worker thread; raises :class:`LLMError`."""
        import openai

        client = self._client()
        body = req.payload(self.model)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.0:
                raise LLMError("deadline", "no time left for another attempt")
            with self._lock:
                self.usage.attempts += 1
            wait: float | None = None
            _TLS.deadline = deadline  # the reply body is read no further than this
            try:
                resp = client.chat.completions.create(**body, timeout=remaining)
            except openai.APITimeoutError as exc:
                err = LLMError("timeout", f"request timed out: {exc}")
            except openai.APIConnectionError as exc:
                err = LLMError("connection", f"connection failed: {exc}")
            except openai.APIStatusError as exc:
                status = int(exc.status_code)
                headers = getattr(getattr(exc, "response", None), "headers", None)
                if status == 429:
                    err = LLMError("rate_limit", f"HTTP 429: {exc}", status)
                    wait = retry_after_seconds(headers)
                elif status >= 500:
                    err = LLMError("http_5xx", f"HTTP {status}: {exc}", status)
                    wait = retry_after_seconds(headers)
                else:
                    raise LLMError("http_4xx", f"HTTP {status}: {exc}", status) from exc
            except openai.OpenAIError as exc:  # e.g. a reply that is not a completion
                raise LLMError("protocol", f"{type(exc).__name__}: {exc}") from exc
            else:
                return _texts_and_usage(resp)
            finally:
                _TLS.deadline = None
            if attempt >= self.max_retries:
                raise err
            delay = min(self.backoff * 2.0**attempt, _MAX_BACKOFF)
            if wait is not None:
                delay = max(delay, wait)
            if time.monotonic() + delay >= deadline:
                # Waiting as asked would overrun the deadline: give up now, not later.
                raise err
            time.sleep(delay)
            attempt += 1

    # ------------------------------------------------------------------ cache
    def _cache_path(self, req: ChatRequest) -> str:
        key = req.key(self.model)
        assert self.cache_dir is not None
        return os.path.join(self.cache_dir, key[:2], f"{key}.json")

    def _cache_get(self, req: ChatRequest) -> list[str] | None:
        if self.cache_mode == "off":
            return None
        try:
            with open(self._cache_path(req), encoding="utf-8") as fh:
                entry = json.load(fh)
            texts = entry["texts"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return None
        return list(texts)

    def _cache_put(self, req: ChatRequest, texts: list[str], usage: dict[str, int]) -> None:
        with self._lock:
            self.usage.completions += len(texts)
            self.usage.prompt_tokens += usage.get("prompt_tokens", 0)
            self.usage.completion_tokens += usage.get("completion_tokens", 0)
        if self.cache_mode != "readwrite":
            return
        path = self._cache_path(req)
        entry = {"request": req.payload(self.model), "texts": texts, "usage": usage}
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(entry, fh, sort_keys=True)
            os.replace(tmp, path)  # atomic: concurrent readers see all or nothing
        except OSError as exc:
            # Checked writable at construction; a later failure (disk full, folder removed)
            # costs only the replay of this reply: said once, never raised into the loop.
            if not getattr(self, "_cache_warned", False):
                self._cache_warned = True
                warnings.warn(
                    f"LLMClient could not write its cache in {self.cache_dir!r} ({exc}); "
                    "replies that are not stored cannot be replayed (warned once)",
                    RuntimeWarning,
                    stacklevel=3,
                )


def _check_cache_dir(cache_dir: str | None, mode: str) -> None:
    """Replay needs an existing folder; readwrite creates it and proves it writable."""
    if cache_dir is None or mode == "off":
        return
    if mode == "replay":
        if not os.path.isdir(cache_dir):
            raise ConfigError(
                f"cache_mode='replay' needs an existing cache_dir, got {cache_dir!r} "
                "(no such folder: nothing could be replayed from it)"
            )
        return
    try:
        os.makedirs(cache_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", suffix=".tmp", dir=cache_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ConfigError(
            f"cache_dir must be a folder the cache can be written to, got {cache_dir!r}: {exc}"
        ) from exc


def client_or_new(client: LLMClient | None, **settings: Any) -> LLMClient:
    """``client`` (checked to be an :class:`LLMClient`), or a new one built from ``settings``.

    For the searchers and samplers that take either a ready client or a client's settings.
    """
    if client is None:
        return LLMClient(**settings)
    check_instance("client", client, LLMClient)
    return client


def _deadline_http_client(openai: Any) -> Any:
    """The SDK's default HTTP client, with reply bodies read no further than the deadline
    of the call (``_TLS.deadline``): httpx's read timeout is per read, so a reply that
    trickles in would otherwise hold its worker thread for as long as it trickles. ``None``
    (the SDK's own client) with ``openai`` versions that lack ``DefaultHttpxClient``."""
    factory = getattr(openai, "DefaultHttpxClient", None)
    if not isinstance(factory, type):
        return None

    class _Client(factory):  # type: ignore[misc,valid-type]
        def __del__(self) -> None:  # as the SDK's own client: connections closed with it
            with contextlib.suppress(Exception):
                self.close()

    return _Client(event_hooks={"response": [_guard_body]})


_GUARDS: dict[str, type] = {}


def _guard_body(response: Any) -> None:
    """httpx response hook (before the body is read): stop reading at ``_TLS.deadline``."""
    deadline = getattr(_TLS, "deadline", None)
    if deadline is None:
        return
    # The HTTP library the SDK uses (httpx, or a fork), so that its own timeout is raised.
    lib = sys.modules.get(type(response).__module__.partition(".")[0])
    if not all(hasattr(lib, name) for name in ("SyncByteStream", "ReadTimeout")):
        return  # an HTTP library this guard does not know: the pool replacement still acts
    guard = _GUARDS.get(lib.__name__)
    if guard is None:

        class _BodyBeforeDeadline(lib.SyncByteStream):  # type: ignore[name-defined,misc]
            def __init__(self, stream: Any, deadline: float) -> None:
                self._stream, self._deadline = stream, deadline

            def __iter__(self) -> Any:
                for chunk in self._stream:
                    if time.monotonic() > self._deadline:
                        raise lib.ReadTimeout("the reply was still arriving at the deadline")
                    yield chunk

            def close(self) -> None:
                self._stream.close()

        guard = _GUARDS[lib.__name__] = _BodyBeforeDeadline
    response.stream = guard(response.stream, deadline)


def _texts_and_usage(resp: Any) -> tuple[list[str], dict[str, int]]:
    """Texts of a ``ChatCompletion``'s choices (``""`` for empty ones) and its token usage."""
    try:
        choices = list(resp.choices or [])
        texts = [str((c.message.content if c.message else None) or "") for c in choices]
    except (AttributeError, TypeError) as exc:
        raise LLMError("protocol", f"reply is not a chat completion: {exc}") from exc
    if not texts:
        raise LLMError("protocol", "reply has no choices")
    usage: dict[str, int] = {}
    u = getattr(resp, "usage", None)
    for name in ("prompt_tokens", "completion_tokens"):
        value = getattr(u, name, None) if u is not None else None
        if isinstance(value, int):
            usage[name] = value
    return texts, usage
