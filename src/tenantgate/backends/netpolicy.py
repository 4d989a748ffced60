"""Which network addresses the gateway may call for backends registered at runtime (an SSRF guard).

A backend URL posted to the admin API makes the gateway open connections on the poster's behalf, from inside
the deployment's network. Without a policy, ``http://169.254.169.254/`` (cloud metadata: instance credentials),
the database or a private admin panel are one ``POST /admin/backends`` away. The guard has two halves:

- :func:`check_backend_url` at registration: the URL's syntax, and every address its host resolves to *now*;
- :class:`PolicyResolver` at connection time, for hosts registered that way: a name can resolve to a public
  address when it is checked and to ``127.0.0.1`` a minute later (DNS rebinding), so the addresses are checked
  again on every lookup, right before aiohttp connects to them.

IP literals never reach a resolver in aiohttp (3.14 also refuses non-canonical spellings such as ``127.1``), and
aiohttp's DNS cache answers without asking the resolver, so :class:`PolicyConnector` checks the addresses again
where every connection starts, whatever produced them: an API-registered ``http://127.0.0.1/`` is refused after
a restart with loopback disallowed, as is a name that only *looks* numeric (``0x7f.1``, resolved by the system).
Config-file backends are trusted and are not restricted (unless an API-registered backend shares their host).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from aiohttp.tracing import Trace
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[list[str]]]

_N = ipaddress.ip_network

# Refused whatever the flags (only allowed_networks overrides them); first match names the reason.
_ALWAYS_REFUSED: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("unspecified", (_N("0.0.0.0/8"), _N("::/128"))),  # connecting to 0.0.0.0 reaches this host on Linux
    # AWS's IPv6 IMDS sits inside fc00::/7 and Alibaba's inside CGNAT, so allow_private must not open them.
    ("cloud metadata", (_N("fd00:ec2::254/128"), _N("100.100.100.200/32"))),
    ("link-local", (_N("169.254.0.0/16"), _N("fe80::/10"))),  # 169.254.169.254: AWS, GCP, Azure, OCI metadata
    ("multicast", (_N("224.0.0.0/4"), _N("ff00::/8"))),
    ("broadcast", (_N("255.255.255.255/32"),)),
    (
        "reserved",  # not routable on the internet: no legitimate backend lives there
        (
            _N("240.0.0.0/4"),
            _N("192.0.0.0/24"),  # IETF protocol assignments (OCI's legacy metadata was 192.0.0.192)
            _N("192.0.2.0/24"),
            _N("198.18.0.0/15"),
            _N("198.51.100.0/24"),
            _N("203.0.113.0/24"),
            _N("100::/64"),
            _N("2001:db8::/32"),
        ),
    ),
)
_LOOPBACK: tuple[IPNetwork, ...] = (_N("127.0.0.0/8"), _N("::1/128"))
_PRIVATE: tuple[IPNetwork, ...] = (
    _N("10.0.0.0/8"),
    _N("172.16.0.0/12"),
    _N("192.168.0.0/16"),
    _N("100.64.0.0/10"),  # carrier-grade NAT, also used as internal space (Tailscale, some clouds)
    _N("fc00::/7"),
    _N("fec0::/10"),  # deprecated site-local, still private in effect
)
# IPv6 forms that carry an IPv4 address the stack may end up talking to (mapped sockets, NAT64, compatible).
_EMBEDDING_V4: tuple[IPNetwork, ...] = (_N("::ffff:0:0/96"), _N("64:ff9b::/96"), _N("::/96"))


class BackendURLRefused(ValueError):
    """A backend URL the network policy refuses; ``str(exc)`` is the reason, safe to show to the admin."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse_networks(cidrs: tuple[str, ...], setting: str) -> tuple[IPNetwork, ...]:
    """Strict parsing: ``10.1.2.3/16`` is a typo more often than an intent, and a widened allow-list is a hole."""
    try:
        return tuple(ipaddress.ip_network(cidr.strip(), strict=True) for cidr in cidrs)
    except ValueError as exc:
        raise ValueError(f"{setting}: {exc}") from None


