"""Starting, pinning and stopping the processes of a benchmark run, and finding free ports.

Every process is started in its own session (so it and anything it forks form one process group that can be
stopped as a whole) and pinned with ``taskset`` to the CPU its role belongs on: the gateway alone on CPU 1,
everything else (mocks, load generators, this harness) on CPU 0. ``taskset`` execs the command, so the PID
we get is the PID of the measured process itself, which is what the /proc readers need.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

GATEWAY_CPU = "1"
CLIENT_CPU = "0"

_RUNNING: list[Proc] = []


class Proc:
    """One started process (group). ``stop()`` is idempotent and also runs at interpreter exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: str,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log
        full_env = {**os.environ, **(env or {})}
        command = ["taskset", "-c", cpu, *argv] if shutil.which("taskset") else list(argv)
        self._log_file = log.open("ab")
        self.popen = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        _RUNNING.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the whole group, then SIGKILL what is left after ``grace`` seconds."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log_file.close()

    def tail(self, lines: int = 20) -> str:
        """The end of the process's log, for error messages when it failed to start."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_all() -> None:
    """Stop everything this harness started (newest first); registered for exit and for SIGINT/SIGTERM."""
    for proc in reversed(list(_RUNNING)):
        proc.stop(grace=5.0)


def _on_signal(signum: int, _frame: object) -> None:
    stop_all()
    sys.exit(128 + signum)


def install_cleanup() -> None:
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def pin_self_to_client_cpu() -> None:
    """The harness (and the load generators it spawns) must stay off the gateway's CPU."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {int(CLIENT_CPU)})


def raise_fd_limit() -> int:
    """1,000 open streams need ~2,000 sockets in the gateway and 1,000 in the client; children inherit this."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: Proc, timeout: float = 60.0, headers: Mapping[str, str] | None = None) -> None:
    """Poll ``url`` until it answers 2xx; fail early with the log tail if the process died."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited during start-up:\n{proc.tail()}")
        try:
            request = urllib.request.Request(url, headers=dict(headers or {}))
            with urllib.request.urlopen(request, timeout=2) as response:
                if 200 <= response.status < 300:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout:.0f}s ({last}):\n{proc.tail()}")


def ensure_apt(binary: str, package: str) -> bool:
    """Install a Debian package when its binary is missing (we run as root on Debian); True when present."""
    if shutil.which(binary):
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    print(f"installing {package} (apt-get) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        env=env,
        check=False,
        capture_output=True,
    )
    return shutil.which(binary) is not None or Path(f"/usr/sbin/{binary}").exists()
