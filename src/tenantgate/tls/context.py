"""A server TLS context that picks up new certificate files without a restart.

The listening socket keeps one :class:`ssl.SSLContext` for its whole life; rotation loads the new chain into it,
which every later handshake uses (open connections keep the session they negotiated). New files are first
loaded into a scratch context, so a half-written rotation (a new certificate next to the old key) is refused
and the old chain keeps serving. A client CA given for mTLS makes a client certificate mandatory: a client
without one, or with one the CA did not sign, fails the handshake before any HTTP is read.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

log = logging.getLogger("tenantgate.tls")


def _fingerprint(paths: list[Path]) -> tuple[tuple[float, int], ...]:
    found = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            found.append((0.0, -1))
        else:
            found.append((stat.st_mtime, stat.st_size))
    return tuple(found)


def _build(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class ReloadingTLS:
    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None, *, interval_s: float = 2.0) -> None:
        self._cert, self._key, self._client_ca = cert, key, client_ca
        self._interval_s = interval_s
        self.context = _build(cert, key, client_ca)  # fails fast at start on bad files
        self._seen = _fingerprint(self._files())
        self.reloads = 0
        self._task: asyncio.Task[None] | None = None

    def _files(self) -> list[Path]:
        return [self._cert, self._key] + ([self._client_ca] if self._client_ca else [])

    def reload_if_changed(self) -> bool:
        """Load the files again when one changed and the new set is valid; True when the context changed."""
        seen = _fingerprint(self._files())
        if seen == self._seen:
            return False
        try:
            _build(self._cert, self._key, self._client_ca)  # all or nothing: validate on a scratch context
            self.context.load_cert_chain(self._cert, self._key)
            if self._client_ca is not None:
                self.context.load_verify_locations(cafile=self._client_ca)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("tls: new certificate files not loaded (%s); still serving the previous ones", exc)
            return False  # not recorded as seen: tried again until the files make a valid set
        self._seen = seen
        self.reloads += 1
        log.info("tls: certificate files reloaded")
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.reload_if_changed()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
