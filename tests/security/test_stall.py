"""Class 2: one tenant's prompt must not stall the others.

Pure-Python BPE is super-linear on a long run without spaces, and it used to run on the event loop (to
reserve, and to bill answers that came without usage). The attack sends 1 MiB prompts without spaces
through every path that may count tokens (a TPM-limited key, an upstream that omits usage, a stream cut
before its usage) while another tenant measures its own latency.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import httpx

from tests.support import Gateway

HUGE = "a" * (1 << 20)


def _victim(gateway: Gateway, key: str, stop: threading.Event, latencies: list[float]) -> None:
    body = {"model": "mock-small", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 2}
    with httpx.Client(base_url=gateway.v1, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = client.post("/chat/completions", json=body)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            time.sleep(0.01)


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
    latencies: list[float] = []
    stop = threading.Event()
    thread = threading.Thread(target=_victim, args=(gateway, victim, stop, latencies), daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        warm = len(latencies)
        message = [{"role": "user", "content": HUGE}]
        plain = {"model": "mock-small", "messages": message, "max_tokens": 1, "mock": {"chunks": 1}}
        assert _attack(gateway, limited, plain) == 200
        no_usage = {**plain, "mock": {"chunks": 1, "omit_usage": True}}
        assert _attack(gateway, limited, no_usage) == 200
        stream = {**plain, "stream": True, "mock": {"chunks": 50, "chunk_delay": 0.05}}
        assert _attack(gateway, limited, stream, cut_stream=True) == 200
        time.sleep(2.0)  # the cut stream is billed after the attacker left: keep measuring through it
    finally:
        stop.set()
        thread.join(timeout=60)
    during = latencies[warm:]
    assert len(during) >= 10, "the victim barely ran: the test measured nothing"
    worst = max(during)
    print(
        f"victim during attack: n={len(during)} median={statistics.median(during) * 1000:.1f} ms "
        f"max={worst * 1000:.1f} ms"
    )
    assert worst < 1.0, f"another tenant waited {worst:.2f} s behind the attack"

    with gateway.admin() as admin:
        billed = admin.get("/admin/usage/records", params={"tenant_id": attacker["id"]}).json()["data"]
    assert len(billed) == 3, billed
    assert all(r["prompt_tokens"] > 0 for r in billed), "the attack requests were not billed"
