"""``tenantgate serve --workers N``: one gateway process per core, all on one port.

The supervisor binds the port once with ``SO_REUSEPORT`` (which also resolves ``--port 0``), then starts N
ordinary ``tenantgate serve`` processes that bind the same port with ``SO_REUSEPORT``: the kernel spreads new
connections over them. Each worker is a whole gateway (its own event loop, caches and pools); what must be
exact across them lives in shared stores, so N > 1 needs Redis for limits and budgets (idempotency records are
in Redis or the database either way). The supervisor forwards SIGTERM/SIGINT (each worker drains), restarts a
worker that dies, and writes ``--port-file`` once every worker listens.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from tenantgate.edge.server import write_port_file

log = logging.getLogger("tenantgate.server")

_RESTART_DELAY_S = 1.0


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other processes may bind too (not yet listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    def __init__(self, workers: int, host: str, port: int, env: dict[str, str], port_file: Path | None) -> None:
        self._count = workers
        self._host = host
        self._reserved = reuse_port_socket(host, port)  # held (never listening) so the port stays ours
        self.port = int(self._reserved.getsockname()[1])
        self._env = env
        self._port_file = port_file
        self._ready_dir = Path(tempfile.mkdtemp(prefix="tenantgate-workers-"))
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def _start(self, index: int) -> None:
        ready = self._ready_dir / f"worker-{index}"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "tenantgate.cli.main", "serve", "--reuse-port"]
        argv += ["--host", self._host, "--port", str(self.port), "--port-file", str(ready)]
        env = {**self._env, "TENANTGATE_WORKER": str(index)}
        self._children[index] = subprocess.Popen(argv, env=env)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(1, self._count + 1):
            self._start(index)
        announced = False
        while not self._stopping:
            if not announced and all((self._ready_dir / f"worker-{i}").exists() for i in self._children):
                announced = True
                log.info("%d workers listening on %s:%d", self._count, self._host, self.port)
                if self._port_file is not None:
                    write_port_file(self._port_file, self.port)
            for index, child in list(self._children.items()):
                if child.poll() is not None and not self._stopping:
                    log.error("worker %d exited with %s; starting it again", index, child.returncode)
                    time.sleep(_RESTART_DELAY_S)
                    if not self._stopping:
                        self._start(index)
            time.sleep(0.1)
        codes = [child.wait() for child in self._children.values()]
        self._reserved.close()
        return 0 if all(code == 0 for code in codes) else 1


def worker_env(overrides: dict[str, object]) -> dict[str, str]:
    """The environment for workers: this process's, plus the command-line settings as TENANTGATE_ variables."""
    env = dict(os.environ)
    for name, value in overrides.items():
        env[f"TENANTGATE_{name.upper()}"] = str(value)
    return env


def migrate_once(database_url: str) -> None:
    import asyncio

    from tenantgate.storage.database import create_engine, migrate

    async def run() -> None:
        engine = create_engine(database_url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
