"""The wheel: built from the checkout, its runtime dependencies free of test tools (and holding the chat
client's), its templates, static files and migrations inside, and installable into a clean virtualenv whose
``tenantgate serve`` runs the gateway and the console."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import httpx

from tests.support import _spawn, gateway_env

ROOT = Path(__file__).resolve().parents[2]
TEST_TOOLS = ("pytest", "pytest-asyncio", "ruff", "mypy", "hypothesis", "schemathesis", "playwright", "types-pyyaml")


def test_the_wheel_installs_clean_and_serves(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("tenantgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata_name = next(name for name in names if name.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    for packaged in (
        "tenantgate/console/templates/base.html",
        "tenantgate/console/static/vendor/htmx.min.js",
        "tenantgate/storage/migrations/versions/0006_people.py",
    ):
        assert packaged in names, packaged
    assert any(name.endswith("licenses/LICENSE") for name in names)
    assert metadata["License-Expression"] == "Apache-2.0"
    runtime = [req for req in metadata.get_all("Requires-Dist") or [] if "extra ==" not in req]
    runtime_names = {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() for req in runtime}
    assert not runtime_names & set(TEST_TOOLS), runtime_names & set(TEST_TOOLS)
    assert "openai" in runtime_names  # `tenantgate chat` needs it

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    freeze = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True, check=True)
    assert not any(line.lower().startswith(TEST_TOOLS) for line in freeze.stdout.splitlines()), freeze.stdout
    env = gateway_env(f"sqlite+aiosqlite:///{tmp_path / 'wheel.db'}", tmp_path)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    process = _spawn([str(venv / "bin" / "tenantgate"), "serve"], env, "gateway-wheel", "/health")
    try:
        page = httpx.get(f"{process.url}/console/login")
        assert page.status_code == 200 and "Log in" in page.text
        css = re.search(r'href="(/console/static/[^"]+console\.css)"', page.text)
        assert css is not None and httpx.get(process.url + css.group(1)).status_code == 200
    finally:
        process.stop()
