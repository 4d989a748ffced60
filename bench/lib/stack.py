"""The processes under test: the mock upstreams, an nginx reverse proxy for reference, and tenantgate itself.

Two mocks run on the client CPU. The built-in Python mock (aiohttp) is the realistic one and the only one that
streams, but on one shared core it caps the direct floor at roughly 10k requests/s; nginx returning a fixed
chat.completion is several times faster, so when nginx is available the throughput phases go to it and the
gateway (not the mock) is what saturates. A plain nginx reverse proxy on the gateway's CPU gives the in-run
"one proxy hop" reference the issue's targets are stated against.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.procs import CLIENT_CPU, GATEWAY_CPU, Proc, ensure_apt, free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
UPSTREAM_MODEL = "mock-gpt"  # a model the Python mock serves; nginx answers whatever is asked

# What nginx answers to every chat completion: the shape (and size) of a short real reply, with usage.
CANNED_REPLY = json.dumps(
    {
        "id": "chatcmpl-bench-canned-0000000000000000",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": UPSTREAM_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "This is the fixed benchmark reply from nginx."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    },
    separators=(",", ":"),
)

_NGINX_COMMON = """worker_processes 1;
master_process off;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    client_body_temp_path {work}/tmp_body;
    proxy_temp_path {work}/tmp_proxy;
    fastcgi_temp_path {work}/tmp_fastcgi;
    uwsgi_temp_path {work}/tmp_uwsgi;
    scgi_temp_path {work}/tmp_scgi;
{servers}
}}
"""

_NGINX_MOCK = """    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v1/chat/completions {{ default_type application/json; return 200 '{reply}'; }}
        location = /nginx_status {{ stub_status; }}
        location / {{ default_type application/json; return 404 '{{"error":{{"message":"not found"}}}}'; }}
    }}"""

_NGINX_PROXY = """    upstream mock {{ server 127.0.0.1:{upstream}; keepalive 256; keepalive_requests 100000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}"""


def _http_json(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _nginx(name: str, work: Path, servers: str, cpu: str, health: str) -> Proc:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "nginx.conf"
    config.write_text(_NGINX_COMMON.format(work=work, servers=servers))
    proc = Proc(
        name,
        ["nginx", "-p", str(work), "-c", str(config), "-e", str(work / "error.log")],
        cpu=cpu,
        log=work / "out.log",
    )
    wait_http(health, proc, timeout=15)
    return proc


@dataclass
class Mock:
    """One running mock upstream and how to count the requests it has served."""

    kind: str  # "nginx" or "python"
    proc: Proc
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def served(self) -> int:
        """Chat requests answered so far (stub_status counts every request, including its own reads)."""
        if self.kind == "nginx":
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/nginx_status", timeout=5) as response:
                lines = response.read().decode().splitlines()
            return int(lines[2].split()[2])
        stats = _http_json("GET", f"http://127.0.0.1:{self.port}/_mock/stats")
        return int(stats["requests"].get("/v1/chat/completions", 0))


def start_python_mock(work: Path) -> Mock:
    port = free_port()
    argv = [str(VENV_BIN / "python"), "-m", "tenantgate.mock.upstream", "--port", str(port)]
    proc = Proc("python-mock", argv, cpu=CLIENT_CPU, log=work / "python-mock.log")
    wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=30)
    return Mock("python", proc, port)


def start_nginx_mock(work: Path) -> Mock | None:
    if not ensure_apt("nginx", "nginx-light"):
        return None
    port = free_port()
    servers = _NGINX_MOCK.format(port=port, reply=CANNED_REPLY)
    health = f"http://127.0.0.1:{port}/nginx_status"
    proc = _nginx("nginx-mock", work / "nginx-mock", servers, CLIENT_CPU, health)
    return Mock("nginx", proc, port)


def start_nginx_proxy(work: Path, upstream: Mock) -> tuple[Proc, int]:
    """nginx as a plain keep-alive reverse proxy, on the gateway CPU: the cost of one well-built hop."""
    port = free_port()
    servers = _NGINX_PROXY.format(port=port, upstream=upstream.port)
    health = f"http://127.0.0.1:{port}/nginx_status"
    proc = _nginx("nginx-proxy", work / "nginx-proxy", servers, GATEWAY_CPU, health)
    return proc, port


@dataclass
class GatewaySpec:
    """How to start one tenantgate process for one scenario."""

    name: str
    log_level: str = "WARNING"
    env: dict[str, str] = field(default_factory=dict)
    seed_db: Path | None = None  # a database prepared before start (the many-keys scenario)


@dataclass
class RunningGateway:
    proc: Proc
    port: int
    key: str
    key_id: str
    workdir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        return _http_json(method, self.url(path), body, {"Authorization": f"Bearer {ADMIN_KEY}"})


def gateway_config(fast: Mock, python: Mock) -> str:
    """Two backends: ``bench-fast`` (the fastest mock, for throughput) and ``bench-py`` (streams, faults)."""
    lines = ["# written by bench/run.py", "backends:"]
    for name, mock in (("fast", fast), ("py", python)):
        lines += [
            f"  - name: {name}-{mock.kind}",
            f"    base_url: {mock.base_url}",
            "    models:",
            f"      - name: bench-{name}",
            f"        upstream_model: {UPSTREAM_MODEL}",
            "        input_price_per_mtok: 0.15",
            "        output_price_per_mtok: 0.60",
        ]
    return "\n".join(lines) + "\n"


def gateway_env(workdir: Path, db: Path, log_level: str) -> dict[str, str]:
    return {
        "TENANTGATE_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "TENANTGATE_ADMIN_KEY": ADMIN_KEY,
        "TENANTGATE_SECRET_KEY_FILE": str(workdir / "secret"),
        "TENANTGATE_LOG_LEVEL": log_level,
    }


def start_gateway(spec: GatewaySpec, work: Path, config: str, limits: dict[str, int]) -> RunningGateway:
    """Start tenantgate on the gateway CPU; create a tenant and a key (with ``limits``) through the admin API."""
    workdir = work / f"gw-{spec.name}"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "gateway.yaml").write_text(config)
    db = spec.seed_db or workdir / "bench.db"
    env = {**gateway_env(workdir, db, spec.log_level), **spec.env}
    port = free_port()
    tenantgate = shutil.which("tenantgate", path=str(VENV_BIN)) or str(VENV_BIN / "tenantgate")
    argv = [tenantgate, "serve", "--port", str(port), "--config", str(workdir / "gateway.yaml")]
    proc = Proc(f"tenantgate-{spec.name}", argv, cpu=GATEWAY_CPU, log=workdir / "gateway.log", env=env, cwd=workdir)
    wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=90)
    gateway = RunningGateway(proc, port, "", "", workdir)
    tenant = gateway.admin("POST", "/admin/tenants", {"name": f"bench-{spec.name}"})
    created = gateway.admin("POST", "/admin/keys", {"tenant_id": tenant["id"], "name": "bench"})
    gateway.key, gateway.key_id = created["key"], created["id"]
    if limits:
        gateway.admin("PATCH", f"/admin/keys/{gateway.key_id}", limits)
    return gateway


def smoke(gateway: RunningGateway, model: str) -> dict[str, str]:
    """One request through the gateway: must be 200 with the mock's content; returns the response headers."""
    body = {"model": model, "messages": [{"role": "user", "content": "smoke test"}]}
    request = urllib.request.Request(
        gateway.url("/v1/chat/completions"),
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = json.loads(response.read())
        if not payload.get("choices"):
            raise RuntimeError(f"smoke request through {model} returned no choices: {payload}")
        return {k.lower(): v for k, v in response.headers.items()}
