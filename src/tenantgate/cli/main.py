"""The ``tenantgate`` command line: serve, migrate, mock-upstream, check-config, tenants, keys and chat."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from tenantgate import __version__
from tenantgate.cli import admin_commands, cert_commands, user_commands
from tenantgate.cli.chat import chat_loop
from tenantgate.config.file import ConfigError, load_config

app = typer.Typer(help="tenantgate: a multi-tenant OpenAI-compatible LLM gateway.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tenantgate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """tenantgate: a multi-tenant OpenAI-compatible LLM gateway."""


app.add_typer(admin_commands.tenants_app, name="tenants")
app.add_typer(admin_commands.keys_app, name="keys")
app.add_typer(user_commands.users_app, name="users")
app.add_typer(cert_commands.certs_app, name="certs")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface (default TENANTGATE_HOST or 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default TENANTGATE_PORT or 8080; 0: any free port, see --port-file).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML config: backends, models, prices.")] = None,
    log_format: Annotated[str | None, typer.Option(help="json (default) or console.")] = None,
    port_file: Annotated[
        Path | None, typer.Option("--port-file", help="Write the bound port here (atomically) once listening.")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="The certificate's private key.")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option("--tls-client-ca", help="Require client certificates signed by this CA (mTLS).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Gateway processes sharing the port (one per core; needs Redis).")] = 1,
    reuse_port: Annotated[bool, typer.Option("--reuse-port", hidden=True)] = False,
) -> None:
    """Run the gateway."""
    from tenantgate.config.settings import Settings
    from tenantgate.core.logging import configure_logging
    from tenantgate.edge.app import create_asgi

    overrides: dict[str, object] = {}
    if config is not None:
        overrides["config_file"] = config
    if log_format is not None:
        overrides["log_format"] = log_format
    for name, value in (("tls_cert_file", tls_cert), ("tls_key_file", tls_key), ("tls_client_ca_file", tls_client_ca)):
        if value is not None:
            overrides[name] = value
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        configure_logging(settings.log_format, settings.log_level)
        if workers > 1:
            if not settings.redis_url:
                raise ValueError(
                    "--workers > 1 needs TENANTGATE_REDIS_URL: limits and budgets must be shared by the workers "
                    "to stay exact (in-process limits would allow N times each limit)"
                )
            from tenantgate.edge.workers import Supervisor, migrate_once, worker_env

            if settings.migrate_on_start:
                migrate_once(settings.database_url)  # once, before N workers would race to do it
            supervisor = Supervisor(
                workers,
                settings.host if host is None else host,
                settings.port if port is None else port,
                worker_env({**overrides, "migrate_on_start": "false"}),
                port_file,
            )
            raise typer.Exit(supervisor.run())
        application = create_asgi(settings)
    except (ValueError, ConfigError) as exc:
        typer.echo(f"tenantgate: cannot start: {exc}", err=True)
        raise typer.Exit(2) from None
    import ssl

    from tenantgate.edge.server import build_server

    bind_host = settings.host if host is None else host
    bind_port = settings.port if port is None else port
    try:
        server = build_server(application, settings, host=bind_host, port=bind_port, port_file=port_file)
    except (OSError, ssl.SSLError) as exc:  # unreadable or mismatched TLS files
        typer.echo(f"tenantgate: cannot start: TLS: {exc}", err=True)
        raise typer.Exit(2) from None
    if reuse_port:  # a worker of --workers: its own socket on the shared port
        from tenantgate.edge.workers import reuse_port_socket

        sock = reuse_port_socket(bind_host, bind_port)
        sock.listen(2048)
        server.run(sockets=[sock])
    else:
        server.run()


@app.command()
def edge(
    core: Annotated[str, typer.Option(help="The core gateway's base URL, e.g. https://core.example:8443.")],
    cert: Annotated[Path | None, typer.Option(help="This edge's client certificate (mTLS).")] = None,
    key: Annotated[Path | None, typer.Option(help="Its private key.")] = None,
    ca: Annotated[Path | None, typer.Option(help="The CA that signed the core's certificate.")] = None,
    host: Annotated[str, typer.Option(help="Interface for clients.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for clients (0: any free port, see --port-file).")] = 8080,
    resume_timeout: Annotated[
        float, typer.Option(help="Seconds to keep reconnecting to the core before an honest error.", min=0.1, max=60)
    ] = 30.0,
    port_file: Annotated[Path | None, typer.Option("--port-file", help="Write the bound port here.")] = None,
) -> None:
    """Run an edge: clients call it like the gateway; it forwards to the core over mTLS and resumes after cuts."""
    from tenantgate.split.edge import Edge, client_tls, edge_server

    tls = client_tls(str(ca) if ca else None, str(cert) if cert else None, str(key) if key else None)
    application = Edge(core, tls if core.startswith("https://") else None, resume_timeout=resume_timeout)
    edge_server(application, host, port, port_file).run()


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (also done automatically by ``serve``)."""
    from tenantgate.config.settings import Settings
    from tenantgate.storage.database import create_engine
    from tenantgate.storage.database import migrate as run_migrations

    async def run() -> None:
        engine = create_engine(Settings().database_url)
        try:
            await run_migrations(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    typer.echo("database is at the newest schema")


@app.command("mock-upstream")
def mock_upstream(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8081,
    ttft: Annotated[float, typer.Option(help="Seconds before the first token.")] = 0.0,
    chunk_delay: Annotated[float, typer.Option(help="Seconds between stream chunks.")] = 0.0,
    chunks: Annotated[int, typer.Option(help="Content chunks per reply.")] = 8,
    api_key: Annotated[str | None, typer.Option(help="Require this bearer key.")] = None,
) -> None:
    """Run the built-in OpenAI-compatible mock upstream (for demos, tests and benchmarks)."""
    from tenantgate.mock.common import MockOptions
    from tenantgate.mock.serve import run

    run(host, port, MockOptions(ttft=ttft, chunk_delay=chunk_delay, chunks=chunks, api_key=api_key))


@app.command("check-config")
def check_config(path: Path) -> None:
    """Validate a YAML config file; every error names its key path."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        for error in exc.errors:
            typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    models = sorted({model.name for backend in config.backends for model in backend.model_entries()})
    typer.echo(f"ok: {len(config.backends)} backend(s), models: {', '.join(models) or '(none)'}")


@app.command()
def chat(
    model: Annotated[str, typer.Option(help="Model to talk to.")],
    base_url: Annotated[str, typer.Option(envvar="TENANTGATE_BASE_URL")] = "http://127.0.0.1:8080/v1",
    key: Annotated[str | None, typer.Option(envvar="TENANTGATE_API_KEY", help="Your tg- API key.")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
) -> None:
    """Interactive streaming chat through the gateway (type 'exit' or Ctrl-D to leave)."""
    if not key:
        typer.echo("tenantgate chat: pass --key or set TENANTGATE_API_KEY", err=True)
        raise typer.Exit(2)
    raise typer.Exit(chat_loop(model=model, base_url=base_url, key=key, system=system, stdin=sys.stdin))


if __name__ == "__main__":
    app()
