"""Host values and the target allow-list: what a label may name, and which of those the relay may reach.

A *host* here is exactly one of: a DNS host name (letters, digits and ``-``
in dot-separated labels of 1 to 63 characters, at most 253 in all, no
trailing dot, whose last label is not numeric), a dotted-quad IPv4 address
(no leading zeros, no short forms such as ``127.1``), or a bracketed IPv6
address without a zone (``%``).  Everything else is refused: the C
resolver reads ``127.1`` or ``0x7f.1`` as addresses, which would slip past
name rules and address rules alike.

The allow-list (``--target.allow``) holds host-name suffixes
(``.nodes.example.com`` matches ``n1.nodes.example.com``, not
``nodes.example.com`` nor ``evilnodes.example.com``), exact host names
(``ctrl.example.com``) and CIDRs (``10.0.0.0/8``, ``fd00::/8``; a bare
address is a /32 or /128).  A host *name* matches only name rules; an IP
*literal* matches only CIDR rules (an IPv4-mapped IPv6 address as its IPv4
address).  A name allowed by a suffix is connected to whatever DNS gives for
it: DNS is trusted as far as the names go (docs/relay.md, "Threat model").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.ASCII)
_NUMERIC_LABEL = re.compile(r"(?:[0-9]+|0[xX][0-9A-Fa-f]*)", re.ASCII)
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}", re.ASCII)
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]+", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
MAX_HOST_NAME = 253


class BadHost(ValueError):
    """Not a host name, an IPv4 address or a bracketed IPv6 address."""


def check_host(text: str) -> str:
    """``text`` if it is exactly one host (name, IPv4, or ``[IPv6]``); BadHost otherwise."""
    if text.startswith("[") and text.endswith("]"):
        _ipv6(text[1:-1])
        return text
    if _IPV4.fullmatch(text):
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise BadHost(f"{text!r} is not an IPv4 address") from None
        return text
    if len(text) > MAX_HOST_NAME or not _HOST_NAME.fullmatch(text):
        raise BadHost(f"{text[:80]!r} is not a host name, an IPv4 address or a bracketed IPv6 address")
    if _NUMERIC_LABEL.fullmatch(text.rsplit(".", 1)[-1]):
        raise BadHost(f"{text[:80]!r} looks like an IPv4 address but is not a dotted quad")
    return text


def _ipv6(text: str) -> ipaddress.IPv6Address:
    # ipaddress accepts a "%zone" suffix: the charset check keeps it (and anything else) out.
    if not _IPV6_CHARS.fullmatch(text):
        raise BadHost(f"[{text[:80]}] is not an IPv6 address")
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise BadHost(f"[{text[:80]}] is not an IPv6 address") from None


def host_of(value: str) -> str:
    """The host of a ``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` value (a scrape target's
    ``instance``); BadHost for anything else."""
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[: end + 1], value[end + 1 :]
    else:
        host, sep, port = value.partition(":")
        rest = sep + port
    if rest and not (rest.startswith(":") and _PORT.fullmatch(rest[1:])):
        raise BadHost(f"{value[:80]!r} is not host, host:port, [v6] or [v6]:port")
    return check_host(host)


def ip_literal(host: str) -> IPAddress | None:
    """The address of an IP-literal host (``[v6]`` bracketed or not), None for a host name."""
    bare = host[1:-1] if host.startswith("[") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def canonical(host: str) -> str:
    """One spelling per host: lower case, no brackets, addresses in their compressed form.
    What a per-node token is derived from (tokens.py)."""
    ip = ip_literal(host)
    return str(ip) if ip is not None else host.lower()


@dataclass(frozen=True)
class AllowList:
    suffixes: tuple[str, ...] = ()  # ".nodes.example.com", lower case
    names: frozenset[str] = field(default_factory=frozenset)
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> AllowList:
        """From ``--target.allow`` values (each may be a comma list); ValueError with the bad item."""
        suffixes: list[str] = []
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for item in (i.strip() for raw in items for i in raw.split(",")):
            if not item:
                continue
            if "/" in item or ip_literal(item) is not None:
                networks.append(_network(item))
            elif item.startswith("."):
                suffixes.append("." + _name_rule(item[1:]))
            else:
                names.add(_name_rule(item))
        return cls(tuple(suffixes), frozenset(names), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.suffixes or self.names or self.networks)

    def allows(self, host: str) -> bool:
        """Whether the relay may send to ``host`` (as check_host returns it)."""
        ip = ip_literal(host)
        if ip is not None:
            return any(ip in net for net in self.networks)
        name = host.lower()
        return name in self.names or any(name.endswith(s) for s in self.suffixes)

    def describe(self) -> str:
        return ", ".join([*self.suffixes, *sorted(self.names), *map(str, self.networks)])


def _network(item: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(item.strip("[]"), strict=True)
    except ValueError as e:
        raise ValueError(f"--target.allow {item!r}: not a CIDR ({e})") from None


def _name_rule(name: str) -> str:
    try:
        return check_host(name).lower()
    except BadHost:
        raise ValueError(f"--target.allow {name!r}: give a host name, a suffix starting with '.', or a CIDR") from None
