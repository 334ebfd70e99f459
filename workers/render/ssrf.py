"""The SSRF guard: may the render process fetch this URL? A pure decision over the URL and the
addresses its host resolves to (the resolver is injected, so tests decide without connecting).

Refused: schemes other than http and https; URLs whose host different parsers could read
differently (backslashes, whitespace, control characters); hosts that resolve to loopback, private,
link-local, multicast, reserved, unspecified or shared addresses, to a cloud metadata service, or to
an IPv6 address that embeds such an IPv4 address (mapped, 6to4, NAT64). Every resolved address must
pass, so a name with one public and one private address is refused; the verdict carries the
addresses it checked, so the caller can connect to exactly those (`workers.render.fetch` does).
Hosts on the allowlist are let through unresolved (the tests allow 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 8192
METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
        ipaddress.ip_address("192.0.0.192"),
    }
)
SHARED_NETWORK = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
NAT64_NETWORKS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


@dataclass(frozen=True)
class UrlVerdict:
    """The decision: `allowed`, why (`reason`, written for the person who sent the URL), the host,
    its port, and the addresses checked (empty for an allowlisted host, which is not resolved)."""

    allowed: bool
    reason: str
    host: str = ""
    addresses: tuple[str, ...] = ()
    port: int | None = None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (one DNS query; the caller checks them all)."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)})


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in network for network in NAT64_NETWORKS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(address: str) -> str | None:
    """Why an address may not be fetched, or None when it may."""
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = address_refusal(str(embedded))
            if inner is not None:
                return f"{ip} embeds {inner}"
            ip = embedded
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    checks = (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("shared (carrier-grade NAT)", ip in SHARED_NETWORK),
        ("not globally routable", not ip.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"{ip} is not a public address ({name})"
    return None


def normalized_host(host: str) -> str:
    """Lower case, without IPv6 brackets or a trailing dot: the form hosts are compared in."""
    return host.strip().lower().strip("[]").rstrip(".")


def normalized_allowlist(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(normalized_host(host) for host in hosts if host.strip())


def ip_literal(host: str) -> IPAddress | None:
    """The address a host names without DNS: an IP literal, or one of the legacy IPv4 spellings that
    browsers and `inet_aton` accept (`2130706433`, `0x7f.1`, `127.1`)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(ch in "0123456789abcdefx." for ch in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _url_shape_refusal(url: object) -> str | None:
    if not isinstance(url, str) or not url:
        return "the URL must be a non-empty string"
    if len(url) > MAX_URL_CHARS:
        return f"the URL is longer than {MAX_URL_CHARS} characters"
    if "\\" in url:
        return "the URL contains a backslash; write it with forward slashes (or percent-encode it)"
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        return "the URL contains whitespace or control characters; percent-encode them"
    return None


def check_url(
    url: str, allow_hosts: Iterable[str] = (), resolve: Resolver | None = system_resolver
) -> UrlVerdict:
    """Decide whether `url` may be fetched. Resolves its host once with `resolve` (unless it is an
    IP literal or allowlisted) and checks every address it gets. With `resolve=None` a host name
    that would need DNS passes unresolved (`check_url_offline`)."""
    shape = _url_shape_refusal(url)
    if shape is not None:
        return UrlVerdict(False, shape)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return UrlVerdict(False, f"the URL cannot be parsed: {exc}")
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        return UrlVerdict(False, f"only http and https URLs may be rendered (got {scheme or 'no'} scheme)")
    host = normalized_host(parts.hostname or "")
    if not host:
        return UrlVerdict(False, "the URL has no host")
    port = port or (443 if scheme == "https" else 80)
    if host in normalized_allowlist(allow_hosts):
        return UrlVerdict(True, "the host is on the allowlist", host, (), port)
    if host in METADATA_HOSTS or host.endswith(".internal"):
        return UrlVerdict(False, f"{host} is a cloud metadata or internal host name", host, (), port)
    if host == "localhost" or host.endswith(".localhost"):
        return UrlVerdict(False, f"{host} is a loopback host name", host, (), port)
    literal = ip_literal(host)
    if literal is not None:
        addresses = [str(literal)]
    elif resolve is None:
        return UrlVerdict(True, "not resolved yet", host, (), port)
    else:
        try:
            addresses = list(resolve(host, port))
        except (OSError, UnicodeError) as exc:
            return UrlVerdict(False, f"cannot resolve {host}: {exc}", host, (), port)
    if not addresses:
        return UrlVerdict(False, f"{host} resolves to no address", host, (), port)
    for address in addresses:
        refusal = address_refusal(address)
        if refusal is not None:
            return UrlVerdict(False, f"{host} is refused: {refusal}", host, tuple(addresses), port)
    return UrlVerdict(True, "public address", host, tuple(addresses), port)


def check_url_offline(url: str, allow_hosts: Iterable[str] = ()) -> UrlVerdict:
    """The same decision without any DNS query: a host name that would need resolving passes here
    (the render process resolves and checks it again before every request it makes)."""
    return check_url(url, allow_hosts, None)
