"""The backend network policy (SSRF guard): addresses and URLs in, allowed or the reason out; no sockets but one
real getaddrinfo of a numeric host name."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tenantgate.backends.netpolicy import BackendURLRefused, NetworkPolicy, check_backend_url, host_key

DEFAULT = NetworkPolicy()
NO_LOOPBACK = NetworkPolicy(allow_loopback=False)
PRIVATE = NetworkPolicy(allow_private=True)
GPU_SUBNET = NetworkPolicy(allowed_networks=("10.1.0.0/16", "169.254.10.0/24"))
DENY = NetworkPolicy(allow_private=True, allowed_networks=("10.1.0.0/16",), denied_networks=("10.1.2.0/24",))


@pytest.mark.parametrize(
    ("policy", "address", "allowed"),
    [
        (DEFAULT, "8.8.8.8", True),
        (DEFAULT, "93.184.216.34", True),
        (DEFAULT, "2606:4700::1111", True),
        (DEFAULT, "::ffff:8.8.8.8", True),
        (DEFAULT, "169.254.169.254", False),
        (PRIVATE, "169.254.170.2", False),  # ECS task metadata: link-local whatever the flags
        (PRIVATE, "fe80::1", False),
        (PRIVATE, "fe80::1%eth0", False),
        (PRIVATE, "fd00:ec2::254", False),  # inside fc00::/7 yet never allowed
        (PRIVATE, "100.100.100.200", False),  # inside CGNAT yet never allowed
        (DEFAULT, "0.0.0.0", False),
        (DEFAULT, "::", False),
        (DEFAULT, "224.0.0.1", False),
        (DEFAULT, "ff02::1", False),
        (DEFAULT, "255.255.255.255", False),
        (DEFAULT, "240.0.0.1", False),
        (DEFAULT, "127.0.0.1", True),
        (DEFAULT, "127.255.0.9", True),
        (DEFAULT, "::1", True),
        (NO_LOOPBACK, "127.0.0.1", False),
        (NO_LOOPBACK, "127.8.8.8", False),
        (NO_LOOPBACK, "::1", False),
        (NO_LOOPBACK, "::ffff:127.0.0.1", False),
        (DEFAULT, "10.0.0.5", False),
        (DEFAULT, "172.16.3.4", False),
        (DEFAULT, "192.168.1.10", False),
        (DEFAULT, "100.64.0.1", False),
        (DEFAULT, "fd12:3456::1", False),
        (DEFAULT, "::ffff:10.0.0.5", False),
        (PRIVATE, "10.0.0.5", True),
        (PRIVATE, "192.168.1.10", True),
        (PRIVATE, "100.64.0.1", True),
        (PRIVATE, "fd12:3456::1", True),
        (DEFAULT, "::ffff:169.254.169.254", False),
        (PRIVATE, "::ffff:169.254.169.254", False),
        (DEFAULT, "64:ff9b::a9fe:a9fe", False),  # NAT64 form of the metadata address
        (DEFAULT, "2002:a9fe:a9fe::1", False),  # 6to4 form
        (GPU_SUBNET, "10.1.7.7", True),
        (GPU_SUBNET, "::ffff:10.1.7.7", True),
        (GPU_SUBNET, "10.2.0.1", False),
        (GPU_SUBNET, "169.254.10.5", True),  # an explicit allow overrides even link-local
        (GPU_SUBNET, "169.254.169.254", False),
        (DENY, "10.1.3.1", True),
        (DENY, "10.1.2.1", False),  # denied wins over allowed_networks and allow_private
        (DENY, "::ffff:10.1.2.1", False),
        (DEFAULT, "not-an-ip", False),
        (DEFAULT, "127.1", False),  # non-canonical spellings are names, not addresses
    ],
)
def test_check_address(policy: NetworkPolicy, address: str, allowed: bool) -> None:
    reason = policy.check_address(address)
    assert (reason is None) is allowed, reason


def test_address_reasons_name_the_range_and_the_flag() -> None:
    assert DEFAULT.check_address("169.254.169.254") == "link-local address 169.254.169.254 is not allowed"
    assert "link-local address 169.254.169.254" in str(DEFAULT.check_address("::ffff:169.254.169.254"))
    assert DEFAULT.check_address("fd00:ec2::254") == "cloud metadata address fd00:ec2::254 is not allowed"
    assert DEFAULT.check_address("10.0.0.5") == "private address 10.0.0.5 is not allowed (allow_private is off)"
    assert NO_LOOPBACK.check_address("::1") == "loopback address ::1 is not allowed (allow_loopback is off)"
    assert DENY.check_address("10.1.2.1") == "address 10.1.2.1 is in the denied network 10.1.2.0/24"


@pytest.mark.parametrize(
    ("policy", "url", "expected"),
    [
        (DEFAULT, "https://api.openai.com/v1", None),
        (DEFAULT, "http://127.0.0.1:8000/v1", None),
        (DEFAULT, "http://[::1]:11434", None),
        (DEFAULT, "http://gpu-box.internal:8000", None),  # a name: only DNS can tell
        (DEFAULT, "ftp://files.example.com/", "scheme 'ftp' is not allowed"),
        (DEFAULT, "file:///etc/passwd", "scheme 'file' is not allowed"),
        (DEFAULT, "api.openai.com/v1", "scheme '' is not allowed"),
        (DEFAULT, "http://user:pass@api.example.com/", "credentials in the URL"),
        (DEFAULT, "http://token@api.example.com/", "credentials in the URL"),
        (DEFAULT, "http:///v1", "no host"),
        (DEFAULT, "http://api.example.com:0/", "port 0 is out of range"),
        (DEFAULT, "http://api.example.com:70000/", "not valid"),
        (DEFAULT, "http://evil.example\\@127.0.0.1/", "not valid"),
        (DEFAULT, "http://169.254.169.254/latest/meta-data/", "link-local address 169.254.169.254"),
        (DEFAULT, "http://[::ffff:169.254.169.254]/", "link-local address 169.254.169.254"),
        (DEFAULT, "http://[fe80::1%25eth0]:80/", "link-local address fe80::1"),
        (DEFAULT, "http://10.0.0.5:8000", "private address 10.0.0.5"),
        (PRIVATE, "http://10.0.0.5:8000", None),
        (NO_LOOPBACK, "http://127.0.0.1:8000", "loopback address 127.0.0.1"),
        (GPU_SUBNET, "http://10.1.0.9:8000", None),
        (DENY, "http://10.1.2.9:8000", "denied network 10.1.2.0/24"),
    ],
)
def test_check_url(policy: NetworkPolicy, url: str, expected: str | None) -> None:
    reason = policy.check_url(url)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason, reason


def test_invalid_networks_fail_when_the_policy_is_built() -> None:
    with pytest.raises(ValueError, match="allowed_networks"):
        NetworkPolicy(allowed_networks=("10.1.0.0/33",))
    with pytest.raises(ValueError, match="denied_networks"):
        NetworkPolicy(denied_networks=("10.1.2.3/16",))  # host bits set: a typo, not a /16


def test_host_key_normalises_case_trailing_dots_and_idna() -> None:
    assert host_key("http://API.Example.com.:8000/v1") == "api.example.com"
    assert host_key("LocalHost.") == "localhost"
    assert host_key("http://bücher.example/") == "xn--bcher-kva.example"


class FakeDNS:
    """A resolver seam for check_backend_url that records what it was asked."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


