"""Running the shared peer harness (../shared/bench) with tenantgate as its extra target.

That harness measures LiteLLM, Portkey and nginx side by side with the same method; adding tenantgate to one
of its runs puts our gateway in the same table as the peers, measured minutes apart on the same machine. Its
``setup.sh`` installs the peers (LiteLLM from PyPI, Portkey from npm); when that is impossible the run is
limited to the targets that need nothing but nginx.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from peer_gateway import DEFAULT_KEY

from lib.stack import VENV_BIN  # the gateway runs from the same venv as this harness

BENCH_DIR = Path(__file__).resolve().parents[1]
SHARED = BENCH_DIR.parent.parent / "shared" / "bench"


def run_peer(targets: str, quick: bool) -> tuple[Path, str]:
    """Run setup.sh (best effort) then run.sh; return the output folder and its summary.md."""
    if not (SHARED / "run.sh").exists():
        raise RuntimeError(f"the peer harness is not at {SHARED}")
    setup = subprocess.run(["bash", str(SHARED / "setup.sh")], check=False)
    if setup.returncode != 0:
        print("peer: setup.sh failed (network?); running only direct and nginx-proxy", flush=True)
        targets = "direct,nginx-proxy"
    peer_gateway = BENCH_DIR / "peer_gateway.py"
    command = (
        f"exec {VENV_BIN / 'python'} {peer_gateway} --port {{{{port}}}} --upstream {{{{mock_url}}}} "
        f"--stream-upstream {{{{sse_url}}}} --workdir {{{{workdir}}}} --key {DEFAULT_KEY}"
    )
    out = BENCH_DIR / "results" / f"peer-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    argv = [
        "bash",
        str(SHARED / "run.sh"),
        "--targets",
        targets,
        "--name",
        "tenantgate",
        "--port",
        "18200",
        "--cmd",
        command,
        "--header",
        f"Authorization: Bearer {DEFAULT_KEY}",
        "--model",
        "mock",
        "--stream-model",
        "mock-stream",
        "--out",
        str(out),
    ]
    if quick:
        argv.append("--quick")
    subprocess.run(argv, check=True, cwd=BENCH_DIR.parent)
    summary = out / "summary.md"
    return out, summary.read_text() if summary.exists() else "(the peer harness wrote no summary.md)"


def record(out: Path, summary: str, targets: str) -> str:
    """The RESULTS.md section for one peer run."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"## Peer harness run ({stamp})\n\n`bench/run.py --peer` ran `../shared/bench/run.sh --targets {targets} "
        "--name tenantgate --port 18200 --cmd 'exec .venv/bin/python bench/peer_gateway.py ...'` (method and "
        f"caveats: ../shared/bench/README.md). Raw output: `bench/results/{out.name}/`.\n\n{summary}"
    )


def main(targets: str, *, quick: bool, write: bool) -> int:
    """``bench/run.py --peer``: run the harness, print its table, keep it in RESULTS.md (not for --quick)."""
    from lib.report import update_section

    out, summary = run_peer(targets, quick)
    print(summary)
    if write and not quick:
        update_section(BENCH_DIR / "RESULTS.md", "peer", record(out, summary, targets))
    return 0
