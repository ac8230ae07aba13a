"""A real Flower deployment on one machine: a SuperLink and SuperNodes as processes on loopback.

For tests and demos of a Flower app (no TLS, no authentication; never expose the ports)::

    with LocalFederation(["partition-id=0 num-partitions=2",
                          "partition-id=1 num-partitions=2"], workdir=tmp) as fed:
        run_id = fed.run(write_app(tmp / "app"), {"num-rounds": 5})
        assert fed.wait(run_id) == "finished:completed"

Each component runs in its own process group (``flower-superlink --insecure``,
``flower-supernode --insecure``), with ``FLWR_HOME`` in ``workdir`` so the user's Flower
configuration is never touched; :meth:`LocalFederation.close` stops every group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autolr._errors import ConfigError, StateError

__all__ = ["LocalFederation", "write_app"]

_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "autolr"

[tool.flwr.app.components]
serverapp = "{serverapp}"
clientapp = "{clientapp}"

[tool.flwr.app.config]
{config}
"""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def write_app(
    directory: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
    *,
    serverapp: str = "autolr.integrations.flower.digits:server_app",
    clientapp: str = "autolr.integrations.flower.digits:client_app",
    name: str = "fedhyperdigits",
) -> Path:
    """Write a Flower app's ``pyproject.toml`` (default: the digits app) and return its folder.

    ``config`` becomes ``[tool.flwr.app.config]``: only these keys can be overridden per run.
    """
    from . import digits

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    keys = {**digits.DEFAULTS, **(config or {})}
    body = "\n".join(f"{k} = {_toml(v)}" for k, v in keys.items())
    text = _PYPROJECT.format(name=name, serverapp=serverapp, clientapp=clientapp, config=body)
    (path / "pyproject.toml").write_text(text)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalFederation:
    """A SuperLink and one SuperNode per ``node_configs`` entry, as processes on loopback.

    Args:
        node_configs: per SuperNode, its ``--node-config`` string (e.g.
            ``"partition-id=0 num-partitions=2"``).
        workdir: folder for ``FLWR_HOME`` and the components' logs (``superlink.log``,
            ``node-<i>.log``).
        start_timeout: seconds to wait for the SuperLink to listen.

    Raises:
        ConfigError: no node configs.
        StateError: a component failed to start (its log is quoted).
    """

    def __init__(
        self,
        node_configs: Sequence[str],
        *,
        workdir: str | os.PathLike[str],
        start_timeout: float = 60.0,
    ) -> None:
        if isinstance(node_configs, str) or not node_configs:
            raise ConfigError(
                f"node_configs must be a non-empty list of --node-config strings, got "
                f"{node_configs!r}"
            )
        self.node_configs = list(node_configs)
        self.workdir = Path(workdir)
        self.start_timeout = float(start_timeout)
        self.bindir = Path(sys.executable).parent
        self.port = _free_port()
        self.home = self.workdir / "flwr-home"
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "FLWR_TELEMETRY_ENABLED": "0",
            # the SuperLink/SuperNodes start flower-superexec and flwr-clientapp from PATH
            "PATH": os.pathsep.join([str(self.bindir), os.environ.get("PATH", "")]),
        }
        self.superlink: subprocess.Popen[bytes] | None = None
        self.nodes: list[subprocess.Popen[bytes]] = []

    # ------------------------------------------------------------------ processes
    def _start(self, log: str, *cmd: str) -> subprocess.Popen[bytes]:
        exe = self.bindir / cmd[0]
        with open(self.workdir / log, "wb") as fh:
            return subprocess.Popen(
                [str(exe if exe.exists() else cmd[0]), *cmd[1:]],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,  # own process group: close() also stops its children
            )

    def start(self) -> LocalFederation:
        """Start the SuperLink, wait until it listens, then start the SuperNodes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        (self.home / "config.toml").write_text(
            f'[superlink.local-test]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        self.superlink = self._start(
            "superlink.log",
            "flower-superlink",
            "--insecure",
            "--disable-runtime-dependency-installation",  # no package index needed
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.superlink.poll() is not None:
                raise StateError(f"the SuperLink exited: {self._tail('superlink.log')}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise StateError(f"the SuperLink did not listen in {self.start_timeout} s")
            time.sleep(0.2)
        for cfg in self.node_configs:
            self.add_node(cfg)
        return self

    def add_node(self, node_config: str) -> int:
        """Start one more SuperNode; returns its index in :attr:`nodes`."""
        self.nodes.append(
            self._start(
                f"node-{len(self.nodes)}.log",
                "flower-supernode",
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--port",
                str(_free_port()),
                "--node-config",
                node_config,
            )
        )
        return len(self.nodes) - 1

    def kill_node(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL: a crash) to SuperNode ``index`` and its ClientApps."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.nodes[index].pid, sig)

    def _tail(self, log: str, chars: int = 2000) -> str:
        path = self.workdir / log
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def close(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL after 20 s)."""
        procs = [*self.nodes, *([self.superlink] if self.superlink else [])]
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ runs
    def flwr(self, *args: str) -> dict[str, Any]:
        """Run ``flwr <args> --format json`` against this federation; returns the JSON."""
        out = subprocess.run(
            [str(self.bindir / "flwr"), *args, "--format", "json"],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=120,
        )
        try:
            data = json.loads(out.stdout)
        except json.JSONDecodeError:
            raise StateError(f"flwr {' '.join(args)} failed: {out.stdout}{out.stderr}") from None
        if not data.get("success", False):
            raise StateError(f"flwr {' '.join(args)} failed: {data}")
        return data

    def run(self, app: str | os.PathLike[str], run_config: Mapping[str, Any] | None = None) -> str:
        """Submit ``app`` (a folder with a Flower ``pyproject.toml``); returns the run ID."""
        args = ["run", str(app), "local-test"]
        if run_config:
            args += ["--run-config", " ".join(f"{k}={_toml(v)}" for k, v in run_config.items())]
        return str(self.flwr(*args)["run-id"])

    def status(self, run_id: str) -> str:
        """The run's status, e.g. ``"running"`` or ``"finished:completed"``."""
        runs = self.flwr("ls", "local-test")["runs"]
        return str(next(r["status"] for r in runs if str(r["run-id"]) == run_id))

    def wait(
        self,
        run_id: str,
        timeout: float = 600.0,
        *,
        poll: float = 1.0,
        on_poll: Callable[[], None] | None = None,
    ) -> str:
        """Wait until the run finishes (or ``timeout``); returns its last status.

        ``on_poll`` is called between polls (e.g. to kill a node at some point of the run).
        """
        deadline = time.monotonic() + timeout
        status = self.status(run_id)
        while not status.startswith("finished") and time.monotonic() < deadline:
            if on_poll is not None:
                on_poll()
            time.sleep(poll)
            status = self.status(run_id)
        return status
