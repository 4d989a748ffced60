"""TLS on the gateway's port: the openai SDK over HTTPS with a private CA made by ``tenantgate certs``, mTLS that
refuses clients without a certificate from the CA, and a certificate rotated without a restart."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from cryptography import x509

from tests.support import ADMIN_KEY, LOG_DIR, Process, gateway_env, mock_config, spawn, wait_port_file

KEY = "tg-tlsclientkey1-" + "T" * 43


def trust(ca: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """A client context trusting ``ca`` (and presenting ``client`` = (certificate, key) for mTLS)."""
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(*client)
    return context


def certs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenantgate.cli.main", "certs", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    made = certs("init", str(directory), "--host", "127.0.0.1", "--host", "localhost", "--client", "edge")
    assert made.returncode == 0, made.stderr
    for name in ("ca.key", "server.key", "edge.key"):
        assert (directory / name).stat().st_mode & 0o077 == 0, name  # private keys are 0600
    assert certs("init", str(directory), "--host", "x").returncode == 1  # never overwrites a CA
    return directory


def start_tls_gateway(tmp: Path, mock: Process, pki: Path, *extra: str) -> Process:
    config = tmp / "config.yaml"
    config.write_text(mock_config(mock.port))
    env = gateway_env(f"sqlite+aiosqlite:///{tmp / 'tls.db'}", tmp, TENANTGATE_BOOTSTRAP_KEYS=f"tls-tenant:{KEY}")
    env["TENANTGATE_TLS_RELOAD_INTERVAL"] = "0.2"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"gateway-tls-{os.getpid()}-{time.monotonic_ns()}.log"
    port_file = tmp / f"port-{time.monotonic_ns()}"
    argv = [sys.executable, "-m", "tenantgate.cli.main", "serve", "--config", str(config), "--port", "0"]
    argv += ["--port-file", str(port_file), "--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key")]
    with log_path.open("wb") as log:
        proc = spawn([*argv, *extra], env, stdout=log, stderr=subprocess.STDOUT)
    process = Process(proc, wait_port_file(port_file, proc), log_path)
    deadline = time.monotonic() + 30
    while True:
        try:
            context = trust(pki / "ca.crt", (pki / "edge.crt", pki / "edge.key"))
            if httpx.get(f"https://127.0.0.1:{process.port}/health", verify=context).is_success:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            process.stop(signal.SIGKILL)
            raise RuntimeError(process.log_text())
        time.sleep(0.1)


@pytest.fixture()
def tls_gateway(tmp_path: Path, mock: Process, pki: Path) -> Iterator[Process]:
    process = start_tls_gateway(tmp_path, mock, pki)
    yield process
    process.stop()


def served_serial(port: int, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_the_openai_sdk_over_https_with_the_private_ca(tls_gateway: Process, pki: Path) -> None:
    base = f"https://127.0.0.1:{tls_gateway.port}/v1"
    with httpx.Client(verify=trust(pki / "ca.crt")) as http:
        client = openai.OpenAI(base_url=base, api_key=KEY, http_client=http)
        reply = client.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "over tls"}])
        assert (reply.choices[0].message.content or "").startswith("over tls")  # the mock echoes the message
        streamed = client.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "streamed too"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).startswith("streamed too")
    with pytest.raises(httpx.ConnectError):  # an unknown CA is refused by the client, as it should be
        httpx.get(f"https://127.0.0.1:{tls_gateway.port}/health")
    with pytest.raises(httpx.TransportError):  # and clear text is not served on the TLS port
        httpx.get(f"http://127.0.0.1:{tls_gateway.port}/health", timeout=5)


def test_session_cookies_are_secure_over_tls(tls_gateway: Process, pki: Path) -> None:
    url = f"https://127.0.0.1:{tls_gateway.port}"
    with httpx.Client(base_url=url, verify=trust(pki / "ca.crt")) as c:
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        made = c.post(
            "/admin/users", json={"email": "tls@example.org", "password": "over tls passphrase"}, headers=admin
        )
        assert made.status_code == 201, made.text
        login = httpx.post(
            f"{url}/auth/login",
            json={"email": "tls@example.org", "password": "over tls passphrase"},
            verify=trust(pki / "ca.crt"),
        )
    cookie = login.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie  # auto mode: Secure because the request came over TLS


def test_mtls_refuses_clients_without_a_certificate_from_the_ca(tmp_path: Path, mock: Process, pki: Path) -> None:
    other = tmp_path / "other"
    assert certs("init", str(other), "--host", "127.0.0.1", "--client", "stranger").returncode == 0
    gateway = start_tls_gateway(tmp_path, mock, pki, "--tls-client-ca", str(pki / "ca.crt"))
    try:
        url, ca = f"https://127.0.0.1:{gateway.port}/health", pki / "ca.crt"
        with pytest.raises(httpx.TransportError):  # no client certificate: the handshake fails
            httpx.get(url, verify=trust(ca))
        with pytest.raises(httpx.TransportError):  # a certificate from another CA: refused too
            httpx.get(url, verify=trust(ca, (other / "stranger.crt", other / "stranger.key")))
        ok = httpx.get(url, verify=trust(ca, (pki / "edge.crt", pki / "edge.key")))
        assert ok.status_code == 200
    finally:
        gateway.stop()


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path, mock: Process, pki: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    for suffix in ("crt", "key"):
        (served / f"server.{suffix}").write_bytes((pki / f"server.{suffix}").read_bytes())
    gateway = start_tls_gateway(tmp_path, mock, served_pki(pki, served))
    try:
        first = served_serial(gateway.port, pki / "ca.crt")
        fresh = certs("issue", str(pki), "--name", "server-next", "--host", "127.0.0.1", "--out", str(tmp_path))
        assert fresh.returncode == 0, fresh.stderr
        # a half-done rotation (new key, old certificate) must not break serving
        (served / "server.key").write_bytes((tmp_path / "server-next.key").read_bytes())
        deadline = time.monotonic() + 10
        while "still serving the previous ones" not in gateway.log_text():  # the watcher saw the mismatched pair
            assert time.monotonic() < deadline, "the half-done rotation was not noticed"
            time.sleep(0.05)
        assert served_serial(gateway.port, pki / "ca.crt") == first  # and kept serving the old certificate
        (served / "server.crt").write_bytes((tmp_path / "server-next.crt").read_bytes())
        expected = x509.load_pem_x509_certificate((tmp_path / "server-next.crt").read_bytes()).serial_number
        deadline = time.monotonic() + 10
        while served_serial(gateway.port, pki / "ca.crt") != expected:
            assert time.monotonic() < deadline, "the new certificate was not picked up"
            time.sleep(0.1)
        assert gateway.proc.poll() is None  # the same process, never restarted
    finally:
        gateway.stop()


def served_pki(pki: Path, served: Path) -> Path:
    """A directory like ``pki`` whose server.crt/.key are the copies in ``served`` (which the test rewrites)."""
    view = served.parent / "view"
    view.mkdir(exist_ok=True)
    for name in ("ca.crt", "edge.crt", "edge.key"):
        (view / name).symlink_to(pki / name)
    for name in ("server.crt", "server.key"):
        (view / name).symlink_to(served / name)
    return view
