"""Test helpers: real processes on loopback ports (mock upstream, gateway) and small admin-API clients."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ADMIN_KEY = "test-admin-key-0123456789"
PG_URL = os.environ.get("TENANTGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TENANTGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LOG_DIR = Path(os.environ.get("TENANTGATE_TEST_LOG_DIR", "/tmp/tenantgate-test-logs"))


# -- every process a test starts ------------------------------------------------------------------------------
#
# Each one runs in its own session (process group) and is recorded here until reaped, so a failing or
# interrupted test never leaves a gateway, mock or redis-server behind: fixtures stop what they start, and the
# registry is the backstop (pytest_sessionfinish in tests/conftest.py, atexit, SIGTERM; and on Linux the child
# gets SIGKILL if the test process itself is killed).

_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}
_RESERVED: list[socket.socket] = []
_PR_SET_PDEATHSIG = 1


def _child_setup(die_with_parent: bool, open_files: int | None) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        if open_files is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))
        if die_with_parent:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return setup


def spawn(
    args: list[str], env: dict[str, str] | None = None, *, open_files: int | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start a process in its own process group, registered for :func:`reap`/:func:`reap_all`.

    From the main thread on Linux it is also killed when the test process dies (even by SIGKILL); a parent
    death signal is tied to the spawning thread, so processes started from other threads rely on the rest.
    ``open_files`` sets the child's soft RLIMIT_NOFILE.
    """
    main = threading.current_thread() is threading.main_thread() and sys.platform.startswith("linux")
    setup = _child_setup(main, open_files) if main or open_files is not None else None
    proc = subprocess.Popen(args, env=env, start_new_session=True, preexec_fn=setup, **popen)
    _SPAWNED[proc.pid] = proc
    return proc


def reap(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Signal the process group, wait up to ``timeout``, then SIGKILL the group; returns the exit code.

    A process already waited for is only unregistered (its pid, hence its group id, may be reused by now).
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group, the leader's children included
        proc.wait()
    _SPAWNED.pop(proc.pid, None)
    return proc.returncode


def reap_all() -> None:
    """Kill every process a test started and did not reap (a failed or interrupted test's leftovers)."""
    for proc in list(_SPAWNED.values()):
        reap(proc, signal.SIGKILL, timeout=5)


def _reap_on_sigterm(signum: int, frame: object) -> None:
    reap_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def install_sigterm_backstop() -> None:
    """A SIGTERM to the test run (a CI timeout) reaps the children before the default action."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _reap_on_sigterm)


atexit.register(reap_all)


def closed_port() -> int:
    """A loopback port where nothing listens, and nothing will while this process lives (connections to it are
    refused): the socket stays bound without listening. For dead backends; servers under test bind port 0."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _RESERVED.append(sock)
    return int(sock.getsockname()[1])


def wait_port_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """The port a server wrote (atomically) to ``path`` once listening."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before writing {path}")
        time.sleep(0.02)
    raise RuntimeError(f"no port in {path} within {timeout}s")


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        return reap(self.proc, sig, timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _spawn(args: list[str], env: dict[str, str], name: str, ready_path: str, open_files: int | None = None) -> Process:
    """Start a server with ``--port 0 --port-file``, read its port back and wait until ``ready_path`` answers."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    fd, log_name = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=LOG_DIR)
    log_path = Path(log_name)
    port_file = log_path.with_suffix(".port")
    with os.fdopen(fd, "wb") as log:
        argv = [*args, "--port", "0", "--port-file", str(port_file)]
        proc = spawn(argv, env, open_files=open_files, stdout=log, stderr=subprocess.STDOUT)
    process = Process(proc, 0, log_path)
    try:
        process.port = wait_port_file(port_file, proc)
        wait_http(f"{process.url}{ready_path}", proc)
    except RuntimeError as exc:
        process.stop(signal.SIGKILL)
        raise RuntimeError(f"{exc}\n--- {name} log ---\n{process.log_text()}") from None
    finally:
        port_file.unlink(missing_ok=True)
    return process


def start_mock(*extra: str) -> Process:
    args = [sys.executable, "-m", "tenantgate.mock.upstream", *extra]
    return _spawn(args, dict(os.environ), "mock", "/health")


@dataclass
class Gateway:
    process: Process
    database_url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)

    def create_tenant(self, name: str, **limits: Any) -> dict[str, Any]:
        with self.admin() as client:
            response = client.post("/admin/tenants", json={"name": name, **limits})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def create_key(self, tenant_id: str, **fields: Any) -> dict[str, Any]:
        with self.admin() as client:
            response = client.post("/admin/keys", json={"tenant_id": tenant_id, **fields})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def new_key(self, name: str, **fields: Any) -> str:
        tenant = self.create_tenant(name)
        return str(self.create_key(tenant["id"], **fields)["key"])


def gateway_env(database_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TENANTGATE_")}
    env.update(
        {
            "TENANTGATE_DATABASE_URL": database_url,
            "TENANTGATE_ADMIN_KEY": ADMIN_KEY,
            "TENANTGATE_SECRET_KEY_FILE": str(tmp / "tenantgate.secret"),
            "TENANTGATE_USAGE_FLUSH_INTERVAL": "0.2",
            "TENANTGATE_SYNC_INTERVAL": "0.25",
        }
    )
    env.update(extra)
    return env


def start_gateway(
    database_url: str, tmp: Path, config: str | None = None, *, open_files: int | None = None, **extra_env: str
) -> Gateway:
    args = [sys.executable, "-m", "tenantgate.cli.main", "serve"]
    if config is not None:
        fd, config_name = tempfile.mkstemp(prefix="config-", suffix=".yaml", dir=tmp)
        with os.fdopen(fd, "w") as config_file:
            config_file.write(config)
        args += ["--config", config_name]
    env = gateway_env(database_url, tmp, **extra_env)
    process = _spawn(args, env, "gateway", "/health", open_files)
    return Gateway(process, database_url, env)


def mock_config(mock_port: int, api_key: str | None = "upstream-secret-abc123") -> str:
    key_line = f"    api_key: {api_key}\n" if api_key else ""
    return f"""\
backends:
  - name: mock-a
    base_url: http://127.0.0.1:{mock_port}/v1
{key_line}    models:
      - name: mock-gpt
        input_price_per_mtok: 1.0
        output_price_per_mtok: 2.0
      - name: mock-small
      - name: mock-embed
        input_price_per_mtok: 0.5
      - name: gpt-public
        upstream_model: mock-gpt
        input_price_per_mtok: 3.0
        output_price_per_mtok: 4.0
      - name: pricey
        upstream_model: mock-gpt
        input_price_per_mtok: 1000.0
        output_price_per_mtok: 2000.0
"""


async def require_redis(url: str = REDIS_URL) -> None:
    """Fail loudly (never skip) when the Redis the suite needs is not there."""
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        await client.ping()
    except Exception as exc:
        raise RuntimeError(f"Redis is not reachable at {url}: {exc}") from exc
    finally:
        await client.aclose()
