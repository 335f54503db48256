"""Checking a `Callback-URL`: its shape, and that every address it resolves to is public.

The service POSTs to these URLs from inside its own network, so a URL that reaches
loopback, a private network or the cloud metadata address (169.254.169.254) would let
any client make the service call its neighbours (server-side request forgery). The
check runs at submission (a 422 before anything is queued) and again at each delivery,
since DNS may answer differently by then; the delivery connects to the addresses this
check returned, never to a second lookup's.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

CALLBACK_HEADER = "Callback-URL"
MAX_URL_LENGTH = 2048
SCHEMES = {"http": 80, "https": 443}
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]


class CallbackURLRefused(ValueError):
    """The URL may not be called back; the message says why, as "<problem>" after "Callback-URL"."""


@dataclass(frozen=True)
class CallbackTarget:
    """A checked URL: where to connect (the checked addresses, in the resolver's order)
    and what to ask for (the host name for the Host header and TLS, the path with query)."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to for a TCP connection, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_callback_url(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> CallbackTarget:
    """The target of `url`, or `CallbackURLRefused` saying what is wrong with it."""
    scheme, host, port, path = _parse(url)
    try:
        addresses = list(resolver(host, port))
    except (OSError, UnicodeError) as error:
        raise CallbackURLRefused(f"its host {host!r} does not resolve ({error})") from None
    if not addresses:
        raise CallbackURLRefused(f"its host {host!r} resolves to no address")
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                shown = host if host == address else f"{host!r} resolves to {address}, which"
                raise CallbackURLRefused(
                    f"{shown} is {problem}; callbacks go only to public addresses "
                    "(WEBHOOK_ALLOW_PRIVATE=1 allows others)"
                )
    return CallbackTarget(url, scheme, host, port, path, tuple(addresses))


def _parse(url: str) -> tuple[str, str, int, str]:
    if len(url) > MAX_URL_LENGTH:
        raise CallbackURLRefused(f"it is {len(url)} characters long; the limit is {MAX_URL_LENGTH}")
    if not url.isascii() or any(ord(character) <= 0x20 or ord(character) == 0x7F for character in url):
        raise CallbackURLRefused(
            "it must be ASCII without spaces or control characters (percent-encode them; "
            "an international domain name as punycode)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise CallbackURLRefused(f"it is not a valid URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise CallbackURLRefused(f"its scheme must be http or https, not {parts.scheme or 'missing'!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise CallbackURLRefused("it must not carry credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise CallbackURLRefused("it has no host")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return scheme, host, port or SCHEMES[scheme], path


def address_problem(address: str) -> str | None:
    """Why `address` is not a public unicast address, or None when it is."""
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"not an IP address ({address!r})"
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        problem = address_problem(str(embedded))
        return None if problem is None else f"an IPv6 form of {embedded}, {problem}"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (this includes the cloud metadata address 169.254.169.254)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if ip in UNIQUE_LOCAL:
        return "a unique-local (private) address"
    if ip.is_private:
        return "a private address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if not ip.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: mapped (::ffff:a.b.c.d), 6to4, NAT64."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None
