"""The client's wire decoding, on payloads encoded by the server's own encoder."""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest

from app.services.encoding import binary_frame, encode_array
from visivo_client import binary_frames, decode_array


def test_round_trip_with_and_without_qt_zlib() -> None:
    cube = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    cube[1, 2, 3] = np.nan
    for compression in ("none", "qt-zlib"):
        decoded = decode_array(encode_array(cube, compression), compression, shape=(2, 3, 4))
        np.testing.assert_array_equal(decoded, cube)
        assert decoded.dtype == np.float32 and decoded.dtype.isnative and decoded.flags.writeable
    columns = np.array([1.5, -2.25e300])
    np.testing.assert_array_equal(decode_array(encode_array(columns, dtype="<f8"), dtype="<f8"), columns)


def test_corrupt_payloads_are_refused() -> None:
    raw = base64.b64decode(encode_array(np.ones(8, np.float32), "qt-zlib"))
    lying = base64.b64encode(struct.pack(">I", 999) + raw[4:]).decode()
    with pytest.raises(ValueError, match="header says 999"):
        decode_array(lying, "qt-zlib")
    with pytest.raises(ValueError, match="unknown compression"):
        decode_array(encode_array(np.ones(2)), "gzip")


def test_binary_frames() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((1, 5), -1.0, np.float32)
    frames = binary_frames(binary_frame(a) + binary_frame(b))
    assert [f.shape for f in frames] == [(2, 3), (1, 5)]
    np.testing.assert_array_equal(frames[0], a)
    np.testing.assert_array_equal(frames[1], b)
    with pytest.raises(ValueError, match="bad binary frame"):
        binary_frames(binary_frame(a)[:-4])
