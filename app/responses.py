"""JSON rendering that never fails on NaN/Infinity (sent as ``null``) or NumPy scalars."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse


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

    def render(self, content: Any) -> bytes:
        return json.dumps(json_safe(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def ok(payload: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A success body: ``valid: true, error: ""`` plus the payload."""
    return {"valid": True, "error": "", **(payload or {}), **fields}


def failure(message: str) -> dict[str, Any]:
    return {"valid": False, "error": message}
