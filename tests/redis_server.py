"""A private redis-server process for tests that stop and restart Redis (the shared one is left alone).

It listens on a Unix socket in its own temporary directory, not on a TCP port: there is no port to race for,
and a restart is always on the same address. The process is started through :func:`tests.support.spawn`, so
it is reaped even when the test that started it fails.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support import reap, spawn


def _private_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="tg-redis-", dir="/tmp"))  # short: a socket path has ~100 bytes
    atexit.register(shutil.rmtree, path, True)
    return path


@dataclass
class RedisServer:
    directory: Path = field(default_factory=_private_dir)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    def start(self) -> RedisServer:
        args = ["redis-server", "--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        args += ["--dir", str(self.directory), "--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.proc = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return self
                except (redis.ConnectionError, redis.TimeoutError):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            reap(self.proc, signal.SIGKILL)  # an abrupt outage, as the tests want
            self.proc = None