def _parse_ip(text: str) -> IPAddress | None:
    """A canonical IP literal (brackets and an IPv6 zone such as ``%eth0`` stripped), or None for anything else."""
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.sixtofour is not None:
        return ip.sixtofour
    if int(ip) > 1 and any(ip in net for net in _EMBEDDING_V4):  # :: and ::1 keep their IPv6 meaning
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class NetworkPolicy:
    """Which addresses backends registered at runtime may use. Invalid CIDRs raise ``ValueError`` when built."""

    allow_loopback: bool = True  # a local vLLM/Ollama on 127.0.0.1 is the common case
    allow_private: bool = False  # RFC 1918, RFC 4193 (fc00::/7), CGNAT 100.64/10
    allowed_networks: tuple[str, ...] = ()  # always allowed (a GPU subnet), unless denied
    denied_networks: tuple[str, ...] = ()  # always refused: wins over everything
    _allowed: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _denied: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Parsed once here so a bad setting fails at start-up, not on the first registration.
        object.__setattr__(self, "_allowed", _parse_networks(self.allowed_networks, "allowed_networks"))
        object.__setattr__(self, "_denied", _parse_networks(self.denied_networks, "denied_networks"))

    def check_address(self, ip: str) -> str | None:
        """None when the gateway may connect to ``ip``, else the reason it may not."""
        address = _parse_ip(ip)
        if address is None:
            return f"'{ip}' is not an IP address"
        inner = _embedded_v4(address)
        forms: tuple[IPAddress, ...] = (address,) if inner is None else (address, inner)
        for form in forms:
            if net := next((net for net in self._denied if form in net), None):
                return f"address {address} is in the denied network {net}"
        if any(form in net for form in forms for net in self._allowed):
            return None
        target = forms[-1]  # classify what the packets really reach
        shown = str(target) if inner is None else f"{target} (as {address})"
        for label, networks in _ALWAYS_REFUSED:
            if any(target in net for net in networks):
                return f"{label} address {shown} is not allowed"
        if not self.allow_loopback and any(target in net for net in _LOOPBACK):
            return f"loopback address {shown} is not allowed (allow_loopback is off)"
        if not self.allow_private and any(target in net for net in _PRIVATE):
            return f"private address {shown} is not allowed (allow_private is off)"
        return None

    def check_url(self, url: str) -> str | None:
        """Syntax only (no DNS): None when the URL may be registered as far as its text shows, else the reason.

        Parsed with yarl, the parser aiohttp connects with: a second parser could see another host in a crafted
        URL. Hosts that are not canonical IP literals still need :func:`check_backend_url` to resolve them.
        """
        try:
            parsed = URL(url)
            port = parsed.port
        except (ValueError, TypeError) as exc:
            return f"the URL is not valid: {exc}"
        if parsed.scheme not in ("http", "https"):
            return f"scheme '{parsed.scheme}' is not allowed (use http or https)"
        if not parsed.raw_host:
            return "the URL has no host"
        if parsed.raw_user is not None or parsed.raw_password is not None:
            return "credentials in the URL (user:pass@) are not allowed; use the backend's api_key"
        if port is None or not 1 <= port <= 65535:
            return f"port {port} is out of range (1-65535)"
        literal = _parse_ip(parsed.host or "")
        return None if literal is None else self.check_address(str(literal))


def host_key(url_or_host: str) -> str:
    """The spelling of a backend's host kept in ``restricted_hosts`` and compared by :class:`PolicyResolver`.

    Lower-cased, IDNA-encoded and without trailing dots, so ``API.example.``, ``api.example`` and a URL naming
    either map to one entry (restricting both spellings errs on the safe side).
    """
    host = URL(url_or_host).raw_host if "://" in url_or_host else url_or_host
    return (host or "").rstrip(".").lower()


