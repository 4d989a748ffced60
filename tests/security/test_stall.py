"""Class 2: one tenant's prompt must not stall the others.

Pure-Python BPE is super-linear on a long run without spaces, and it used to run on the event loop (to
reserve, and to bill answers that came without usage). The attack sends 1 MiB prompts without spaces
through every path that may count tokens (a TPM-limited key, an upstream that omits usage, a stream cut
before its usage) while another tenant measures its own latency.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

from tests.support import Gateway

HUGE = "a" * (1 << 20)


_VICTIM = """
import json, sys, time, httpx
url, key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
body = {"model": "mock-small", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 2}
out = []
with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        status = client.post("/chat/completions", json=body).status_code
        out.append([time.monotonic(), time.perf_counter() - started, status])
        time.sleep(0.01)
print(json.dumps(out))
"""


def _victim(gateway: Gateway, key: str, seconds: float) -> subprocess.Popen[str]:
    """Another tenant, in its own process so that nothing of the attacker (the GIL included) is measured."""
    args = [sys.executable, "-c", _VICTIM, gateway.v1, key, str(seconds)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def _attack(gateway: Gateway, key: str, body: dict[str, Any], *, cut_stream: bool = False) -> int:
    with httpx.Client(base_url=gateway.v1, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        if not cut_stream:
            return client.post("/chat/completions", json=body).status_code
        with client.stream("POST", "/chat/completions", json=body) as response:
            for _ in response.iter_bytes():
                break  # leave after the first bytes: the upstream's usage never arrives
            return response.status_code


def test_a_huge_prompt_without_spaces_does_not_stall_another_tenant(gateway: Gateway) -> None:
    attacker = gateway.create_tenant("stall-attacker")
    limited = gateway.create_key(attacker["id"], tpm=100_000_000)["key"]  # limits: the old path counted here
    victim = gateway.new_key("stall-victim")
    victim_run = _victim(gateway, victim, 12.0)
    try:
        time.sleep(1.0)
        started = time.monotonic()
        message = [{"role": "user", "content": HUGE}]
        plain = {"model": "mock-small", "messages": message, "max_tokens": 1, "mock": {"chunks": 1}}
        assert _attack(gateway, limited, plain) == 200
        no_usage = {**plain, "mock": {"chunks": 1, "omit_usage": True}}
        assert _attack(gateway, limited, no_usage) == 200
        stream = {**plain, "stream": True, "mock": {"chunks": 50, "chunk_delay": 0.05}}
        assert _attack(gateway, limited, stream, cut_stream=True) == 200
        ended = time.monotonic() + 2.0  # the cut stream is billed after the attacker left: measured through it
        output, _ = victim_run.communicate(timeout=60)
    finally:
        victim_run.kill()
    samples = json.loads(output)
    assert all(status == 200 for _, _, status in samples)
    during = [latency for at, latency, _ in samples if started <= at <= ended + latency]
    assert len(during) >= 10, "the victim barely ran: the test measured nothing"
    worst = max(during)
    print(
        f"victim during attack: n={len(during)} median={statistics.median(during) * 1000:.1f} ms "
        f"p99={sorted(during)[int(len(during) * 0.99)] * 1000:.1f} ms max={worst * 1000:.1f} ms"
    )
    p99 = sorted(during)[int(len(during) * 0.99)]
    # Bounds far above what this machine measures (p99 5-14 ms) and far below the bug (minutes), so a loaded CI
    # machine cannot make the test flaky; the measured figures are in the README and the closing note.
    assert p99 < 0.25, f"another tenant's p99 was {p99:.3f} s during the attack"
    assert worst < 1.0, f"another tenant waited {worst:.2f} s behind the attack"

    with gateway.admin() as admin:
        billed = admin.get("/admin/usage/records", params={"tenant_id": attacker["id"]}).json()["data"]
    assert len(billed) == 3, billed
    assert all(r["prompt_tokens"] > 0 for r in billed), "the attack requests were not billed"
