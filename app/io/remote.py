"""Bounded HTTP(S) downloads: scheme check on every hop, timeouts, a size cap and a total deadline.

Used by the HiPS tile proxy and the SAMP ``import-url`` route. Redirects are followed by hand
(at most ``max_redirects``) so that a redirect to another scheme (``file:``, ``ftp:``, ...) is
refused instead of followed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

ALLOWED_SCHEMES = ("http", "https")
CHUNK = 64 * 1024


class RemoteError(Exception):
    """A remote resource could not be fetched.

    Parameters
    ----------
    message
        Human-readable reason (safe to show to the client).
    status
        The remote HTTP status when the server answered, else ``None``.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class TooLarge(RemoteError):
    """The remote resource is larger than the cap."""


@dataclass(frozen=True)
class RemoteResponse:
    """What a bounded GET returned: the final URL, its content type and either the bytes or the size."""

    url: str
    content_type: str
    content: bytes | None
    size: int


def check_http_url(url: str) -> str:
    """Return ``url`` stripped if it is an absolute http(s) URL with a host; raise :class:`RemoteError` otherwise."""
    text = (url or "").strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise RemoteError(f"Only http and https URLs are allowed (got scheme '{parts.scheme or 'none'}').")
    if not parts.hostname:
        raise RemoteError("The URL has no host.")
    return text


def make_client(timeout: float, *, trust_env: bool = True) -> httpx.Client:
    """A thread-safe :class:`httpx.Client` that never follows redirects by itself."""
    return httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=trust_env)


@contextmanager
def _open(
    client: httpx.Client, url: str, *, max_bytes: int, max_redirects: int
) -> Iterator[httpx.Response]:
    current = check_http_url(url)
    for _ in range(max_redirects + 1):
        request = client.build_request("GET", current)
        try:
            response = client.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException:
            raise RemoteError(f"Timed out fetching {current}") from None
        except httpx.HTTPError as exc:
            raise RemoteError(f"Cannot reach {current}: {type(exc).__name__}") from None
        try:
            if response.is_redirect:
                location = response.headers.get("location", "")
                current = check_http_url(urljoin(current, location))
                continue
            if response.status_code == 404:
                raise RemoteError(f"Not found: {current}", status=404)
            if response.status_code >= 400:
                raise RemoteError(f"{current} answered HTTP {response.status_code}", status=response.status_code)
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise TooLarge(f"{current} is {int(declared)} bytes, over the {max_bytes}-byte limit")
            yield response
            return
        finally:
            response.close()
    raise RemoteError(f"Too many redirects fetching {url}")


def _chunks(response: httpx.Response, *, max_bytes: int, deadline: float) -> Iterator[bytes]:
    total = 0
    try:
        for chunk in response.iter_bytes(CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise TooLarge(f"{response.url} is over the {max_bytes}-byte limit")
            if time.monotonic() > deadline:
                raise RemoteError(f"Timed out reading {response.url}")
            yield chunk
    except httpx.TimeoutException:
        raise RemoteError(f"Timed out reading {response.url}") from None
    except httpx.HTTPError as exc:
        raise RemoteError(f"Transfer from {response.url} failed: {type(exc).__name__}") from None


def fetch_bytes(
    client: httpx.Client, url: str, *, max_bytes: int, total_timeout: float, max_redirects: int = 5
) -> RemoteResponse:
    """GET ``url`` into memory.

    Parameters
    ----------
    client
        From :func:`make_client` (its timeout applies to each connect/read).
    url
        Absolute http(s) URL.
    max_bytes
        Cap on the body; a larger body raises :class:`TooLarge`.
    total_timeout
        Seconds for the whole transfer, redirects included.
    max_redirects
        Redirect hops allowed; each must stay http(s).
    """
    deadline = time.monotonic() + total_timeout
    with _open(client, url, max_bytes=max_bytes, max_redirects=max_redirects) as response:
        body = b"".join(_chunks(response, max_bytes=max_bytes, deadline=deadline))
        return RemoteResponse(str(response.url), response.headers.get("content-type", ""), body, len(body))


def download_to(
    client: httpx.Client,
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    total_timeout: float,
    max_redirects: int = 5,
) -> RemoteResponse:
    """GET ``url`` into ``dest`` atomically (temporary file, then rename); nothing is left behind on failure."""
    deadline = time.monotonic() + total_timeout
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    size = 0
    try:
        with _open(client, url, max_bytes=max_bytes, max_redirects=max_redirects) as response, tmp.open("wb") as out:
            for chunk in _chunks(response, max_bytes=max_bytes, deadline=deadline):
                out.write(chunk)
                size += len(chunk)
            final_url, content_type = str(response.url), response.headers.get("content-type", "")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return RemoteResponse(final_url, content_type, None, size)
