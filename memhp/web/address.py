"""The one listen-address parser of both programs (``--web.listen-address``)."""

from __future__ import annotations

import ipaddress
import socket


class ListenAddressError(ValueError):
    pass


def split_host_port(address: str, flag: str = "--web.listen-address") -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` -> (host, port); an empty host means every interface."""
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
    else:
        host, sep, port = address.rpartition(":")
    # isascii: str.isdigit() also accepts '²' and other digits int() refuses.
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535 or "]" in host:
        raise ListenAddressError(f"{flag} must be HOST:PORT (host:port, [v6]:port or :port), got {address!r}")
    return host, int(port)


def resolve(host: str, port: int) -> list[tuple[int, tuple]]:
    """(family, sockaddr) of every address ``host`` names, for a listening socket."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise ListenAddressError(f"cannot resolve listen host {host!r}: {e}") from None
    return [(family, sockaddr) for family, _, _, _, sockaddr in infos]


def is_loopback_host(host: str) -> bool:
    """True only when every address the host resolves to is a loopback address."""
    if not host:
        return False  # all interfaces
    addrs = resolve(host, 0)
    return bool(addrs) and all(ipaddress.ip_address(sa[0].split("%")[0]).is_loopback for _, sa in addrs)


def bind_address(address: str) -> tuple[int, tuple]:
    """(family, sockaddr) to bind for a listen address; an empty host is every IPv4 interface."""
    host, port = split_host_port(address)
    if not host:
        return socket.AF_INET, ("", port)
    family, sockaddr = resolve(host, port)[0]
    return family, sockaddr[:2]
