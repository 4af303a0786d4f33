"""JSON rendering that never fails on NaN/Infinity (sent as ``null``) or NumPy scalars."""

from __future__ import annotations

import json
import math
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


class SafeJSONResponse(JSONResponse):
    """``JSONResponse`` that renders NaN as ``null`` instead of raising (HTTP 500)."""

    def __init__(self, content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None,
                 media_type: str | None = None, background: BackgroundTask | None = None, *,
                 already_safe: bool = False) -> None:
        self._already_safe = already_safe
        super().__init__(content, status_code, headers, media_type, background)

    def render(self, content: Any) -> bytes:
        safe = content if getattr(self, "_already_safe", False) else json_safe(content)
        return json.dumps(safe, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def ok(payload: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A success body: ``valid: true, error: ""`` plus the payload."""
    return {"valid": True, "error": "", **(payload or {}), **fields}


def failure(message: str) -> dict[str, Any]:
    return {"valid": False, "error": message}
