"""Reading a process's CPU time, memory and open files from /proc, from outside the process.

CPU is taken from ``/proc/<pid>/task/<tid>/schedstat`` (the scheduler's exact on-CPU nanoseconds per thread)
rather than utime/stime, which this kind of kernel charges by the tick: at low request rates tick sampling
over-charges a process several times over. A thread that exits takes its schedstat with it, so a background
sampler keeps the last value of every thread it has seen (the gateway's aiosqlite and resolver threads come
and go). utime+stime from ``/proc/<pid>/stat`` is kept alongside as a cross-check; it includes dead threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def thread_runtimes(pid: int) -> dict[int, int]:
    """{tid: on-CPU ns} for every live thread of ``pid``."""
    result: dict[int, int] = {}
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                result[int(tid)] = int(_read(f"/proc/{pid}/task/{tid}/schedstat").split()[0])
    return result


def tick_cpu_seconds(pid: int) -> float:
    """utime+stime (tick-sampled, includes exited threads)."""
    fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def status_kib(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM``-style field of /proc/<pid>/status, in KiB (0 when the process is gone)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


def thread_count(pid: int) -> int:
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        return len(os.listdir(f"/proc/{pid}/task"))
    return 0


def cpu_busy_counters() -> dict[str, tuple[int, int]]:
    """{"cpu0": (busy jiffies, total jiffies), ...} from /proc/stat, to tell which side was saturated."""
    counters: dict[str, tuple[int, int]] = {}
    for line in _read("/proc/stat").splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            numbers = [int(v) for v in values]
            idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
            counters[name] = (sum(numbers[:8]) - idle, sum(numbers[:8]))
    return counters


def busy_percent(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    result: dict[str, float] = {}
    for name, (busy, total) in after.items():
        b0, t0 = before.get(name, (0, 0))
        result[name] = round(100.0 * (busy - b0) / max(1, total - t0), 1)
    return result


def machine_busy(interval: float = 1.0) -> dict[str, float]:
    before = cpu_busy_counters()
    time.sleep(interval)
    return busy_percent(before, cpu_busy_counters())


def wait_quiet(threshold: float = 15.0, max_wait: float = 60.0) -> tuple[float, dict[str, float]]:
    """Wait until every CPU is below ``threshold`` % busy (other people's test runs share this machine).

    Returns the seconds waited and the last reading, so a row measured on a busy machine can be flagged.
    """
    start = time.monotonic()
    busy = machine_busy(1.0)
    while max(busy.values(), default=0.0) > threshold and time.monotonic() - start < max_wait:
        busy = machine_busy(1.0)
    return time.monotonic() - start, busy


class CpuMeter:
    """Cumulative on-CPU seconds of one process, including threads that have exited since we first saw them."""

    def __init__(self, pid: int, poll: float = 0.2) -> None:
        self.pid = pid
        self._last: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(poll,), daemon=True)
        self.sample()
        self._thread.start()

    def sample(self) -> float:
        """Refresh every thread's runtime and return the process total in seconds."""
        current = thread_runtimes(self.pid)
        with self._lock:
            for tid, ns in current.items():
                if ns >= self._last.get(tid, 0):
                    self._last[tid] = ns
            return sum(self._last.values()) / 1e9

    def ticks(self) -> float:
        try:
            return tick_cpu_seconds(self.pid)
        except (FileNotFoundError, ProcessLookupError):
            return 0.0

    def _loop(self, poll: float) -> None:
        while not self._stop.wait(poll):
            self.sample()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def settle(self, *, threshold: float = 0.05, window: float = 0.5, max_wait: float = 20.0) -> float:
        """Wait until the process uses less than ``threshold`` of a core over ``window``; return the wait.

        A loaded gateway keeps working after the client stops (requests in flight, the usage batch writer),
        and that work belongs to the phase that caused it.
        """
        start = time.monotonic()
        previous = self.sample()
        while time.monotonic() - start < max_wait:
            time.sleep(window)
            now = self.sample()
            if (now - previous) / window < threshold:
                break
            previous = now
        return time.monotonic() - start


@dataclass
class MemorySample:
    at: float
    rss_kib: int
    hwm_kib: int
    fds: int
    threads: int
    cpu_s: float


class Sampler:
    """Samples RSS, peak RSS, open fds, threads and CPU of one process every ``interval`` seconds (soak)."""

    def __init__(self, pid: int, cpu: CpuMeter, interval: float) -> None:
        self.pid = pid
        self.cpu = cpu
        self.interval = interval
        self.samples: list[MemorySample] = []
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def take(self) -> MemorySample:
        sample = MemorySample(
            at=round(time.monotonic() - self._start, 1),
            rss_kib=status_kib(self.pid, "VmRSS"),
            hwm_kib=status_kib(self.pid, "VmHWM"),
            fds=open_fds(self.pid),
            threads=thread_count(self.pid),
            cpu_s=self.cpu.sample(),
        )
        self.samples.append(sample)
        return sample

    def start(self) -> None:
        self._start = time.monotonic()
        self.take()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.take()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 2)


def proc_exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()
