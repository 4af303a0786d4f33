"""Array payload encoding of the wire: base64 of little-endian float32, C order, optional ``qt-zlib``.

``qt-zlib`` is Qt's ``qCompress`` layout: a 4-byte big-endian uncompressed length followed
by a zlib stream. One ``compression`` value governs every base64 field of a response.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

from app.errors import InvalidRequest

COMPRESSIONS = ("none", "qt-zlib")


class Base64Text(str):
    """A ``str`` of base64 characters only (``A-Z a-z 0-9 + / =``): JSON writes it as is, so
    :class:`app.responses.SafeJSONResponse` splices it into the answer without scanning it."""

    __slots__ = ()


def check_compression(value: str | None) -> str:
    """Normalise a requested compression (``None``/``""`` → ``none``)."""
    name = (value or "none").strip().lower()
    if name not in COMPRESSIONS:
        raise InvalidRequest(f"Unknown compression '{value}'; use one of {', '.join(COMPRESSIONS)}.")
    return name


def encode_array(array: np.ndarray, compression: str = "none", dtype: str = "<f4") -> Base64Text:
    """Base64 of the array's bytes as ``dtype`` (default little-endian float32), C order."""
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype))
    raw = memoryview(data).cast("B") if data.size else b""  # the array's buffer, not a bytes copy
    if compression == "qt-zlib":
        raw = struct.pack(">I", len(raw)) + zlib.compress(raw, 1)
    return Base64Text(base64.b64encode(raw).decode("ascii"))


def decode_array(text: str, compression: str = "none", dtype: str = "<f4") -> np.ndarray:
    """Inverse of :func:`encode_array` (flat array)."""
    raw = base64.b64decode(text)
    if compression == "qt-zlib":
        raw = zlib.decompress(raw[4:])
    return np.frombuffer(raw, dtype=np.dtype(dtype))


def binary_frame(array: np.ndarray) -> bytes:
    """A VisIVO binary frame: int32 width, int32 height, int32 n_bytes (little endian), then float32 data."""
    data = np.ascontiguousarray(array, dtype="<f4")
    height, width = (1, data.size) if data.ndim == 1 else data.shape[-2:]
    payload = data.tobytes()
    return struct.pack("<iii", int(width), int(height), len(payload)) + payload
