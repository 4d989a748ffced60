"""The issue's targets checked against one run, and the peers for context.

Targets stated relative to LiteLLM and Portkey use the newest local run of the peer harness when there is one
(same machine, same week), else the numbers published in ../shared/bench/RESULTS.md (another CPU: context).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
# /work/shared/bench/RESULTS.md (medians of 3, one vCPU for the gateway; Intel Xeon 2.8 GHz VM)
PUBLISHED = {
    "LiteLLM 1.106.2": {"rps": 56, "cpu": 16.620, "p50": 21.493, "rss": 402.5},
    "Portkey 1.15.2": {"rps": 422, "cpu": 2.202, "p50": 4.198, "rss": 211.6},
    "nginx reverse proxy": {"rps": 46_837, "cpu": 0.020, "p50": 0.285, "rss": 14.7},
}


def peer_reference() -> tuple[dict[str, dict[str, float]], str]:
    """LiteLLM/Portkey figures from the newest local peer-harness run (same machine), else the published ones."""
    runs = sorted(RESULTS_DIR.glob("peer-*/summary.json"))
    if runs:
        try:
            data = json.loads(runs[-1].read_text())
            rows = {r["target"]: r for r in data["results"] if r.get("status") == "ok"}
            direct_p50 = rows["direct"]["paced"]["p50"] / 1000
            found: dict[str, dict[str, float]] = {}
            for target, name in (
                ("litellm", "LiteLLM"),
                ("portkey", "Portkey"),
                ("nginx-proxy", "nginx reverse proxy"),
            ):
                if target in rows:
                    r = rows[target]
                    found[f"{name} {r.get('version', '')}".strip()] = {
                        "rps": r["tput"]["rps"],
                        "cpu": r["tput_cpu_ms_per_req"],
                        "p50": r["paced"]["p50"] / 1000 - direct_p50,
                        "rss": r["peak_rss_mib"],
                    }
            if "LiteLLM" in " ".join(found) and "Portkey" in " ".join(found):
                return found, f"the peer harness run of {data['meta']['when']} on this machine ({runs[-1].parent.name})"
        except (OSError, KeyError, ValueError, TypeError):
            pass
    return PUBLISHED, "published in ../shared/bench/RESULTS.md (another day, another CPU)"


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    return f"{a / b:.{digits}f}x" if a and b else "n/a"


def _rows(results: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[dict[str, Any]]]:
    rows = results.get("throughput", [])
    fast = results.get("meta", {}).get("throughput_mock")
    direct = next((r for r in rows if r["name"] == "direct" and r["mock"] == fast), None)
    proxy = next((r for r in rows if r["name"] == "nginx-proxy"), None)
    return direct, proxy, rows


def _check(goal: str, value: float | None, ok: bool | None, shown: str) -> str:
    mark = "n/a" if value is None or ok is None else ("yes" if ok else "**no**")
    return f"| {goal} | {shown} | {mark} |"


def targets_table(results: dict[str, Any]) -> list[str]:
    direct, proxy, rows = _rows(results)
    gw = next((r for r in rows if r["name"] == "tenantgate"), None)
    many = next((r for r in rows if r["name"].endswith("100k keys")), None)
    streams = {r["concurrency"]: r for r in results.get("streaming", []) if r["name"] == "tenantgate"}
    direct_streams = {r["concurrency"]: r for r in results.get("streaming", []) if r["name"] == "direct"}
    out = ["| issue target | measured in this run | met |", "|---|---|---|"]
    if gw:
        t, p = gw["throughput"], gw.get("paced", {})
        rps = t["rps"]
        peers, source = peer_reference()
        litellm = next(v for k, v in peers.items() if k.startswith("LiteLLM"))["rps"]
        portkey = next(v for k, v in peers.items() if k.startswith("Portkey"))["rps"]
        out.append(
            _check(
                f"≥ 50x LiteLLM's {litellm:,.0f} req/s (≥ {50 * litellm:,.0f})",
                rps,
                rps >= 50 * litellm,
                f"{rps:,.0f} req/s = {rps / litellm:.1f}x",
            )
        )
        out.append(
            _check(
                f"≥ 7x Portkey's {portkey:,.0f} req/s (≥ {7 * portkey:,.0f})",
                rps,
                rps >= 7 * portkey,
                f"{rps / portkey:.1f}x",
            )
        )
        if proxy and proxy["throughput"]["rps"]:
            share = 100 * rps / proxy["throughput"]["rps"]
            out.append(
                _check(
                    "on the way to ≥ 20 % of nginx reverse proxy (same run)",
                    share,
                    share >= 20,
                    f"{share:.1f} % of {proxy['throughput']['rps']:,.0f}",
                )
            )
        cpu = t.get("cpu_ms_per_req")
        out.append(_check("CPU ≤ 0.3 ms per request", cpu, cpu is not None and cpu <= 0.3, f"{_f(cpu, 3)} ms"))
        if p and direct and direct.get("paced"):
            a50 = p["p50_ms"] - direct["paced"]["p50_ms"]
            a99 = p["p99_ms"] - direct["paced"]["p99_ms"]
            out.append(_check("added p50 ≤ 0.5 ms at ~100 req/s", a50, a50 <= 0.5, f"{a50:+.3f} ms"))
            out.append(_check("added p99 ≤ 3 ms at ~100 req/s", a99, a99 <= 3, f"{a99:+.3f} ms"))
        if 1 in streams and 1 in direct_streams:
            added = (streams[1]["ttft_p50"] or 0) - (direct_streams[1]["ttft_p50"] or 0)
            out.append(_check("streaming TTFT overhead ≤ 1 ms (c=1, p50)", added, added <= 1, f"{added:+.3f} ms"))
        peak = t.get("peak_rss_mib")
        out.append(
            _check(
                "peak RSS ≤ 150 MiB in the throughput run", peak, peak is not None and peak <= 150, f"{_f(peak)} MiB"
            )
        )
    if gw:
        out.append(f"| (LiteLLM and Portkey figures: {source}) | | |")
    if many and gw:
        a, b = many["throughput"].get("cpu_ms_per_req"), gw["throughput"].get("cpu_ms_per_req")
        if a and b:
            out.append(
                _check(
                    "100k keys: per-request cost flat (within 10 %)",
                    a,
                    a <= 1.1 * b,
                    f"{a:.3f} vs {b:.3f} ms ({100 * (a / b - 1):+.1f} %)",
                )
            )
    streams_row = results.get("scenarios", {}).get("streams")
    if streams_row:
        kib = streams_row["kib_per_stream"]
        out.append(_check("≤ 20 KiB per idle open stream", kib, kib <= 20, f"{kib} KiB"))
    soak = results.get("scenarios", {}).get("soak")
    if soak:
        growth = soak["rss_growth_pct"]
        out.append(_check("soak: RSS growth ≤ 5 % after warm-up", growth, growth <= 5, f"{growth:+.2f} %"))
        back = soak["fds_back_to_idle_after_s"]
        out.append(
            _check(
                "soak: open fds return to idle",
                soak["fds_after"],
                back is not None,
                f"{soak['idle_fds']} idle → {soak['fds_after']} after",
            )
        )
    return out


def context_table(results: dict[str, Any]) -> list[str]:
    gw = next((r for r in results.get("throughput", []) if r["name"] == "tenantgate"), None)
    peers, source = peer_reference()
    out = [
        f"Peers: {source}.",
        "",
        "| peer | RPS @c=64 | CPU-ms / req | added p50 (ms, their paced phase) | peak RSS (MiB) "
        "| tenantgate RPS ratio | tenantgate CPU ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, peer in peers.items():
        rps = gw["throughput"]["rps"] if gw else None
        cpu = gw["throughput"].get("cpu_ms_per_req") if gw else None
        out.append(
            f"| {name} | {peer['rps']:,.0f} | {peer['cpu']:.3f} | {peer['p50']:.3f} | {peer['rss']} "
            f"| {_ratio(rps, peer['rps'])} | {_ratio(cpu, peer['cpu'])} |"
        )
    return out
