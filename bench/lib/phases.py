"""The measurement phases: throughput, paced latency, streaming, many open streams, and the soak.

Each phase returns a plain dict (it goes into the JSON results and the Markdown tables). CPU per request is
the gateway's on-CPU time from the start of a phase until it is quiet again, divided by the requests the mock
answered in that window: counting at the mock includes requests the client gave up on, and waiting for quiet
charges the work a phase leaves behind (in-flight requests, the usage batch writer) to that phase.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.procs import CLIENT_CPU
from lib.procstat import (
    CpuMeter,
    Sampler,
    busy_percent,
    cpu_busy_counters,
    open_fds,
    status_kib,
    thread_count,
)
from lib.wrk import run_wrk, think_for_rate

SSE_CLIENT = Path(__file__).with_name("sse_client.py")


@dataclass
class Durations:
    """Phase lengths; ``--quick`` shrinks them to check the harness, not to produce numbers."""

    warmup: float = 3.0
    throughput: float = 15.0
    paced: float = 20.0
    paced_rate: float = 100.0
    paced_connections: int = 10
    stream_c1: float = 5.0
    stream_c8: float = 10.0
    stream_warmup: float = 2.0

    @classmethod
    def quick(cls) -> Durations:
        return cls(warmup=1.0, throughput=5.0, paced=6.0, stream_c1=2.0, stream_c8=3.0, stream_warmup=1.0)


@dataclass
class Target:
    """Something the load generator can hit, and how to account for it."""

    name: str
    url: str
    body: bytes
    headers: dict[str, str]
    served: Callable[[], int]  # requests answered by the mock behind it, so far
    pid: int | None = None  # the process whose CPU and memory are charged (None: direct, nothing between)
    keys_file: Path | None = None
    bodies_file: Path | None = None  # one body per line, cycled (distinct prompts); None: ``body`` every time


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def idle(pid: int, seconds: float = 3.0) -> dict[str, Any]:
    """The gateway doing nothing: background loops (config sync, usage flush) cost this much CPU per second."""
    meter = CpuMeter(pid)
    try:
        meter.settle(max_wait=5)
        cpu0 = meter.sample()
        time.sleep(seconds)
        return {
            "cpu_ms_per_s": round(1000 * (meter.sample() - cpu0) / seconds, 2),
            "rss_mib": _mib(status_kib(pid, "VmRSS")),
            "fds": open_fds(pid),
            "threads": thread_count(pid),
        }
    finally:
        meter.close()


def throughput(target: Target, d: Durations, connections: int = 64) -> dict[str, Any]:
    """Requests/s at ``connections`` after a warm-up; gateway CPU-ms per request and peak RSS."""
    run_wrk(
        target.url,
        body=target.body,
        headers=target.headers,
        connections=connections,
        seconds=d.warmup,
        keys_file=target.keys_file,
        bodies_file=target.bodies_file,
    )
    meter = CpuMeter(target.pid) if target.pid else None
    try:
        if meter:
            meter.settle()
        cpu0 = meter.sample() if meter else 0.0
        ticks0 = meter.ticks() if meter else 0.0
        served0, busy0 = target.served(), cpu_busy_counters()
        result = run_wrk(
            target.url,
            body=target.body,
            headers=target.headers,
            connections=connections,
            seconds=d.throughput,
            keys_file=target.keys_file,
            bodies_file=target.bodies_file,
        )
        busy = busy_percent(busy0, cpu_busy_counters())
        drained = meter.settle() if meter else 0.0
        served = target.served() - served0
        row: dict[str, Any] = {
            "rps": round(result.rps, 1),
            "requests": result.ok,
            "errors": result.errors + result.status_errors,
            "load_p50_ms": round(result.p50_ms, 3),
            "load_p99_ms": round(result.p99_ms, 3),
            "cpu0_busy": busy.get("cpu0"),
            "cpu1_busy": busy.get("cpu1"),
            "upstream_per_request": round(served / result.ok, 3) if result.ok else None,
        }
        if meter and target.pid:
            cpu = meter.sample() - cpu0
            row.update(
                cpu_ms_per_req=round(1000 * cpu / max(1, served), 4),
                cpu_ms_per_req_ticks=round(1000 * (meter.ticks() - ticks0) / max(1, served), 4),
                cpu_util=round(100 * cpu / (result.seconds + drained), 1),
                drain_s=round(drained, 2),
                peak_rss_mib=_mib(status_kib(target.pid, "VmHWM")),
                rss_mib=_mib(status_kib(target.pid, "VmRSS")),
            )
        return row
    finally:
        if meter:
            meter.close()


def paced(target: Target, d: Durations) -> dict[str, Any]:
    """Latency at roughly ``paced_rate`` requests/s: closed-loop connections with a think time between requests."""
    think = think_for_rate(d.paced_connections, d.paced_rate)
    meter = CpuMeter(target.pid) if target.pid else None
    try:
        if meter:
            meter.settle()
        cpu0 = meter.sample() if meter else 0.0
        result = run_wrk(
            target.url,
            body=target.body,
            headers=target.headers,
            connections=d.paced_connections,
            seconds=d.paced,
            think_ms=think,
            keys_file=target.keys_file,
            bodies_file=target.bodies_file,
        )
        row: dict[str, Any] = {
            "rate": round(result.rps, 1),
            "p50_ms": round(result.p50_ms, 3),
            "p90_ms": round(result.p90_ms, 3),
            "p99_ms": round(result.p99_ms, 3),
            "errors": result.errors + result.status_errors,
        }
        if meter:
            row["cpu_ms_per_req"] = round(1000 * (meter.sample() - cpu0) / max(1, result.ok), 4)
        return row
    finally:
        if meter:
            meter.close()


def _sse(mode: str, url: str, body: bytes, headers: dict[str, str], **options: float) -> list[str]:
    argv = ["taskset", "-c", CLIENT_CPU, sys.executable, str(SSE_CLIENT), mode, "--url", url, "--body", body.decode()]
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    for option, number in options.items():
        argv += [f"--{option}", str(number)]
    return argv


def streaming(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float, warmup: float, pid: int | None
) -> dict[str, Any]:
    """Closed-loop streams at ``concurrency``: TTFB, TTFT and total time, and gateway CPU per stream."""
    meter = CpuMeter(pid) if pid else None
    try:
        if meter:
            meter.settle()
        cpu0 = meter.sample() if meter else 0.0
        argv = _sse("measure", url, body, headers, concurrency=concurrency, seconds=seconds, warmup=warmup)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + warmup + 120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"stream client failed: {done.stderr[-2000:]}")
        row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if meter:
            meter.settle(max_wait=5)
            # includes the warm-up streams: charge CPU over every stream the client started
            streams = row["streams"] * (seconds + warmup) / seconds
            row["cpu_ms_per_stream"] = round(1000 * (meter.sample() - cpu0) / max(1.0, streams), 3)
        row["concurrency"] = concurrency
        return row
    finally:
        if meter:
            meter.close()


def open_streams(url: str, body: bytes, headers: dict[str, str], count: int, pid: int) -> dict[str, Any]:
    """Hold ``count`` idle streams open and read the gateway's memory: (RSS with - RSS before) / count."""
    before_rss, before_fds = status_kib(pid, "VmRSS"), open_fds(pid)
    argv = _sse("hold", url, body, headers, count=count, seconds=60)
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None and client.stdin is not None
        report = json.loads(client.stdout.readline() or "{}")
        time.sleep(2.0)  # let the gateway finish any allocation that follows the first event
        with_rss, with_fds = status_kib(pid, "VmRSS"), open_fds(pid)
        threads = thread_count(pid)
        client.stdin.close()
        client.wait(60)
    finally:
        if client.poll() is None:
            client.kill()
    time.sleep(3.0)
    opened = int(report.get("opened", 0))
    return {
        "count": count,
        "opened": opened,
        "failed": report.get("failed"),
        "open_seconds": report.get("open_seconds"),
        "rss_before_mib": _mib(before_rss),
        "rss_with_mib": _mib(with_rss),
        "kib_per_stream": round((with_rss - before_rss) / max(1, opened), 1),
        "fds_before": before_fds,
        "fds_with": with_fds,
        "threads_with": threads,
        "rss_after_mib": _mib(status_kib(pid, "VmRSS")),
        "fds_after": open_fds(pid),
        "peak_rss_mib": _mib(status_kib(pid, "VmHWM")),
    }


