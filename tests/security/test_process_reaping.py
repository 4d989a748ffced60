"""Issue 9, class 13: the test suite itself. Servers under test bind port 0 and report the port they got (no
port is picked, released and raced for), and every process a test starts is reaped, even when the test fails
or the test run is killed.

The reaping tests run an inner pytest session on a throw-away test that starts a mock upstream, a private
redis-server and a plain child process, and then fails, or is killed mid-test; afterwards none may be alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ADMIN_KEY, gateway_env, reap, spawn, wait_port_file

ROOT = Path(__file__).resolve().parents[2]

INNER_TEST = """
import os
import sys
import time
from pathlib import Path

from tests.redis_server import RedisServer
from tests.support import spawn, start_mock


def test_starts_processes_and_never_stops_them():
    mock = start_mock()
    redis = RedisServer().start()
    child = spawn([sys.executable, "-c", "import time; time.sleep(600)"])
    pids_file = Path(os.environ["PIDS_FILE"])
    partial = pids_file.with_suffix(".partial")
    partial.write_text(f"{mock.proc.pid} {redis.proc.pid} {child.pid}")
    partial.rename(pids_file)
    if os.environ["INNER_MODE"] == "fail":
        go = pids_file.with_suffix(".go")  # the outer test checks they all run first
        while not go.exists():
            time.sleep(0.02)
        raise AssertionError("fails on purpose, leaving its processes to the backstops")
    time.sleep(600)  # killed from outside
"""


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, already dead and waiting for its parent, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def run_inner(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[bytes], list[int]]:
    test_file = tmp_path / "test_inner_leaks.py"
    test_file.write_text(textwrap.dedent(INNER_TEST))
    pids_file = tmp_path / "pids"
    env = dict(os.environ)
    # Its own log folder: the inner session's pytest_configure empties the one it is given.
    env |= {"PIDS_FILE": str(pids_file), "INNER_MODE": mode, "TENANTGATE_TEST_LOG_DIR": str(tmp_path / "logs")}
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", str(test_file)]
    inner = spawn(args, env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not pids_file.exists():
        assert inner.poll() is None, "the inner test session ended before it started its processes"
        assert time.monotonic() < deadline, "the inner test session did not start its processes in time"
        time.sleep(0.05)
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert len(pids) == 3 and all(alive(pid) for pid in pids)
    pids_file.with_suffix(".go").touch()
    return inner, pids


def assert_all_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in pids):
        left = [pid for pid in pids if alive(pid)]
        assert time.monotonic() < deadline, f"processes left behind: {left}"
        time.sleep(0.05)


def test_a_failing_test_leaves_no_process_behind(tmp_path: Path) -> None:
    inner, pids = run_inner(tmp_path, "fail")
    assert inner.wait(60) == 1  # the inner test failed, as it should
    assert_all_gone(pids)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_killed_test_run_leaves_no_process_behind(tmp_path: Path, sig: int) -> None:
    inner, pids = run_inner(tmp_path, "hang")
    os.kill(inner.pid, sig)  # a CI timeout, or worse: the pytest process only, not its group
    inner.wait(60)
    assert_all_gone(pids)


def test_servers_bind_port_0_and_report_the_port(tmp_path: Path) -> None:
    """Two gateways and two mocks started at once, each on port 0: each reports its own working port."""
    procs, files = [], []
    try:
        for n in range(2):
            home = tmp_path / f"gateway-{n}"  # its own database and secret file
            home.mkdir()
            env = gateway_env(f"sqlite+aiosqlite:///{home / 'tg.db'}", home)
            for command in (["tenantgate.cli.main", "serve"], ["tenantgate.mock.upstream"]):
                port_file = tmp_path / f"{command[0]}-{n}.port"
                args = [sys.executable, "-m", *command, "--port", "0", "--port-file", str(port_file)]
                procs.append(spawn(args, env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                files.append(port_file)
        ports = [wait_port_file(path, proc) for path, proc in zip(files, procs, strict=True)]
        assert len(set(ports)) == 4 and all(port > 0 for port in ports)
        for path in files:
            assert path.read_text() == f"{int(path.read_text())}\n"  # the whole number, nothing else
            assert not list(tmp_path.glob(f".{path.name}.*")), "a partial port file was left behind"
        for port in ports:
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        assert httpx.get(f"http://127.0.0.1:{ports[0]}/admin/tenants", headers=admin).status_code == 200
    finally:
        for proc in procs:
            reap(proc)
