#!/usr/bin/env python3
"""``make bench``: tenantgate against the direct floor, in one run, on a 2-CPU machine.

The gateway is pinned alone to CPU 1; the mocks, the load generators and this harness share CPU 0. Every
figure of a gateway row is read in the same run as the direct row it is compared with, because on a small
shared VM only ratios within one run mean anything. See bench/README.md for what each figure means.

    .venv/bin/python bench/run.py                 # everything (about 20 minutes: the soak is 10 of them)
    .venv/bin/python bench/run.py --quick         # short phases, 60 s soak: checks the harness (~5 min)
    .venv/bin/python bench/run.py --redis         # baseline + one scenario (also --many-keys, --streams N,
                                                  # --soak S, --info-log); --profile adds a py-spy profile
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import phases, procs, report, seed, stack
from lib.bodies import STREAM_MOCK, chat_body, stream_body, write_bodies
from lib.phases import Durations, Target
from lib.procstat import status_kib, wait_quiet

BENCH_DIR = Path(__file__).resolve().parent


class BenchRun:
    """One invocation: the mocks live for the whole run; each gateway scenario gets a fresh gateway process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.d = Durations.quick() if args.quick else Durations()
        self.work = Path(tempfile.mkdtemp(prefix="tenantgate-bench-"))
        self.results: dict[str, Any] = {"throughput": [], "streaming": [], "notes": [], "scenarios": {}}
        self.python_mock: stack.Mock
        self.fast_mock: stack.Mock

    def note(self, text: str) -> None:
        print(f"  note: {text}", flush=True)
        self.results["notes"].append(text)

    # ---- set-up -------------------------------------------------------------------------------------------

    def setup(self) -> None:
        if not procs.ensure_apt("wrk", "wrk"):
            raise SystemExit("bench: wrk is missing and could not be installed (apt-get install wrk)")
        self.python_mock = stack.start_python_mock(self.work)
        nginx = None if self.args.mock == "python" else stack.start_nginx_mock(self.work)
        if nginx is None and self.args.mock == "nginx":
            raise SystemExit("bench: --mock nginx asked for, but nginx could not be installed")
        self.fast_mock = nginx or self.python_mock
        self.config = stack.gateway_config(self.fast_mock, self.python_mock)
        self.bodies: dict[str, Path | None] = {"direct": None, "gateway": None}
        if not self.args.same_prompt:
            self.bodies = {
                "direct": write_bodies(self.work / "bodies-direct.jsonl", stack.UPSTREAM_MODEL),
                "gateway": write_bodies(self.work / "bodies-gateway.jsonl", "bench-fast"),
            }
        self.results["meta"] = report.machine() | {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "args": " ".join(sys.argv[1:]) or "(defaults)",
            "throughput_mock": self.fast_mock.kind,
            "prompts": "one constant body" if self.args.same_prompt else "10,000 distinct user messages, cycled",
            "durations": self.d.__dict__,
            "workdir": str(self.work),
        }
        print(f"bench: work dir {self.work}; throughput mock: {self.fast_mock.kind}", flush=True)

    def check_quiet(self, label: str) -> None:
        """Wait (up to a minute) for other load on the machine to stop; flag the row when it does not."""
        waited, busy = wait_quiet(max_wait=self.args.wait_quiet)
        if max(busy.values(), default=0) > 15:
            self.note(f"machine still busy before {label} after waiting {waited:.0f} s: {busy} (skews this row)")
        elif waited > 2:
            print(f"  waited {waited:.0f} s for the machine to be quiet", flush=True)

    # ---- rows ---------------------------------------------------------------------------------------------

    def direct(self) -> None:
        mocks = [self.fast_mock] + ([self.python_mock] if self.fast_mock is not self.python_mock else [])
        for mock in mocks:
            print(f"[direct → {mock.kind} mock]", flush=True)
            self.check_quiet("direct")
            target = Target(
                f"direct ({mock.kind} mock)",
                f"{mock.base_url}/chat/completions",
                chat_body(stack.UPSTREAM_MODEL),
                {},
                mock.served,
                bodies_file=self.bodies["direct"],
            )
            row = {"name": "direct", "mock": mock.kind, "throughput": phases.throughput(target, self.d)}
            if mock is self.fast_mock:
                row["paced"] = phases.paced(target, self.d)
            self.results["throughput"].append(row)
        url = f"{self.python_mock.base_url}/chat/completions"
        for concurrency, seconds in ((1, self.d.stream_c1), (8, self.d.stream_c8)):
            print(f"[direct streaming c={concurrency}]", flush=True)
            row = phases.streaming(
                url,
                stream_body(stack.UPSTREAM_MODEL, STREAM_MOCK),
                {},
                concurrency,
                seconds,
                self.d.stream_warmup,
                None,
            )
            self.results["streaming"].append({"name": "direct", **row})

    def nginx_proxy(self) -> None:
        if self.fast_mock.kind != "nginx":
            return
        print("[nginx reverse proxy on CPU 1]", flush=True)
        self.check_quiet("nginx-proxy")
        proc, port = stack.start_nginx_proxy(self.work, self.fast_mock)
        try:
            target = Target(
                "nginx-proxy",
                f"http://127.0.0.1:{port}/v1/chat/completions",
                chat_body(stack.UPSTREAM_MODEL),
                {},
                self.fast_mock.served,
                proc.pid,
                bodies_file=self.bodies["direct"],
            )
            self.results["throughput"].append(
                {
                    "name": "nginx-proxy",
                    "mock": "nginx",
                    "throughput": phases.throughput(target, self.d),
                    "paced": phases.paced(target, self.d),
                }
            )
        finally:
            proc.stop()

    def gateway(
        self,
        spec: stack.GatewaySpec,
        *,
        label: str,
        keys_file: Path | None = None,
        with_streaming: bool = False,
        paced: bool = True,
        extra: Callable[[stack.RunningGateway], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Start a gateway for one scenario, measure it, stop it; returns (and records) its row."""
        print(f"[{label}]", flush=True)
        self.check_quiet(label)
        gw = stack.start_gateway(spec, self.work, self.config, seed.NEVER_REFUSE)
        try:
            time.sleep(1.0)  # the key's limits were patched: let the config sync drop the auth cache
            headers = stack.smoke(gw, "bench-fast")
            idle = phases.idle(gw.pid)
            auth = {} if keys_file else {"Authorization": f"Bearer {gw.key}"}
            target = Target(
                label,
                gw.url("/v1/chat/completions"),
                chat_body("bench-fast"),
                auth,
                self.fast_mock.served,
                gw.pid,
                keys_file,
                self.bodies["gateway"],
            )
            row: dict[str, Any] = {
                "name": label,
                "mock": self.fast_mock.kind,
                "limit_headers": sorted(h for h in headers if "ratelimit" in h),
                "throughput": phases.throughput(target, self.d),
                "idle": idle,
            }
            if paced:
                row["paced"] = phases.paced(target, self.d)
            if with_streaming:
                url, key = gw.url("/v1/chat/completions"), {"Authorization": f"Bearer {gw.key}"}
                for concurrency, seconds in ((1, self.d.stream_c1), (8, self.d.stream_c8)):
                    print(f"[{label} streaming c={concurrency}]", flush=True)
                    stream = phases.streaming(
                        url,
                        stream_body("bench-py", STREAM_MOCK),
                        key,
                        concurrency,
                        seconds,
                        self.d.stream_warmup,
                        gw.pid,
                    )
                    self.results["streaming"].append({"name": label, **stream})
            if extra:
                row.update(extra(gw))
            row["peak_rss_end_mib"] = round(status_kib(gw.pid, "VmHWM") / 1024, 1)
            self.results["throughput"].append(row)
            return row
        finally:
            gw.proc.stop()

    # ---- scenarios ----------------------------------------------------------------------------------------

    def baseline(self) -> None:
        self.gateway(stack.GatewaySpec("baseline"), label="tenantgate", with_streaming=True)

    def info_log(self) -> None:
        row = self.gateway(stack.GatewaySpec("info", log_level="INFO"), label="tenantgate, INFO logs")
        row["scenario_note"] = "one JSON access-log line per request, written to a file"

    def redis(self) -> None:
        proc, url, where = seed.start_redis(self.work)
        try:
            spec = stack.GatewaySpec("redis", env={"TENANTGATE_REDIS_URL": url})
            row = self.gateway(
                spec, label="tenantgate + Redis limits", extra=lambda gw: {"redis_keys": seed.redis_key_count(url)}
            )
            wired = bool(row["limit_headers"]) or row.get("redis_keys", 0) > 0
            row["scenario_note"] = f"{where}; key rpm/tpm set never to refuse; " + (
                f"limits active (Redis keys written: {row.get('redis_keys')}, headers: {row['limit_headers']})"
                if wired
                else "limits NOT wired into the request path in this build (no rate-limit headers, "
                "no Redis keys): this row measures the gateway with TENANTGATE_REDIS_URL set, nothing more"
            )
            if not wired:
                self.note("Redis scenario: limits not wired yet; row equals the baseline path")
        finally:
            if proc:
                proc.stop()

    def many_keys(self) -> None:
        db = self.work / "many-keys.db"
        tenants, keys = (10_000, 100_000)
        print(f"[many keys: seeding {keys:,} keys over {tenants:,} tenants]", flush=True)
        plaintexts, seconds = seed.seed_many_keys(db, tenants=tenants, keys=keys, sample=1000)
        keys_file = self.work / "keys.txt"
        keys_file.write_text("\n".join(plaintexts) + "\n")
        row = self.gateway(
            stack.GatewaySpec("many-keys", seed_db=db), label="tenantgate, 100k keys", keys_file=keys_file
        )
        row["scenario_note"] = (
            f"{keys:,} keys / {tenants:,} tenants in SQLite (seeded in {seconds:.0f} s); "
            f"load rotates over {len(plaintexts):,} random keys, one per request"
        )

    def streams(self, count: int) -> None:
        spec = stack.GatewaySpec("streams", env={"TENANTGATE_UPSTREAM_MAX_CONNECTIONS": str(count + 64)})
        print(f"[{count} open idle streams]", flush=True)
        gw = stack.start_gateway(spec, self.work, self.config, seed.NEVER_REFUSE)
        try:
            key = {"Authorization": f"Bearer {gw.key}"}
            url = gw.url("/v1/chat/completions")
            phases.streaming(url, stream_body("bench-py", STREAM_MOCK), key, 8, 2.0, 0.5, None)  # warm the path
            row = phases.open_streams(url, stream_body("bench-py", {"stall": True}), key, count, gw.pid)
            row["note"] = f"TENANTGATE_UPSTREAM_MAX_CONNECTIONS={count + 64} (its default, 1,000, caps open streams)"
            self.results["scenarios"]["streams"] = row
        finally:
            gw.proc.stop()

    def soak(self, seconds: float) -> None:
        print(f"[soak {seconds:.0f} s]", flush=True)
        gw = stack.start_gateway(stack.GatewaySpec("soak"), self.work, self.config, seed.NEVER_REFUSE)
        try:
            key = {"Authorization": f"Bearer {gw.key}"}
            plain = Target(
                "soak",
                gw.url("/v1/chat/completions"),
                chat_body("bench-fast"),
                key,
                self.fast_mock.served,
                gw.pid,
                bodies_file=self.bodies["gateway"],
            )
            interval = 10.0 if seconds >= 120 else 5.0
            row = phases.soak(
                plain, gw.url("/v1/chat/completions"), stream_body("bench-py", STREAM_MOCK), seconds, interval, gw.pid
            )
            row["note"] = "asyncio task counts are not visible from outside the process: fds and threads only"
            self.results["scenarios"]["soak"] = row
        finally:
            gw.proc.stop()

    def profile(self) -> None:
        from lib import profile

        print("[profile: py-spy during c=64]", flush=True)
        gw = stack.start_gateway(stack.GatewaySpec("profile"), self.work, self.config, seed.NEVER_REFUSE)
        try:
            target = Target(
                "profile",
                gw.url("/v1/chat/completions"),
                chat_body("bench-fast"),
                {"Authorization": f"Bearer {gw.key}"},
                self.fast_mock.served,
                gw.pid,
                bodies_file=self.bodies["gateway"],
            )
            self.results["profile"] = profile.record(target, self.d, BENCH_DIR / "results")
        finally:
            gw.proc.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short phases (harness check, not numbers)")
    parser.add_argument(
        "--mock",
        choices=["auto", "nginx", "python"],
        default="auto",
        help="mock for throughput phases (auto: nginx when installable)",
    )
    parser.add_argument("--redis", action="store_true", help="scenario: limits backed by Redis")
    parser.add_argument("--many-keys", action="store_true", help="scenario: 100,000 keys over 10,000 tenants")
    parser.add_argument("--streams", type=int, metavar="N", help="scenario: N concurrent idle streams")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="scenario: steady mixed load with disconnects")
    parser.add_argument("--info-log", action="store_true", help="scenario: the baseline with INFO access logs")
    parser.add_argument("--same-prompt", action="store_true", help="one constant body (default: 10,000 prompts)")
    parser.add_argument("--only-baseline", action="store_true", help="the direct floor and the baseline only")
    parser.add_argument("--skip-baseline", action="store_true", help="only the direct floor and chosen scenarios")
    parser.add_argument("--profile", action="store_true", help="also record a py-spy profile under c=64 load")
    parser.add_argument("--wait-quiet", type=float, default=60.0, help="max seconds to wait for an idle machine")
    parser.add_argument(
        "--peer",
        nargs="?",
        const="direct,nginx-proxy,litellm,portkey",
        metavar="TARGETS",
        help="instead: run ../shared/bench with tenantgate added (default targets: %(const)s)",
    )
    parser.add_argument("--render", metavar="JSON", type=Path, help="instead: re-render a run's results JSON")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    chosen = args.redis or args.many_keys or args.streams or args.soak or args.info_log or args.only_baseline
    if not chosen and not args.skip_baseline:  # bare `make bench` (or with --profile): every scenario
        args.redis = args.many_keys = args.info_log = True
        args.streams = 1000
        args.soak = 60.0 if args.quick else 600.0
    return args


def main() -> int:
    args = parse_args()
    if args.peer:
        from lib import peer

        return peer.main(args.peer, quick=args.quick, write=not args.no_write)
    if args.render:
        print(report.rerender(args.render, BENCH_DIR / "RESULTS.md", write=not args.no_write))
        return 0
    procs.install_cleanup()
    procs.pin_self_to_client_cpu()
    fd_limit = procs.raise_fd_limit()
    run = BenchRun(args)
    failures: list[str] = []
    steps: list[tuple[str, Callable[[], None]]] = [("direct", run.direct), ("nginx-proxy", run.nginx_proxy)]
    if not args.skip_baseline:
        steps.append(("baseline", run.baseline))
    if args.info_log:
        steps.append(("info-log", run.info_log))
    if args.redis:
        steps.append(("redis", run.redis))
    if args.many_keys:
        steps.append(("many-keys", run.many_keys))
    if args.streams:
        steps.append(("streams", lambda: run.streams(args.streams)))
    if args.soak:
        steps.append(("soak", lambda: run.soak(args.soak)))
    if args.profile:
        steps.append(("profile", run.profile))
    try:
        run.setup()
        run.results["meta"]["fd_limit"] = fd_limit
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # one failed scenario must not lose the others' numbers
                traceback.print_exc()
                failures.append(f"{name}: {type(exc).__name__}: {exc}"[:500])
    finally:
        procs.stop_all()
    run.results["failures"] = failures
    out = BENCH_DIR / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (out / f"{stamp}.json").write_text(json.dumps(run.results, indent=1, default=str))  # first: render may fail
    markdown = report.render(run.results)
    print("\n" + markdown)
    (out / f"{stamp}.md").write_text(markdown)
    if not args.no_write and not args.quick:
        report.update_results_file(BENCH_DIR / "RESULTS.md", markdown)
    print(f"bench: wrote bench/results/{stamp}.md" + ("" if args.no_write or args.quick else " and bench/RESULTS.md"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
