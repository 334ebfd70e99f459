"""The SSRF guard: may the render process fetch this URL? A pure decision over the URL and the
addresses its host resolves to (the resolver is injected, so tests decide without connecting).

Refused: schemes other than http and https; hosts that resolve to loopback, private, link-local,
multicast, reserved or unspecified addresses, or to a cloud metadata service. Hosts on the allowlist
are let through as they are (the tests allow 127.0.0.1). Every resolved address must pass, so a
name with one public and one private address is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolver = Callable[[str, int], list[str]]

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal"})
METADATA_ADDRESSES = frozenset({
    ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("169.254.170.2"),
    ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("192.0.0.192"),
})


@dataclass(frozen=True)
class UrlVerdict:
    allowed: bool
    reason: str
    host: str = ""
    addresses: tuple[str, ...] = ()


def system_resolver(host: str, port: int) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)})


def address_refusal(address: str) -> str | None:
    """Why an address may not be fetched, or None when it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    checks = (("loopback", ip.is_loopback), ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
              ("unspecified", ip.is_unspecified), ("private", ip.is_private), ("reserved", ip.is_reserved),
              ("shared (carrier-grade NAT)", ip in ipaddress.ip_network("100.64.0.0/10")),
              ("not globally routable", not ip.is_global))
    for name, hit in checks:
        if hit:
            return f"{ip} is not a public address ({name})"
    return None


def normalized_allowlist(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(host.strip().lower().strip("[]") for host in hosts if host.strip())


def check_url(url: str, allow_hosts: Iterable[str] = (), resolve: Resolver = system_resolver) -> UrlVerdict:
    """Decide whether `url` may be fetched. Resolves its host with `resolve` unless it is allowlisted."""
    if not isinstance(url, str) or not url:
        return UrlVerdict(False, "the URL must be a non-empty string")
    if len(url) > 8192:
        return UrlVerdict(False, "the URL is longer than 8192 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return UrlVerdict(False, f"the URL cannot be parsed: {exc}")
    if parts.scheme.lower() not in {"http", "https"}:
        return UrlVerdict(False, f"only http and https URLs may be rendered (got {parts.scheme or 'no'} scheme)")
    host = (parts.hostname or "").lower()
    if not host:
        return UrlVerdict(False, "the URL has no host")
    if host in normalized_allowlist(allow_hosts):
        return UrlVerdict(True, "the host is on the allowlist", host)
    if host in METADATA_HOSTS or host.endswith(".internal"):
        return UrlVerdict(False, f"{host} is a cloud metadata or internal host name", host)
    if host == "localhost" or host.endswith(".localhost"):
        return UrlVerdict(False, f"{host} is a loopback host name", host)
    default_port = 443 if parts.scheme.lower() == "https" else 80
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        try:
            addresses = resolve(host, port or default_port)
        except (OSError, UnicodeError) as exc:
            return UrlVerdict(False, f"cannot resolve {host}: {exc}", host)
    if not addresses:
        return UrlVerdict(False, f"{host} resolves to no address", host)
    for address in addresses:
        refusal = address_refusal(address)
        if refusal is not None:
            return UrlVerdict(False, f"{host} is refused: {refusal}", host, tuple(addresses))
    return UrlVerdict(True, "public address", host, tuple(addresses))


def check_url_offline(url: str, allow_hosts: Iterable[str] = ()) -> UrlVerdict:
    """The same decision without any DNS query: a host name that would need resolving passes here
    (the render process resolves and checks it again before every request)."""

    def no_dns(host: str, port: int) -> list[str]:
        return ["8.8.8.8"]  # stands for "some public address": the real check happens later

    return check_url(url, allow_hosts, no_dns)
