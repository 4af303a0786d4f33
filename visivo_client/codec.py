"""Decoding the wire's array payloads.

Arrays travel as base64 of little-endian float32 in C order ``(z, y, x)``; with
``compression: "qt-zlib"`` the bytes are Qt's ``qCompress`` layout (4-byte big-endian
uncompressed length, then a zlib stream). The ``/binary`` routes answer frames of
``int32 width, int32 height, int32 n_bytes`` (little endian) followed by float32 data.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

COMPRESSIONS = ("none", "qt-zlib")


def decode_array(text: str, compression: str | None = "none", dtype: str = "<f4",
                 shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Decode one base64 payload into a native-byte-order NumPy array.

    Parameters
    ----------
    text : str
        Base64 text of the payload.
    compression : {"none", "qt-zlib"}
        The answer's ``compression`` field.
    dtype : str
        Element type on the wire: ``"<f4"`` (arrays), ``"<f8"`` (VBT columns), ``"<i4"`` (mesh polygons).
    shape : tuple of int, optional
        Reshape to this C-order shape.

    Returns
    -------
    numpy.ndarray
        A writable array in native byte order (float32 stays float32).
    """
    raw = base64.b64decode(text)
    if (compression or "none") == "qt-zlib":
        (expected,) = struct.unpack(">I", raw[:4])
        raw = zlib.decompress(raw[4:])
        if len(raw) != expected:
            raise ValueError(f"qt-zlib payload: header says {expected} bytes, stream gave {len(raw)}")
    elif compression not in (None, "none"):
        raise ValueError(f"unknown compression {compression!r}")
    wire = np.dtype(dtype)
    array = np.frombuffer(raw, dtype=wire).astype(wire.newbyteorder("="))
    return array.reshape(shape) if shape is not None else array


def binary_frames(payload: bytes) -> list[np.ndarray]:
    """Split a ``/binary`` answer into its frames, each a ``(height, width)`` float32 array."""
    frames, offset = [], 0
    while offset < len(payload):
        if len(payload) - offset < 12:
            raise ValueError("truncated binary frame header")
        width, height, nbytes = struct.unpack_from("<iii", payload, offset)
        offset += 12
        if nbytes != 4 * width * height or offset + nbytes > len(payload):
            raise ValueError(f"bad binary frame: {width}x{height}, {nbytes} bytes")
        data = np.frombuffer(payload, dtype="<f4", count=width * height, offset=offset)
        frames.append(data.astype(np.float32).reshape(height, width))
        offset += nbytes
    return frames
