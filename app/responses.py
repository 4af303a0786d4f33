"""JSON rendering that never fails on NaN/Infinity (sent as ``null``) or NumPy scalars."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask


def json_safe(value: Any) -> Any:
    """Recursively replace non-finite floats with ``None`` and NumPy scalars/arrays with Python values."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    return value


#: Placeholder prefix of a spliced base64 field (a per-process nonce: no client string can match it).
_SPLICE = f"@@visivo-b64-{secrets.token_hex(8)}-"
#: Base64 fields at least this long are spliced into the JSON text instead of being scanned by ``json``.
SPLICE_MIN_CHARS = 4096


def _lift_base64(value: Any, big: list[str]) -> Any:
    """``value`` with every long :class:`~app.services.encoding.Base64Text` replaced by a placeholder
    (appended to ``big`` in the order ``json.dumps`` writes them)."""
    from app.services.encoding import Base64Text  # noqa: PLC0415 - encoding imports nothing from here

    if isinstance(value, Base64Text) and len(value) >= SPLICE_MIN_CHARS:
        big.append(value)
        return f"{_SPLICE}{len(big) - 1}"
    if isinstance(value, dict):
        return {k: _lift_base64(v, big) for k, v in value.items()}
    if isinstance(value, list):
        return [_lift_base64(v, big) for v in value]
    return value


def dumps_bytes(safe: Any) -> bytes:
    """Compact UTF-8 JSON of a JSON-safe value; long base64 strings (array payloads, megabytes) are
    copied into the text as they are -- they need no escaping -- instead of going through ``json``'s
    string encoder, which scans and rebuilds every character."""
    big: list[str] = []
    lifted = _lift_base64(safe, big)
    text = json.dumps(lifted, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    if not big:
        return text.encode()
    parts: list[bytes] = []
    pos = 0
    for i, payload in enumerate(big):
        token = f'"{_SPLICE}{i}"'
        at = text.index(token, pos)
        parts += [text[pos:at].encode(), b'"', payload.encode("ascii"), b'"']
        pos = at + len(token)
    parts.append(text[pos:].encode())
    return b"".join(parts)


class SafeJSONResponse(JSONResponse):
    """``JSONResponse`` that renders NaN as ``null`` instead of raising (HTTP 500)."""

    def __init__(self, content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None,
                 media_type: str | None = None, background: BackgroundTask | None = None, *,
                 already_safe: bool = False) -> None:
        self._already_safe = already_safe
        super().__init__(content, status_code, headers, media_type, background)

    def render(self, content: Any) -> bytes:
        safe = content if getattr(self, "_already_safe", False) else json_safe(content)
        return dumps_bytes(safe)


def ok(payload: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A success body: ``valid: true, error: ""`` plus the payload."""
    return {"valid": True, "error": "", **(payload or {}), **fields}


def failure(message: str) -> dict[str, Any]:
    return {"valid": False, "error": message}
