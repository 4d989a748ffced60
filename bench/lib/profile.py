"""A py-spy profile of the gateway under the c=64 load, summarised per function and per layer.

py-spy samples the running process from outside (no code change, ``--nonblocking`` so the gateway is never
paused) and drops idle samples, so the shares below are shares of the gateway's on-CPU Python time. Two
phases: one writes the flame graph (``bench/results/profile.svg``), one writes collapsed stacks that are
summarised here and converted to microseconds per request with the CPU-ms/req measured in the same phase.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from lib.phases import Durations, Target
from lib.procs import CLIENT_CPU
from lib.procstat import CpuMeter
from lib.wrk import run_wrk

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found:
        return found
    print("installing py-spy into the venv (pip) ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not found:
        raise RuntimeError("py-spy could not be installed")
    return found


_ENTRY = (
    "<module>",
    "serve",
    "asyncio_run",
    "Server.run",
    "Typer.",
    "Command.",
    "Context.",
    "TyperGroup.",
    "_main",
    "get_callback",
)
_LOOP = "Runner.run"


def _group(path: str) -> str:
    """A layer name for a source file: the tenantgate module, else the top-level package or stdlib module.

    py-spy names files relative to their import root (``aiohttp/client.py``, ``asyncio/locks.py``, ``copy.py``).
    """
    path = path.split("site-packages/", 1)[-1]
    if "tenantgate/" in path:
        return "tenantgate." + path.split("tenantgate/", 1)[1].removesuffix(".py").replace("/", ".")
    return path.split("/", 1)[0].removesuffix(".py") or "?"


def _frames(stack: str) -> list[tuple[str, str]]:
    """(function, layer) per frame, with the process's entry frames (CLI, uvicorn, asyncio runner) removed.

    Samples whose innermost Python frame is the runner itself are time in the event loop's native code
    (uvloop: polling, socket reads and writes, callbacks); they are kept as one pseudo-function.
    """
    frames = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame)
        func, file = (match.group("func"), match.group("file")) if match else (frame, "")
        frames.append((func, _group(file)))
    if frames and frames[-1][0] == _LOOP:
        return [("event loop, native code (uvloop I/O, callbacks)", "uvloop")]
    while frames and (frames[0][0].startswith(_ENTRY) or frames[0][0] == _LOOP):
        frames.pop(0)
    return frames


def summarise(raw: str, cpu_ms_per_req: float, top: int = 15) -> tuple[str, dict[str, Any]]:
    """Self time per layer and per function, and inclusive time of tenantgate's functions, as Markdown.

    Inclusive time counts every sample whose stack contains the function. Coroutine stacks are cut where the
    event loop resumed them, which this handles (a frame is found wherever it sits in the stack).
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = _frames(stack)
        if not frames:
            continue
        func, layer = frames[-1]
        own[f"{func} ({layer})"] += count
        layers[layer] += count
        for name in {f"{f} ({g})" for f, g in frames if g.startswith("tenantgate")}:
            inclusive[name] += count
    if not total:
        return "py-spy recorded no samples.", {}

    def table(counter: Counter[str], title: str) -> list[str]:
        rows = [f"| {title} | share of gateway CPU | µs / request |", "|---|---:|---:|"]
        for name, count in counter.most_common(top):
            share = count / total
            rows.append(f"| `{name}` | {100 * share:.1f} % | {1000 * share * cpu_ms_per_req:.1f} |")
        return rows

    lines = [
        f"{total:,} samples; {cpu_ms_per_req:.3f} CPU-ms per request in the profiled phase (py-spy adds a little).",
        "",
        "Self time by layer (the package of the innermost Python frame; C code is charged to its Python caller):",
        "",
        *table(layers, "layer"),
        "",
        "Self time by function:",
        "",
        *table(own, "function (layer)"),
        "",
        "Inclusive time of tenantgate's functions (the function and everything it calls):",
        "",
        *table(inclusive, "function (layer)"),
    ]
    data = {"samples": total, "layers": dict(layers.most_common(30)), "self": dict(own.most_common(40))}
    return "\n".join(lines), data


def record(target: Target, d: Durations, out_dir: Path, seconds: float = 15.0) -> dict[str, Any]:
    """Warm up, then two c=64 phases under py-spy: a flame graph and collapsed stacks."""
    assert target.pid is not None
    spy = _py_spy()
    out_dir.mkdir(exist_ok=True)
    load = {"body": target.body, "headers": target.headers, "connections": 64, "bodies_file": target.bodies_file}
    run_wrk(target.url, seconds=d.warmup, **load)  # type: ignore[arg-type]
    outputs = {"flamegraph": out_dir / "profile.svg", "raw": out_dir / "profile.collapsed.txt"}
    cpu_ms = 0.0
    for fmt, path in outputs.items():
        argv = [
            "taskset",
            "-c",
            CLIENT_CPU,
            spy,
            "record",
            "--pid",
            str(target.pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "250",
            "--nonblocking",
            "--function",
            "--format",
            fmt,
            "-o",
            str(path),
        ]
        spy_proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        meter = CpuMeter(target.pid)
        cpu0, served0 = meter.sample(), target.served()
        run_wrk(target.url, seconds=seconds - 1, **load)  # type: ignore[arg-type]
        _, err = spy_proc.communicate(timeout=seconds + 60)
        meter.settle()
        cpu_ms = 1000 * (meter.sample() - cpu0) / max(1, target.served() - served0)
        meter.close()
        if spy_proc.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err[-1000:]}")
    markdown, data = summarise(outputs["raw"].read_text(), cpu_ms)
    markdown = f"Flame graph: `bench/results/{outputs['flamegraph'].name}`. " + markdown
    (out_dir / "profile.md").write_text(markdown + "\n")
    return {"markdown": markdown, "cpu_ms_per_req": round(cpu_ms, 4), **data}
