"""Which addresses a download may connect to: the public internet only, unless a network is named.

A URL list is untrusted input, and so is every redirect it leads to. On a cloud GPU box a URL
(or a redirect) to 169.254.169.254 would read the instance-metadata service, one to 10.x the
cluster's own services. The fetcher resolves each hop's host once, asks `AddressPolicy.refusal`
about every address it got, and connects to an address it checked, never to the name again,
so a second DNS answer cannot swap in another address. The check runs on resolved addresses,
so every spelling of a host (decimal `2130706433`, octal `0177.0.0.1`, hex `0x7f.1`, short
`127.1`, IPv4-mapped `[::ffff:127.0.0.1]`) is judged by the address it means.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# IANA's special-purpose ranges that a public image is never served from, by what they are.
REFUSED_NETWORKS = tuple(
    (ipaddress.ip_network(network), what)
    for network, what in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "reserved (documentation)"),
        ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved (benchmarking)"),
        ("198.51.100.0/24", "reserved (documentation)"),
        ("203.0.113.0/24", "reserved (documentation)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "reserved (local-use NAT64)"),
        ("100::/64", "reserved (discard-only)"),
        ("2001::/23", "reserved (IETF protocol assignments)"),
        ("2001:db8::/32", "reserved (documentation)"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private (site-local)"),
        ("ff00::/8", "multicast"),
    )
)
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_address(text: str) -> Address:
    """An address as getaddrinfo gives it; an IPv6 zone (`fe80::1%eth0`) is dropped."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def _views(address: Address) -> list[Address]:
    """The addresses a connection to `address` reaches: an IPv6 address that carries an IPv4 one (mapped,
    compatible, NAT64, 6to4) is judged by both, a mapped or compatible one by its IPv4 address alone."""
    if address.version == 4:
        return [address]
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in IPV4_COMPATIBLE and int(address) > 1:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    views = [address]
    if address in NAT64:
        views.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        views.append(address.sixtofour)
    return views


def _special(address: Address) -> str | None:
    for network, what in REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return what
    return None if address.is_global else "not globally routable"


class AddressPolicy:
    """Refuses every non-public address except those in `allow` (CIDR strings, such as `127.0.0.0/8` for a
    server on this machine, or `10.1.0.0/16` for a mirror inside the cluster)."""

    def __init__(self, allow: Iterable[str] = ()):
        self.allowed = tuple(ipaddress.ip_network(network, strict=False) for network in allow)

    def _allowed(self, address: Address) -> bool:
        return any(address.version == network.version and address in network for network in self.allowed)

    def refusal(self, address: Address) -> str | None:
        """Why a connection to `address` is refused (`"169.254.169.254 (link-local)"`), None when it is not."""
        views = _views(address)
        if self._allowed(address) or any(self._allowed(view) for view in views):
            return None
        for view in views:
            what = _special(view)
            if what is not None:
                shown = str(address) if view == address else f"{address} = {view}"
                return f"{shown} ({what})"
        return None


def network_problems(networks: Iterable[str], key: str) -> list[str]:
    """`key: problem` lines for entries of an allow list that are not networks."""
    problems = []
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            problems.append(f"{key}: {network!r} is not a network ({exc})")
    return problems
