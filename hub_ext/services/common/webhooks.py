"""The SSRF guard of the services' outgoing webhooks: public addresses only, pinned.

A webhook URL is a user's, called by a hub service inside the hub's network;
without a check a user could make the service poke the hub's own API, a
database, or a cloud metadata endpoint. :func:`resolve_public` resolves the
host once and refuses any answer that is not a public address;
:class:`PinnedResolver` then makes the HTTP client connect to exactly the
addresses checked, so a DNS answer that changes between the check and the
connection (DNS rebinding) cannot slip a private address in. TLS still
verifies the certificate against the URL's host name.

Used through :mod:`.notify`, the services' shared sending of notifications.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from tornado.netutil import Resolver

__all__ = ["PinnedResolver", "resolve_public"]


async def resolve_public(url: str) -> list[tuple[int, tuple]]:
    """Resolve ``url``'s host once; return its addresses, or raise ValueError saying why not.

    Every address must be public (``is_global``): one private answer among public ones
    refuses the URL, since a client may connect to any of them.

    Returns
    -------
    list of (family, sockaddr)
        What :class:`PinnedResolver` connects to.
    """
    host = urlsplit(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ValueError(
            f"the host {host!r} does not resolve from the service's machine: check the name"
        ) from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global:
            raise ValueError(
                f"{host} resolves to {address}, which is not a public address "
                "(an admin may allow private addresses: Notifier.allow_private_webhooks "
                "for jobs, AlertNotifier.allow_private_targets for alerts)"
            )
    return [(info[0], info[4]) for info in infos]


class PinnedResolver(Resolver):
    """A tornado resolver that answers every name with addresses resolved and checked before.

    Parameters
    ----------
    addresses : list of (family, sockaddr)
        From :func:`resolve_public`; the port in each is replaced by the request's.
    """

    def initialize(self, addresses: list[tuple[int, tuple]]) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int, family: int = socket.AF_UNSPEC):
        return [
            (fam, (sockaddr[0], port, *sockaddr[2:]))
            for fam, sockaddr in self.addresses
            if family in (socket.AF_UNSPEC, fam)
        ]
