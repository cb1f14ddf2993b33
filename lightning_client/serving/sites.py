"""Which sites and hosts the server answers: the keyless `Host` check, the realtime `Origin` check, link bases.

A server without API keys is closed by default: it answers only connections that arrive on a
loopback address (unless the operator allows more) and only requests whose `Host` names the
server itself, so a page on another site cannot reach it through DNS rebinding. Browsers send
`Origin` on every WebSocket; the realtime socket accepts only the server's own origin and the
operator's allow-list. Links to stored images never use the request's `Host`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from lightning_client.serving.errors import ApiError
from lightning_client.serving.settings import ServerSettings

__all__ = ["HostGuard", "base_url", "origin_allowed"]

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _beyond_loopback(host: str) -> bool:
    """Whether `host` is an IP address of another interface than loopback (a name is not judged here)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None  # ::ffff:127.0.0.1
    return not (address.is_loopback or (mapped is not None and mapped.is_loopback))


def _hostname(netloc: str) -> str:
    """The host of `host[:port]` (IPv6 in brackets), lower-cased, without the port."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:].partition("]")[0]
    return netloc.rpartition(":")[0] if netloc.count(":") == 1 else netloc


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _server_host(scope: Scope) -> str | None:
    """The local address the connection arrived at (None on a Unix socket or when unknown)."""
    server = scope.get("server")
    if not server or server[1] is None:
        return None
    return str(server[0]).lower()


def _own_names(scope: Scope, settings: ServerSettings) -> set[str]:
    names = set(_LOOPBACK_NAMES) | set(settings.allowed_hosts)
    local = _server_host(scope)
    if local is not None:
        names.add(local)
    if settings.public_url is not None:
        names.add((urlsplit(settings.public_url).hostname or "").lower())
    return names


def _refusal(scope: Scope, settings: ServerSettings) -> tuple[int, str] | None:
    """The status and reason with which this connection is refused (None: it is answered)."""
    if settings.api_keys and not settings.allowed_hosts:
        return None
    local = _server_host(scope)
    if not settings.api_keys and not settings.allow_unauthenticated and local is not None and _beyond_loopback(local):
        return 403, f"this server has no API keys and answers only on loopback, not on {local}"
    if "*" in settings.allowed_hosts:
        return None
    host = _header(scope, b"host")
    if host is None:
        return 400, "a Host header is required"
    if _hostname(host) not in _own_names(scope, settings):
        return 400, f"Host {host!r} is not this server; allowed: its own address, localhost, or allowed_hosts names"
    return None


class HostGuard:
    """ASGI middleware: a server without keys refuses other hosts (400) and non-loopback connections (403).

    It runs before routing, so nothing is parsed, authenticated or generated for a refused request.
    With keys it checks `Host` only when `allowed_hosts` is set.
    """

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = _refusal(scope, self.settings)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, reason = refusal
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
            return
        error = ApiError(status, reason, type="invalid_request_error", code="HostNotAllowed")
        await error.response()(scope, receive, send)


def _origin_of(url: str) -> str | None:
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None
    return f"{parsed.scheme}://{parsed.netloc}".lower()


def origin_allowed(headers: Mapping[str, str], settings: ServerSettings) -> bool:
    """Whether a WebSocket handshake with these headers may open the realtime socket.

    No `Origin` (a program, not a browser page) is allowed. A browser page is allowed when its
    origin is the server's own (its host and port are the request's `Host`, which a keyless
    server has checked), the `public_url`'s, or one of `allowed_origins`.
    """
    origin = headers.get("origin")
    if origin is None:
        return True
    normalized = _origin_of(origin.strip())
    if normalized is None:  # "null" (sandboxed frames, files) and anything else unparseable
        return False
    if normalized in settings.allowed_origins:
        return True
    if settings.public_url is not None and normalized == _origin_of(settings.public_url):
        return True
    host = headers.get("host", "").strip().lower()
    parsed = urlsplit(normalized)
    default = {"http": 80, "https": 443}[parsed.scheme]
    return bool(host) and _netloc(parsed.netloc, default) == _netloc(host, default)


def _netloc(netloc: str, default_port: int) -> tuple[str, int]:
    name = _hostname(netloc)
    _, _, port = netloc.rpartition("]" if netloc.startswith("[") else ":")
    port = port.lstrip(":")
    return name, int(port) if port.isdecimal() and port.isascii() else default_port


def base_url(scope: Mapping[str, Any], settings: ServerSettings) -> str:
    """The base of links to this server: `public_url`, else the address the connection arrived at."""
    if settings.public_url is not None:
        return settings.public_url
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    server = scope.get("server")
    if not server or server[1] is None:
        return f"{scheme}://localhost"
    host, port = str(server[0]), int(server[1])
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"
