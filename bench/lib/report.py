"""Markdown for one run: the tables, the issue's targets checked against this run, and RESULTS.md upkeep.

Ratios are computed only between rows of the same run. The peers' published numbers are quoted as context:
they were measured on another day (and another CPU), so a ratio against them is indicative at best.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from lib.targets import _rows, context_table, targets_table

LIBRARIES = ("uvicorn", "starlette", "fastapi", "aiohttp", "uvloop", "httptools", "orjson", "sqlalchemy", "structlog")
ROOT = Path(__file__).resolve().parents[2]


def _cmd(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return "not installed"
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else ""


def machine() -> dict[str, Any]:
    """What the numbers were measured on (they only mean something next to this)."""
    info: dict[str, Any] = {"cpu_model": "unknown", "cores": 0, "ram_gib": 0.0}
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    info["cpu_model"] = models[0] if models else platform.processor()
    info["cores"] = len(re.findall(r"^processor\s*:", cpuinfo, re.M))
    mem = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    info["ram_gib"] = round(int(mem.group(1)) / 1024 / 1024, 1) if mem else 0.0
    info["kernel"] = platform.release()
    os_release = Path("/etc/os-release")
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]+)', os_release.read_text(), re.M) if os_release.exists() else None
    info["os"] = pretty.group(1) if pretty else platform.platform()
    info["python"] = platform.python_version()
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    info["libraries"] = versions
    info["wrk"] = _cmd(["wrk", "-v"]).split(" [")[0]
    info["nginx"] = _cmd(["nginx", "-v"]).replace("nginx version: ", "")
    commit = _cmd(["git", "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True, cwd=ROOT)
    info["commit"] = commit + (" + uncommitted changes in src/" if dirty.stdout.strip() else "")
    return info


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float | int):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    return f"{a / b:.{digits}f}x" if a and b else "n/a"


def throughput_tables(results: dict[str, Any]) -> list[str]:
    direct, proxy, rows = _rows(results)
    d_paced = (direct or {}).get("paced", {})
    out = [
        "| target | mock | RPS @c=64 | x direct | x nginx-proxy | paced p50 / p99 (ms) | added p50 / p99 (ms) "
        "| CPU-ms / req | peak RSS (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        t, p = row["throughput"], row.get("paced", {})
        added = "0 / 0" if row is direct else "n/a"
        if p and d_paced and row is not direct and row["mock"] == (direct or {}).get("mock"):
            added = f"{p['p50_ms'] - d_paced['p50_ms']:+.3f} / {p['p99_ms'] - d_paced['p99_ms']:+.3f}"
        paced = f"{p['p50_ms']:.3f} / {p['p99_ms']:.3f}" if p else "n/a"
        same_mock = direct and row["mock"] == direct["mock"]
        out.append(
            f"| {row['name']} | {row['mock']} | {_f(t['rps'], 0)} "
            f"| {_ratio(t['rps'], direct['throughput']['rps']) if same_mock and direct else 'n/a'} "
            f"| {_ratio(t['rps'], proxy['throughput']['rps']) if proxy and same_mock else 'n/a'} "
            f"| {paced} | {added} | {_f(t.get('cpu_ms_per_req'), 3)} | {_f(t.get('peak_rss_mib'))} |"
        )
    out += [
        "",
        "| target | c=64 p50 / p99 (ms) | CPU0 / CPU1 busy % | gateway CPU util % | CPU-ms/req (ticks) "
        "| CPU-ms/req paced | paced rate (req/s) | idle CPU (ms/s) | idle → after-load RSS (MiB) "
        "| upstream req / req | errors (c=64, paced) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        t, p, i = row["throughput"], row.get("paced", {}), row.get("idle", {})
        rss = f"{i['rss_mib']} → {t.get('rss_mib')}" if i else "n/a"
        out.append(
            f"| {row['name']} ({row['mock']}) | {t['load_p50_ms']:.2f} / {t['load_p99_ms']:.2f} "
            f"| {_f(t['cpu0_busy'], 0)} / {_f(t['cpu1_busy'], 0)} | {_f(t.get('cpu_util'), 0)} "
            f"| {_f(t.get('cpu_ms_per_req_ticks'), 3)} | {_f(p.get('cpu_ms_per_req'), 3)} | {_f(p.get('rate'))} "
            f"| {_f(i.get('cpu_ms_per_s'), 2)} | {rss} "
            f"| {_f(t.get('upstream_per_request'), 3)} | {t['errors']}, {p.get('errors', 'n/a')} |"
        )
    notes = [f"- **{row['name']}**: {row['scenario_note']}" for row in rows if row.get("scenario_note")]
    return out + (["", *notes] if notes else [])


def streaming_table(results: dict[str, Any]) -> list[str]:
    rows = results.get("streaming", [])
    base = {r["concurrency"]: r for r in rows if r["name"] == "direct"}
    out = [
        "| target | c | streams/s | TTFB p50 | TTFT p50 / p99 | added TTFT p50 | total p50 / p99 | added total p50 "
        "| data events / stream | gateway CPU-ms / stream | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ref = base.get(row["concurrency"], {})
        add_ttft = add_total = "0"
        if row["name"] != "direct" and ref:
            add_ttft = f"{(row['ttft_p50'] or 0) - (ref['ttft_p50'] or 0):+.3f}"
            add_total = f"{(row['total_p50'] or 0) - (ref['total_p50'] or 0):+.3f}"
        out.append(
            f"| {row['name']} | {row['concurrency']} | {_f(row['streams_per_s'])} | {_f(row['ttfb_p50'], 3)} "
            f"| {_f(row['ttft_p50'], 3)} / {_f(row['ttft_p99'], 3)} | {add_ttft} "
            f"| {_f(row['total_p50'], 2)} / {_f(row['total_p99'], 2)} | {add_total} | {_f(row['events_mean'])} "
            f"| {_f(row.get('cpu_ms_per_stream'), 3)} | {sum(row['errors'].values()) + row['incomplete']} |"
        )
    return out


def scenario_tables(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    streams = results.get("scenarios", {}).get("streams")
    if streams:
        out += [
            f"### {streams['count']:,} concurrent idle streams",
            "",
            "| opened | RSS before → with (MiB) | KiB / stream | fds before / with / after | threads "
            "| RSS after close (MiB) | peak RSS (MiB) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {streams['opened']:,} (failed: {streams['failed'] or 0}) in {streams['open_seconds']} s "
            f"| {streams['rss_before_mib']} → {streams['rss_with_mib']} | **{streams['kib_per_stream']}** "
            f"| {streams['fds_before']} / {streams['fds_with']} / {streams['fds_after']} | {streams['threads_with']} "
            f"| {streams['rss_after_mib']} | {streams['peak_rss_mib']} |",
            "",
            f"{streams['note']}.",
            "",
        ]
    soak = results.get("scenarios", {}).get("soak")
    if soak:
        load = soak["load"]
        plain, st = load.get("plain", {}), load.get("streams", {})
        st_text = (
            (
                f"{st.get('streams', 0):,} streams completed, {st.get('abandoned', 0):,} abandoned mid-way, "
                f"errors {st.get('errors')}"
            )
            if isinstance(st, dict)
            else f"stream client failed: {st}"
        )
        series = ", ".join(f"{s['at']:.0f}s:{s['rss_kib'] / 1024:.1f}/{s['fds']}" for s in soak["samples"])
        out += [
            f"### Soak: {soak['seconds']:.0f} s of steady mixed load",
            "",
            "| idle RSS | RSS after warm-up → end (MiB) | growth | slope (KiB/min) | max RSS after warm-up "
            "| fds idle / max / after | fds back to idle after | threads idle / after |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {soak['idle_rss_mib']} | {soak['rss_after_warmup_mib']} → {soak['rss_end_mib']} "
            f"| **{soak['rss_growth_pct']:+.2f} %** | {_f(soak['rss_slope_kib_per_min'])} "
            f"| {soak['rss_max_after_warmup_mib']} | {soak['idle_fds']} / {soak['fds_max_under_load']} / "
            f"{soak['fds_after']} | {_f(soak['fds_back_to_idle_after_s'])} s | {soak['threads_idle']} / "
            f"{soak['threads_after']} |",
            "",
            f"Load: ~{plain.get('rps', 'n/a')} plain req/s ({plain.get('requests', 0):,} requests, errors "
            f"{plain.get('errors')}) plus 8 closed-loop streams: {st_text}. {soak['note']}.",
            "",
            f"Samples (t: RSS MiB / fds): {series}",
            "",
        ]
    return out


def render(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    libs = ", ".join(f"{k} {v}" for k, v in meta.get("libraries", {}).items())
    lines = [
        f"## Run of {meta.get('started', '?')} (`bench/run.py {meta.get('args', '')}`)",
        "",
        f"Machine: {meta.get('cpu_model')}, {meta.get('cores')} CPUs, {meta.get('ram_gib')} GiB RAM, "
        f"{meta.get('os')}, kernel {meta.get('kernel')}, Python {meta.get('python')}. Gateway commit "
        f"{meta.get('commit')}. {libs}; {meta.get('wrk')}; nginx {meta.get('nginx')}.",
        "",
        f"Gateway pinned to CPU 1; wrk, the mocks and the stream client on CPU 0. Throughput mock: "
        f"**{meta.get('throughput_mock')}** "
        + (
            "(nginx `return 200` with a fixed chat.completion: the Python mock would cap the floor). "
            if meta.get("throughput_mock") == "nginx"
            else "(the built-in Python mock). "
        )
        + "Streams always go to the built-in Python mock (20 chunks, 5 ms apart). Non-streaming bodies: "
        + f"{meta.get('prompts', 'one constant body')} (a system and a user message, `max_tokens: 32`).",
        "",
        "### Non-streaming",
        "",
        *throughput_tables(results),
        "",
        "### Streaming (20 chunks, 5 ms apart)",
        "",
        *streaming_table(results),
        "",
        *scenario_tables(results),
        "### Issue targets, checked against this run",
        "",
        *targets_table(results),
        "",
        "### Context: the peers (not measured in this run)",
        "",
        *context_table(results),
        "",
    ]
    if results.get("profile"):
        lines += ["### Profile", "", results["profile"]["markdown"], ""]
    if results.get("notes"):
        lines += ["Notes:", *[f"- {n}" for n in results["notes"]], ""]
    if results.get("failures"):
        lines += ["**Failed steps:**", *[f"- {f}" for f in results["failures"]], ""]
    return "\n".join(lines)


def update_section(path: Path, section: str, body: str) -> None:
    """Replace the text between ``<!-- bench:<section>:start/end -->`` markers (append the section if new)."""
    start, end = f"<!-- bench:{section}:start -->", f"<!-- bench:{section}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def update_results_file(path: Path, markdown: str) -> None:
    update_section(path, "latest", markdown)


def rerender(path: Path, results_file: Path, write: bool) -> str:
    """Re-render a saved run after a change to the report code (the profile summary is recomputed too)."""
    results = json.loads(path.read_text())
    collapsed = path.parent / "profile.collapsed.txt"
    if results.get("profile") and collapsed.exists():
        from lib import profile

        markdown, data = profile.summarise(collapsed.read_text(), results["profile"]["cpu_ms_per_req"])
        results["profile"].update(data, markdown=f"Flame graph: `bench/results/profile.svg`. {markdown}")
        path.write_text(json.dumps(results, indent=1, default=str))
    markdown = render(results)
    path.with_suffix(".md").write_text(markdown)
    if write:
        update_results_file(results_file, markdown)
    return markdown
