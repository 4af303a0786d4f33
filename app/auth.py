"""Token authentication: one token per server start, written to the token file (mode 0600)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fastapi import Request

from app.errors import Unauthorized

TOKEN_HEADER = "X-Visivo-Token"


def resolve_token(configured: str | None) -> str:
    """Return the configured token, or a fresh random URL-safe token (256 bits)."""
    return configured if configured else secrets.token_urlsafe(32)


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` with mode 0600, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


async def require_token(request: Request) -> None:
    """FastAPI dependency: compare ``X-Visivo-Token`` with the server token in constant time."""
    expected: str = request.app.state.runtime.token
    supplied = request.headers.get(TOKEN_HEADER)
    if supplied is None:
        raise Unauthorized(f"Missing {TOKEN_HEADER} header.")
    if not secrets.compare_digest(supplied.encode(), expected.encode()):
        raise Unauthorized("Invalid token.")
