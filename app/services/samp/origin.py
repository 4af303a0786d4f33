"""Strict checks of the ``Origin`` and ``Host`` headers of SAMP requests (loopback only).

A browser page may send requests to ``127.0.0.1``; only pages served from this machine
(``http(s)://localhost``, ``127.x.y.z``, ``[::1]``) may use the SAMP routes. The header is
parsed with :func:`urllib.parse.urlsplit` and accepted only when the whole value is
``scheme://host[:port]`` with scheme http or https, no user information (``user@``), no
backslash, path, query or fragment, a valid port, and a host that is exactly ``localhost`` or a
loopback IPv4/IPv6 address. So ``http://evil.com\\@localhost`` (which some parsers read as host
``localhost``) and ``http://localhost@evil.com`` are both refused.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_HOST_CHARS = re.compile(r"^[A-Za-z0-9.\-]+$")


def is_exact_loopback(host: str | None) -> bool:
    """Whether ``host`` is exactly ``localhost`` or a loopback IPv4/IPv6 address (brackets allowed)."""
    name = (host or "").strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    name = name.lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _authority_is_loopback(netloc: str) -> bool:
    """``host[:port]`` (IPv6 in brackets) naming a loopback host, with nothing else in it."""
    if not netloc or any(c in netloc for c in "@\\/?#%") or any(c.isspace() for c in netloc):
        return False
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port  # ValueError for a port that is not a number in 0..65535
    except ValueError:
        return False
    host = parts.hostname or ""
    if port is None and netloc.endswith(":"):
        return False
    if not netloc.startswith("[") and not _HOST_CHARS.match(host):
        return False
    return is_exact_loopback(host)


def is_loopback_origin(origin: str) -> bool:
    """Whether an ``Origin`` header value is an http(s) origin on this machine (see the module doc)."""
    value = origin.strip()
    if any(c in value for c in "\\@") or any(c.isspace() or ord(c) < 32 for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query or parts.fragment:
        return False
    if parts.username is not None or parts.password is not None:
        return False
    return _authority_is_loopback(parts.netloc)


def is_loopback_host_header(host: str | None) -> bool:
    """Whether a ``Host`` header value is ``host[:port]`` with a loopback host (DNS-rebinding defence)."""
    return _authority_is_loopback((host or "").strip())