def soak(
    plain: Target,
    stream_url: str,
    stream_body: bytes,
    seconds: float,
    interval: float,
    pid: int,
    stream_concurrency: int = 8,
) -> dict[str, Any]:
    """Steady mixed load (paced plain requests + streams, a quarter abandoned mid-way); sample every ``interval``.

    Growth is measured from the end of the warm-up (the first 10 % of the run, at least one interval), when
    pools, caches and allocator arenas have reached their working size.
    """
    meter = CpuMeter(pid)
    sampler = Sampler(pid, meter, interval)
    meter.settle()
    idle = sampler.take()
    sampler.samples.clear()
    sampler.start()
    results: dict[str, Any] = {}

    def plain_load() -> None:
        wrk = run_wrk(
            plain.url,
            body=plain.body,
            headers=plain.headers,
            connections=20,
            seconds=seconds,
            think_ms=100.0,
            bodies_file=plain.bodies_file,
        )
        results["plain"] = {"requests": wrk.ok, "rps": round(wrk.rps, 1), "errors": wrk.errors + wrk.status_errors}

    load = threading.Thread(target=plain_load)
    load.start()
    argv = _sse(
        "churn", stream_url, stream_body, plain.headers, concurrency=stream_concurrency, seconds=seconds, warmup=0
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 300, check=False)
    load.join()
    results["streams"] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else done.stderr
    end_of_load = sampler.take()
    # after the load: fds should fall back once idle upstream connections expire (aiohttp keeps them ~15 s)
    deadline, settled_at = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        if open_fds(pid) <= idle.fds:
            settled_at = round(30 - (deadline - time.monotonic()), 1)
            break
        time.sleep(1)
    sampler.stop()
    meter.close()
    warm = max(interval, seconds * 0.1)
    steady = [s for s in sampler.samples if warm <= s.at <= end_of_load.at]
    first = steady[0] if steady else end_of_load
    rss_after_warm = first.rss_kib
    slope = _slope([(s.at, s.rss_kib) for s in steady])
    return {
        "seconds": seconds,
        "interval": interval,
        "idle_rss_mib": _mib(idle.rss_kib),
        "idle_fds": idle.fds,
        "rss_after_warmup_mib": _mib(rss_after_warm),
        "rss_end_mib": _mib(end_of_load.rss_kib),
        "rss_max_after_warmup_mib": _mib(max((s.rss_kib for s in steady), default=0)),
        "rss_growth_pct": round(100 * (end_of_load.rss_kib - rss_after_warm) / max(1, rss_after_warm), 2),
        "rss_slope_kib_per_min": round(slope * 60, 1) if slope is not None else None,
        "fds_max_under_load": max((s.fds for s in sampler.samples), default=0),
        "fds_after": open_fds(pid),
        "fds_back_to_idle_after_s": settled_at,
        "threads_idle": idle.threads,
        "threads_after": thread_count(pid),
        "peak_rss_mib": _mib(status_kib(pid, "VmHWM")),
        "load": results,
        "samples": [s.__dict__ for s in sampler.samples],
    }


def _slope(points: list[tuple[float, int]]) -> float | None:
    """Least-squares slope (KiB/s) of RSS over time: robust to the sawtooth of a garbage collector."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mean_t) * (r - mean_r) for t, r in points) / var