async def refusal(policy: NetworkPolicy, url: str, dns: FakeDNS | None = None) -> str | None:
    try:
        await check_backend_url(policy, url, dns)
    except BackendURLRefused as exc:
        return str(exc)
    return None


async def test_a_name_passes_only_when_every_address_is_allowed() -> None:
    dns = FakeDNS(
        {"api.example.com": ["93.184.216.34", "2606:2800:220:1::1"], "mixed.example": ["8.8.8.8", "169.254.169.254"]}
    )
    assert await refusal(DEFAULT, "https://api.example.com/v1", dns) is None
    assert dns.asked == [("api.example.com", 443)]
    reason = await refusal(DEFAULT, "http://mixed.example:8000", dns)
    assert (
        reason
        == "host 'mixed.example' resolves to a refused address: link-local address 169.254.169.254 is not allowed"
    )


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    dns = FakeDNS({"empty.example": []})
    assert "host 'nowhere.example' does not resolve" in str(await refusal(DEFAULT, "http://nowhere.example/", dns))
    assert "does not resolve to any address" in str(await refusal(DEFAULT, "http://empty.example/", dns))


async def test_a_slow_resolver_is_refused() -> None:
    async def hang(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return ["8.8.8.8"]

    with pytest.raises(BackendURLRefused, match=r"did not resolve within 0\.05s"):
        await check_backend_url(DEFAULT, "http://slow.example/", hang, timeout_s=0.05)


async def test_syntax_is_refused_before_any_lookup_and_literals_are_not_resolved() -> None:
    dns = FakeDNS({})
    assert "credentials" in str(await refusal(DEFAULT, "http://u:p@api.example.com/", dns))
    assert "link-local" in str(await refusal(DEFAULT, "http://169.254.169.254/", dns))
    assert await refusal(DEFAULT, "http://8.8.8.8:8000/", dns) is None
    assert dns.asked == []


@pytest.mark.parametrize("host", ["0x7f.1", "0x7f000001", "2130706433", "127.1", "0177.0.0.1"])
async def test_odd_ipv4_spellings_go_through_the_resolver(host: str) -> None:
    dns = FakeDNS({host: ["127.0.0.1"]})
    reason = await refusal(NO_LOOPBACK, f"http://{host}:8000/", dns)
    assert reason is not None and "loopback address 127.0.0.1" in reason, reason
    assert dns.asked == [(host, 8000)]
    assert await refusal(DEFAULT, f"http://{host}:8000/", dns) is None


async def test_a_decimal_ipv4_spelling_through_the_real_getaddrinfo() -> None:
    reason = await refusal(NO_LOOPBACK, "http://2130706433:8000/")
    assert reason is not None and "loopback address 127.0.0.1" in reason, reason
    reason = await refusal(DEFAULT, "http://2852039166/")  # 169.254.169.254 as one number
    assert reason is not None and "link-local address 169.254.169.254" in reason, reason
