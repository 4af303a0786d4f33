"""Binary answers of the spectral routes: VisIVO frames built from a JSON answer's base64 maps."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from app.services.encoding import binary_frame, decode_array


def frames_response(result: dict[str, Any], names: tuple[str, ...], shape: tuple[int, ...] | None) -> Response:
    """One frame per ``{name}_base64`` field present (int32 width, height, n_bytes; float32 data)."""
    present = [name for name in names if f"{name}_base64" in result]
    payload = b"".join(
        binary_frame(decode_array(result[f"{name}_base64"]).reshape(shape or (-1,))) for name in present
    )
    return Response(payload, media_type="application/octet-stream", headers={"X-Visivo-Frames": ",".join(present)})
