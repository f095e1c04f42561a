"""Outbound requests to URLs chosen by callers (remote inputs, webhooks) without reaching our own network.

A caller-supplied URL could point ComfyGate at loopback, the LAN or a cloud metadata endpoint (SSRF).
The check therefore runs on what DNS answers *now*, on every address it gives, and the connection is
then made to the address that was checked: the URL's host is replaced by that IP while the ``Host``
header and the TLS SNI/certificate check keep the name. A second, different DNS answer (rebinding)
never gets used. Redirects are not followed by httpx; callers that follow them check every hop here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import httpx

from core.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DNS_TIMEOUT = 10.0


class UnsafeURL(InvalidRequest):
    """The URL is malformed, not http(s), does not resolve, or resolves to a non-public address."""

    status_code = 422
    code = "url_not_allowed"


# IPv6 ranges whose last 32 bits are an IPv4 address that a translator reaches: NAT64's well-known
# prefix (RFC 6052) and SIIT's IPv4-translated addresses (RFC 2765). Public only if that IPv4 is.
_EMBEDS_IPV4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::ffff:0:0:0/96"))
# Never public, whatever they embed: NAT64 local-use (RFC 8215: a site's own translator, into its own
# network) and the deprecated IPv4-compatible addresses (::a.b.c.d, RFC 4291).
_NEVER_PUBLIC = (ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("::/96"))


def is_public(ip: IPAddress) -> bool:
    """Globally routable unicast only: no loopback, private, link-local, CGNAT, multicast, reserved,
    and no IPv6 form that carries such an IPv4 address (mapped, 6to4, Teredo, NAT64, SIIT, compatible)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _NEVER_PUBLIC):
            return False
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and any(ip in net for net in _EMBEDS_IPV4):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    return ip.is_global and not ip.is_multicast


def parse_http_url(url: str, what: str = "URL") -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeURL(f"{what} {url!r} is not a valid URL ({exc})") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UnsafeURL(f"{what} {url!r} must be an absolute http:// or https:// URL")
    return parsed


async def resolve_checked(url: str | httpx.URL, *, allow_private: bool, what: str = "URL") -> tuple[httpx.URL, str]:
    """Parse, resolve and check ``url``; return it with the one address to connect to."""
    parsed = url if isinstance(url, httpx.URL) else parse_http_url(url, what)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), DNS_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            raise UnsafeURL(f"{what}: cannot resolve host {host!r} ({exc})") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    if not addresses:
        raise UnsafeURL(f"{what}: host {host!r} has no address")
    if not allow_private:
        refused = [str(ip) for ip in addresses if not is_public(ip)]
        if refused:
            raise UnsafeURL(
                f"{what}: host {host!r} resolves to non-public address {', '.join(refused)}; "
                "set COMFYUI_ALLOW_PRIVATE_URLS=true to allow it",
                host=host,
            )
    return parsed, str(addresses[0])


async def guarded_send(
    http: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    *,
    allow_private: bool,
    timeout: float,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    what: str = "URL",
) -> httpx.Response:
    """Send one request to the checked address (streamed; the caller closes it). Never follows redirects."""
    parsed, ip = await resolve_checked(url, allow_private=allow_private, what=what)
    extensions: dict[str, Any] = {}
    if parsed.scheme == "https":
        extensions["sni_hostname"] = parsed.host
    request = http.build_request(
        method,
        parsed.copy_with(host=ip),
        headers={**(headers or {}), "Host": parsed.netloc.decode("ascii")},
        content=content,
        timeout=timeout,
        extensions=extensions,
    )
    return await http.send(request, stream=True, follow_redirects=False)
