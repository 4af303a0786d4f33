"""Files shared with SAMP peers: unguessable tokens, uploads and URL imports into the output directory.

A token is ``secrets.token_urlsafe(32)`` (256 bits) bound to one resolved file path for the life of
the server: registering the same file again returns its token, another file always gets another
token, and a token never serves anything but its file (re-confined to the roots when served).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from pathlib import Path

from app.errors import InvalidRequest

MAX_TOKENS = 10_000
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz")
VOTABLE_SUFFIXES = (".vot", ".votable", ".xml", ".vot.gz", ".xml.gz")
CONTENT_TYPES = (
    (FITS_SUFFIXES, "application/fits"),
    (VOTABLE_SUFFIXES, "application/x-votable+xml"),
    ((".csv",), "text/csv"),
    ((".tsv", ".tab"), "text/tab-separated-values"),
)


def content_type_for(name: str) -> str:
    """Content type served for a file name (FITS → ``application/fits``)."""
    lower = name.lower()
    for suffixes, content_type in CONTENT_TYPES:
        if lower.endswith(suffixes):
            return content_type
    return "application/octet-stream"


def is_fits_name(name: str) -> bool:
    return name.lower().endswith(FITS_SUFFIXES)


def is_votable_name(name: str) -> bool:
    return name.lower().endswith(VOTABLE_SUFFIXES)


def safe_filename(name: str | None, default: str = "upload.fits") -> str:
    """A client file name reduced to its last component and ``[A-Za-z0-9._-]`` (no leading dots)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _SAFE.sub("_", base).lstrip("._")[:120]
    return cleaned or default


def unique_destination(directory: Path, name: str) -> Path:
    """``directory/<random>_<name>`` (created directory); never overwrites another file."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{secrets.token_hex(6)}_{name}"


class FileTokens:
    """Bidirectional map token ↔ file path, bounded (least recently registered forgotten first)."""

    def __init__(self, capacity: int = MAX_TOKENS) -> None:
        self._by_token: OrderedDict[str, Path] = OrderedDict()
        self._by_path: dict[Path, str] = {}
        self._capacity = capacity
        self._lock = threading.Lock()

    def register(self, path: Path) -> str:
        """The token of ``path`` (a resolved path), minting one on first registration."""
        with self._lock:
            token = self._by_path.get(path)
            if token is not None:
                self._by_token.move_to_end(token)
                return token
            token = secrets.token_urlsafe(32)
            self._by_token[token] = path
            self._by_path[path] = token
            while len(self._by_token) > self._capacity:
                old_token, old_path = self._by_token.popitem(last=False)
                self._by_path.pop(old_path, None)
            return token

    def path_of(self, token: str) -> Path:
        """The file of ``token``; :class:`InvalidRequest` "not found" (HTTP 404) for an unknown token."""
        with self._lock:
            path = self._by_token.get(token)
        if path is None:
            raise InvalidRequest("File not found.", status_code=404)
        return path

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_token)
