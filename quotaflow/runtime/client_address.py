"""The client's address behind the proxies the operator trusts (`Settings.trusted_proxies`).

On Knative every request reaches admit from its queue-proxy (127.0.0.1), often through the
activator and the ingress too: the peer address is a proxy's, and a throttle by peer address
(failed logins, door/auth.py) would throttle every client as one. When the peer is a trusted
proxy, `X-Forwarded-For` is read from the right, skipping trusted addresses; the first address
that is not trusted is the client (nginx's `real_ip_recursive`). A client may write anything at
the left of that header: only what trusted proxies appended is believed, so the number of hops
may vary (the activator is in the path only while a revision scales)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(text: str) -> tuple[Network, ...]:
    """The networks of a comma-separated list of CIDRs (`10.0.0.0/8,::1/128`); ValueError
    naming the first that is not one."""
    found: list[Network] = []
    for cidr in filter(None, (c.strip() for c in text.split(","))):
        try:
            found.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP network (CIDR)") from None
    return tuple(found)


def client_address(peer: str, forwarded_for: str, trusted: Iterable[Network]) -> str:
    """The client's address: `peer`, or when it is trusted the rightmost untrusted address of
    `forwarded_for` (the leftmost when every one is trusted)."""
    trusted = tuple(trusted)
    chain = [peer, *reversed([a.strip() for a in forwarded_for.split(",") if a.strip()])]
    for address in chain:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # no address: nothing to its left can be believed
            return address
        if not any(ip in network for network in trusted):
            return address
    return chain[-1]


class TrustedProxies:
    """WSGI middleware: `REMOTE_ADDR` becomes the client's address behind `trusted` proxies."""

    def __init__(self, app: WSGIApplication, trusted: Iterable[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self.trusted:
            environ["REMOTE_ADDR"] = client_address(
                environ.get("REMOTE_ADDR", ""), environ.get("HTTP_X_FORWARDED_FOR", ""),
                self.trusted)
        return self.app(environ, start_response)