async def _getaddrinfo(host: str, port: int) -> list[str]:
    """Every address the system resolver returns (no AI_ADDRCONFIG: an IPv6 answer counts even without IPv6)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_backend_url(
    policy: NetworkPolicy, url: str, resolve: Resolve | None = None, *, timeout_s: float = 5.0
) -> None:
    """Raise :class:`BackendURLRefused` unless the URL and *every* address its host resolves to are allowed.

    Every address, not just one: the client may connect to any of them. A host that does not resolve is
    refused too, as a backend that cannot be reached is a mistake worth reporting at registration.
    """
    if reason := policy.check_url(url):
        raise BackendURLRefused(reason)
    parsed = URL(url)
    if _parse_ip(parsed.host or "") is not None:
        return  # a canonical literal: check_url has checked it
    host, port = parsed.raw_host or "", parsed.port or 0
    try:
        async with asyncio.timeout(timeout_s):
            addresses = await (resolve or _getaddrinfo)(host, port)
    except TimeoutError:
        raise BackendURLRefused(f"host '{host}' did not resolve within {timeout_s:g}s") from None
    except (OSError, UnicodeError) as exc:
        raise BackendURLRefused(f"host '{host}' does not resolve ({exc})") from None
    if not addresses:
        raise BackendURLRefused(f"host '{host}' does not resolve to any address")
    for address in addresses:
        if reason := policy.check_address(address):
            raise BackendURLRefused(f"host '{host}' resolves to a refused address: {reason}")


class PolicyResolver(AbstractResolver):
    """aiohttp resolver that re-checks every lookup of a restricted host against the policy (anti-rebinding).

    ``restricted_hosts`` is the caller's set (keys from :func:`host_key`), read on every lookup, so hosts can be
    added and removed as backends are registered. Other hosts resolve untouched. Refused answers are dropped;
    if none is left the lookup fails with ``OSError``, which aiohttp raises as ``ClientConnectorError``.
    """

    def __init__(
        self, policy: NetworkPolicy, restricted_hosts: set[str], resolver: AbstractResolver | None = None
    ) -> None:
        self._policy = policy
        self._restricted = restricted_hosts
        self._inner: AbstractResolver = resolver if resolver is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host_key(host) not in self._restricted:
            return results
        return _allowed_results(self._policy, host, results)

    async def close(self) -> None:
        await self._inner.close()


def _allowed_results(policy: NetworkPolicy, host: str, results: list[ResolveResult]) -> list[ResolveResult]:
    """The answers the policy allows; ``OSError`` (aiohttp: ``ClientConnectorError``) when none is left."""
    verdicts = [(result, policy.check_address(result["host"])) for result in results]
    allowed = [result for result, reason in verdicts if reason is None]
    if not allowed:
        reasons = "; ".join(sorted({str(reason) for _, reason in verdicts})) or "no address"
        raise OSError(errno.EACCES, f"network policy refuses host '{host}': {reasons}")
    return allowed


class PolicyConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that checks every address it is about to connect to for a restricted host.

    aiohttp resolves a host in ``_resolve_host`` right before each new connection: IP literals are answered
    there without a resolver, and names from the DNS cache without one too, so this is the one place that sees
    every address. ``restricted_hosts`` is read on every connect, like :class:`PolicyResolver`'s.
    """

    def __init__(self, policy: NetworkPolicy, restricted_hosts: set[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._policy = policy
        self._restricted = restricted_hosts

    async def _resolve_host(self, host: str, port: int, traces: Sequence[Trace] | None = None) -> list[ResolveResult]:
        if host_key(host) in self._restricted:
            literal = _parse_ip(host)
            if literal is not None and (reason := self._policy.check_address(str(literal))):
                # refused before aiohttp even looks at the literal (it also refuses non-canonical IPv4 forms)
                raise OSError(errno.EACCES, f"network policy refuses host '{host}': {reason}")
            results = await super()._resolve_host(host, port, traces=traces)
            return _allowed_results(self._policy, host, results)
        return await super()._resolve_host(host, port, traces=traces)


if not callable(getattr(aiohttp.TCPConnector, "_resolve_host", None)):  # pragma: no cover - an aiohttp upgrade
    raise ImportError("aiohttp.TCPConnector._resolve_host is gone: PolicyConnector would not enforce the policy")
