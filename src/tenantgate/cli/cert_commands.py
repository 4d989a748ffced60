"""``tenantgate certs …``: a private CA, server and client certificates for TLS and the split deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tenantgate.tls.certs import create_ca, issue

certs_app = typer.Typer(help="Make a private CA and certificates (for people without a PKI).", no_args_is_help=True)


@certs_app.command("init")
def certs_init(
    directory: Path,
    host: Annotated[list[str], typer.Option("--host", help="A name or address clients dial (repeat).")],
    client: Annotated[list[str] | None, typer.Option("--client", help="A client certificate to make (repeat).")] = None,
) -> None:
    """A new CA in DIRECTORY, a server certificate (server.crt/.key) for the hosts, and client certificates."""
    if (directory / "ca.key").exists():
        typer.echo(f"error: {directory / 'ca.key'} exists; use 'certs issue' to add certificates", err=True)
        raise typer.Exit(1)
    ca = create_ca(directory)
    typer.echo(f"CA:     {ca.cert} (key {ca.key}, keep it offline)")
    server = issue(directory, directory, "server", hosts=host)
    typer.echo(f"server: {server.cert} {server.key}")
    for name in client or []:
        made = issue(directory, directory, name, client=True)
        typer.echo(f"client: {made.cert} {made.key}")


@certs_app.command("issue")
def certs_issue(
    directory: Path,
    name: Annotated[str, typer.Option(help="File name (and common name) of the certificate.")],
    host: Annotated[list[str] | None, typer.Option("--host", help="Server certificate: a host (repeat).")] = None,
    client: Annotated[bool, typer.Option("--client", help="A client certificate (mTLS) instead.")] = False,
    out: Annotated[Path | None, typer.Option(help="Where to write it (default: DIRECTORY).")] = None,
) -> None:
    """Issue another certificate from the CA in DIRECTORY (a rotation: the server reloads new files by itself)."""
    try:
        made = issue(directory, out or directory, name, hosts=host, client=client)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{made.cert} {made.key}")
