"""A dependency-free progress bar for the command-line tools."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Single-line progress bar on a terminal; periodic plain lines otherwise (CI logs).

    Example:
        >>> bar = Progress(100, desc="train", enabled=False)
        >>> bar.update(1, lr="0.01")
        >>> bar.close()
    """

    def __init__(
        self, total: int, *, desc: str = "", stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.total = max(1, int(total))
        self.desc = desc
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.n = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._last_decile = -1
        self._start = time.perf_counter()

    def update(self, n: int = 1, **postfix: object) -> None:
        """Advance by ``n`` and show ``postfix`` fields (e.g. stage, phase, lr, loss)."""
        self.n += n
        if not self.enabled:
            return
        now = time.perf_counter()
        done = self.n >= self.total
        if self._tty:
            if now - self._last < 0.1 and not done:
                return
            self._last = now
            self.stream.write("\r" + self._line(postfix) + "\033[K")
        else:
            decile = min(10, 10 * self.n // self.total)
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(self._line(postfix) + "\n")
        self.stream.flush()

    def _line(self, postfix: dict[str, object]) -> str:
        frac = min(1.0, self.n / self.total)
        width = 24
        filled = int(frac * width)
        bar = "#" * filled + "-" * (width - filled)
        elapsed = time.perf_counter() - self._start
        fields = " ".join(f"{k}={v}" for k, v in postfix.items())
        return f"{self.desc} [{bar}] {self.n}/{self.total} {elapsed:5.1f}s {fields}".rstrip()

    def close(self) -> None:
        """Finish the line."""
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()
