"""Running wrk (the load generator) on the client CPU and reading its summary.

wrk is closed-loop: ``-c`` connections each send a request as soon as the previous answer arrived (plus the
optional think time of ``load.lua``), so at c=64 it measures capacity and with think time it measures latency
at a modest, roughly fixed rate without the client's own queueing in the numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lib.procs import CLIENT_CPU

LUA = Path(__file__).with_name("load.lua")


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int
    status_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        return max(0, self.requests - self.status_errors)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def run_wrk(
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    connections: int,
    seconds: float,
    think_ms: float = 0.0,
    keys_file: Path | None = None,
    bodies_file: Path | None = None,
    timeout_s: int = 10,
) -> WrkResult:
    """One wrk phase; raises when wrk is missing or prints no summary."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    env = {
        **os.environ,
        "BENCH_BODY": body.decode(),
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items()),
        "BENCH_THINK_MS": str(think_ms),
        "BENCH_KEYS_FILE": str(keys_file) if keys_file else "",
        "BENCH_BODIES_FILE": str(bodies_file) if bodies_file else "",
    }
    duration = max(1, round(seconds))
    command = [
        "taskset",
        "-c",
        CLIENT_CPU,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(LUA),
        url,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_WRK "):
            data = json.loads(line[len("BENCH_WRK ") :])
            errors = data["err_connect"] + data["err_read"] + data["err_write"] + data["err_timeout"]
            return WrkResult(
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                errors=errors,
                status_errors=data["err_status"],
                p50_ms=data["p50"] / 1000,
                p90_ms=data["p90"] / 1000,
                p99_ms=data["p99"] / 1000,
                mean_ms=data["lat_mean"] / 1000,
                max_ms=data["lat_max"] / 1000,
            )
    raise RuntimeError(f"wrk gave no summary (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def think_for_rate(connections: int, rate: float) -> float:
    """Mean think time (ms) so ``connections`` closed-loop connections offer about ``rate`` requests/s."""
    return 1000.0 * connections / rate
