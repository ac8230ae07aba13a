"""A scripted OpenAI-compatible Chat Completions server on loopback (tests and benchmark).

A real HTTP server (stdlib ``http.server`` in a daemon thread) that answers
``POST /v1/chat/completions`` with replies the ``openai`` client accepts. What each request
gets is a *behaviour*:

* ``"healthy"``: valid JSON answering the searcher's prompt (random in-bounds configs, or one
  prediction per candidate), seeded by the request's ``seed``;
* ``"prose"``: the same JSON wrapped in prose and a code fence;
* ``"garbage"``: text without JSON; ``"nan"``: NaN values; ``"out_of_bounds"``: values far
  above the upper bounds; ``"duplicates"``: the same config repeated; ``"too_few"``: one
  config only (or one prediction);
* ``"timeout"``: sleeps ``sleep`` seconds before a healthy reply; ``"trickle"``: sends the
  healthy reply a few bytes at a time over ``sleep`` seconds (every read is quick, so only a
  deadline on the whole call stops the wait);
* ``"http_4xx"`` (400), ``"http_5xx"`` (503), ``"rate_limit"`` (429 with
  ``Retry-After: retry_after``).

The behaviour is taken from ``script`` (consumed one per request) while it lasts, then drawn
from ``faults`` (``{behaviour: probability}``, the rest healthy) or ``behaviour``. A refused
connection needs no server: :func:`closed_port_url` gives a loopback URL nobody listens on.
``replies`` queues verbatim reply texts for the next healthy requests. The server tests
mechanics only: its "predictions" are random, so no search-quality claim may rest on it.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BEHAVIOURS = (
    "healthy",
    "prose",
    "garbage",
    "nan",
    "out_of_bounds",
    "duplicates",
    "too_few",
    "timeout",
    "trickle",
    "http_4xx",
    "http_5xx",
    "rate_limit",
)
_SPACE_RE = re.compile(r"^Search space \(JSON\): (\{.*\})$", re.M)
_FORMAT_RE = re.compile(r'\{"(configs|predictions)": \[\.\.\.\]\} with (\d+)')


def closed_port_url() -> str:
    """A ``/v1`` base URL on a loopback port with no listener (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class LLMServer:
    """The scripted server; use as a context manager or call :meth:`start` / :meth:`stop`.

    Args:
        behaviour: Default behaviour (one of :data:`BEHAVIOURS`).
        faults: ``{behaviour: probability}`` drawn per request (the remainder: ``behaviour``).
        seed: Seed of the fault draws.
        sleep: Seconds the ``"timeout"`` behaviour sleeps.
        retry_after: ``Retry-After`` seconds of ``"rate_limit"`` replies.
    """

    def __init__(
        self,
        behaviour: str = "healthy",
        *,
        faults: dict[str, float] | None = None,
        seed: int = 0,
        sleep: float = 2.0,
        retry_after: float = 0.05,
    ) -> None:
        for b in [behaviour, *(faults or {})]:
            if b not in BEHAVIOURS:
                raise ValueError(f"behaviour must be one of {BEHAVIOURS}, got {b!r}")
        self.behaviour = behaviour
        self.faults = dict(faults or {})
        self.sleep = sleep
        self.retry_after = retry_after
        self.script: list[str] = []
        #: Verbatim reply contents for the next healthy requests, in order (then generated).
        self.replies: list[str] = []
        #: Per request: ``(behaviour, kind)``, kind ``"configs"``/``"predictions"``/``"?"``.
        self.log: list[tuple[str, str]] = []
        #: Parsed request bodies, in arrival order.
        self.bodies: list[dict[str, Any]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> LLMServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: with Nagle's algorithm and delayed
            # ACKs each reply would wait ~40 ms, which is the server's cost, not the client's.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_script(self, behaviours: Iterable[str]) -> None:
        """Behaviours for the next requests, in order (then the default/fault draws)."""
        with self._lock:
            self.script = list(behaviours)

    # --------------------------------------------------------------- serving
    def _next_behaviour(self) -> str:
        with self._lock:
            if self.script:
                return self.script.pop(0)
            u = self._rng.random()
            for b, p in self.faults.items():
                if u < p:
                    return b
                u -= p
            return self.behaviour

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        if h.path.rstrip("/") != "/v1/chat/completions":
            self._send(h, 404, {"error": {"message": "not found", "type": "invalid_request"}})
            return
        try:
            body = json.loads(raw)
            text = "\n".join(m["content"] for m in body["messages"])
        except (ValueError, KeyError, TypeError):
            self._send(h, 400, {"error": {"message": "bad request", "type": "invalid_request"}})
            return
        behaviour = self._next_behaviour()
        fmt = _FORMAT_RE.search(text)
        kind = fmt.group(1) if fmt else "?"
        with self._lock:
            self.log.append((behaviour, kind))
            self.bodies.append(body)
        if behaviour == "http_4xx":
            self._send(h, 400, {"error": {"message": "scripted 400", "type": "invalid_request"}})
            return
        if behaviour == "http_5xx":
            self._send(h, 503, {"error": {"message": "scripted 503", "type": "server_error"}})
            return
        if behaviour == "rate_limit":
            headers = {"Retry-After": f"{self.retry_after:g}"}
            err = {"error": {"message": "scripted 429", "type": "rate_limit"}}
            self._send(h, 429, err, headers)
            return
        if behaviour == "timeout":
            time.sleep(self.sleep)
        seed = body.get("seed")
        n = max(1, int(body.get("n") or 1))
        rng = random.Random(f"{seed}:{len(text)}")
        with self._lock:
            canned = self.replies.pop(0) if self.replies and behaviour == "healthy" else None
        if canned is not None:
            contents = [canned] * n
        else:
            contents = [self._content(behaviour, text, fmt, rng) for _ in range(n)]
        words = len(text.split())
        reply = {
            "id": f"chatcmpl-{len(self.log)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c},
                    "finish_reason": "stop",
                }
                for i, c in enumerate(contents)
            ],
            "usage": {
                "prompt_tokens": words,
                "completion_tokens": sum(len(c.split()) for c in contents),
                "total_tokens": words + sum(len(c.split()) for c in contents),
            },
        }
        with contextlib.suppress(OSError):  # the client gave up (timeout behaviour)
            self._send(h, 200, reply, trickle=self.sleep if behaviour == "trickle" else 0.0)

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler,
        status: int,
        obj: Any,
        headers: dict[str, str] | None = None,
        trickle: float = 0.0,
    ) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if trickle > 0.0:
            chunks = [data[i : i + 8] for i in range(0, len(data), 8)]
            for chunk in chunks:
                h.wfile.write(chunk)
                h.wfile.flush()
                time.sleep(trickle / len(chunks))
            return
        h.wfile.write(data)

    @staticmethod
    def _content(behaviour: str, text: str, fmt: re.Match | None, rng: random.Random) -> str:
        if behaviour == "garbage" or fmt is None:
            return "I think a learning rate of about three milli would be a good choice."
        kind, count = fmt.group(1), int(fmt.group(2))
        space_m = _SPACE_RE.search(text)
        space = json.loads(space_m.group(1)) if space_m else {}
        if kind == "predictions":
            values: list[Any] = [round(rng.uniform(0.0, 1.0), 4) for _ in range(count)]
            if behaviour == "nan":
                values = [math.nan] * count
            elif behaviour == "too_few":
                values = values[:1]
            obj: Any = {"predictions": values}
        else:
            configs = []
            for _ in range(count):
                cfg = {}
                for name, spec in space.items():
                    lo, hi = float(spec["low"]), float(spec["high"])
                    if spec.get("scale") == "log":
                        x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
                    else:
                        x = rng.uniform(lo, hi)
                    if behaviour == "nan":
                        x = math.nan
                    elif behaviour == "out_of_bounds":
                        x = hi * 10.0 + 1.0
                    cfg[name] = x
                configs.append(cfg)
            if behaviour == "duplicates":
                configs = [configs[0]] * count
            elif behaviour == "too_few":
                configs = configs[:1]
            obj = {"configs": configs}
        out = json.dumps(obj)  # NaN is written as the bare token NaN, as some servers do
        if behaviour == "prose":
            return (
                f"Sure! Based on the history, here is my answer:\n```json\n{out}\n```\nGood luck!"
            )
        return out
