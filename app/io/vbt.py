"""VisIVO Binary Tables (VBT): ``X.bin.head`` (text) + ``X.bin`` (columns back to back).

Header, one item a line (VisIVO order)::

    float | double          scalar type (32- or 64-bit IEEE)
    N                       number of fields (columns)
    R [nx ny nz dx dy dz]   row count; a volume adds its grid and cell size on the same line
    little | big            byte order
    name_1 ... name_N       one field name a line

The volume geometry is also accepted split over lines (``R``, then ``nx ny nz``, then
``dx dy dz``). The binary is column-major: all R values of field 1, then field 2, ...; in a
volume the R = nx·ny·nz cells of a field run x fastest, then y, then z, so one field reshapes to a
C-order ``(nz, ny, nx)`` array. The binary is memory-mapped, never read whole, and its size
must match the header exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from app.errors import InvalidRequest

HEADER_NOT_FOUND = "VBT header file not found."
BINARY_NOT_FOUND = "VBT binary file not found."
_SCALARS = {"float": "f4", "float32": "f4", "single": "f4", "double": "f8", "float64": "f8"}
_ENDIANS = {"little": "<", "l": "<", "little_endian": "<", "littleendian": "<",
            "big": ">", "b": ">", "big_endian": ">", "bigendian": ">"}
_MAX_HEADER_BYTES = 1 << 20


@dataclass(frozen=True)
class VbtHeader:
    """The parsed ``.bin.head``.

    Attributes
    ----------
    scalar_type
        ``float`` or ``double``.
    endian
        ``little`` or ``big``.
    fields
        Field names, in file order.
    num_rows
        Rows per field (``nx·ny·nz`` for a volume).
    grid, spacing
        ``(nx, ny, nz)`` and ``(dx, dy, dz)`` of a volume, ``None`` for a point table.
    """

    scalar_type: str
    endian: str
    fields: tuple[str, ...]
    num_rows: int
    grid: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None

    @property
    def kind(self) -> str:
        return "volume" if self.grid is not None else "point"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(("<" if self.endian == "little" else ">") + _SCALARS[self.scalar_type])

    @property
    def expected_bytes(self) -> int:
        return len(self.fields) * self.num_rows * self.dtype.itemsize


def _numbers(tokens: Sequence[str], cast: type) -> list | None:
    try:
        return [cast(t) for t in tokens]
    except ValueError:
        return None


def parse_header(text: str) -> VbtHeader:
    """Parse a VBT header; errors are worded as VisIVO words them.

    Raises
    ------
    InvalidRequest
        ``VBT header too short``, ``Unknown VBT endian``, an unknown scalar type, or an
        inconsistent count or volume geometry.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 4:
        raise InvalidRequest("VBT header too short")
    scalar = lines[0].lower()
    if scalar not in _SCALARS:
        raise InvalidRequest(f"Unknown VBT scalar type '{lines[0]}' (expected float or double)")
    scalar = "float" if _SCALARS[scalar] == "f4" else "double"
    counts = _numbers([lines[1]], int)
    if counts is None or counts[0] < 1:
        raise InvalidRequest(f"Invalid VBT field count '{lines[1]}'")
    ncols = counts[0]
    geometry = lines[2].split()
    nxt = 3
    grid_line: list[str] = []
    spacing_line: list[str] = []
    if len(geometry) == 7:
        grid_line, spacing_line = geometry[1:4], geometry[4:7]
    elif len(geometry) == 4:
        grid_line = geometry[1:4]
        if nxt < len(lines) and len(lines[nxt].split()) == 3 and _numbers(lines[nxt].split(), float):
            spacing_line, nxt = lines[nxt].split(), nxt + 1
    elif len(geometry) == 1 and nxt + 1 < len(lines):
        grid = lines[nxt].split()
        spacing = lines[nxt + 1].split()
        if len(grid) == 3 and _numbers(grid, int) and len(spacing) == 3 and _numbers(spacing, float):
            grid_line, spacing_line, nxt = grid, spacing, nxt + 2
    elif len(geometry) != 1:
        raise InvalidRequest(f"Invalid VBT row-count line '{lines[2]}'")
    rows = _numbers(geometry[:1], int)
    if rows is None or rows[0] < 0:
        raise InvalidRequest(f"Invalid VBT row count '{geometry[0]}'")
    grid_t = spacing_t = None
    if grid_line:
        grid_v = _numbers(grid_line, int)
        spacing_v = _numbers(spacing_line, float) if spacing_line else [1.0, 1.0, 1.0]
        if grid_v is None or spacing_v is None or min(grid_v) < 1:
            raise InvalidRequest(f"Invalid VBT volume geometry on line '{lines[2]}'")
        if grid_v[0] * grid_v[1] * grid_v[2] != rows[0]:
            raise InvalidRequest(f"VBT volume grid {grid_v[0]}x{grid_v[1]}x{grid_v[2]} does not match "
                                 f"the row count {rows[0]}")
        grid_t, spacing_t = tuple(grid_v), tuple(spacing_v)
    if nxt >= len(lines):
        raise InvalidRequest("VBT header too short")
    endian = _ENDIANS.get(lines[nxt].lower())
    if endian is None:
        raise InvalidRequest("Unknown VBT endian")
    names = lines[nxt + 1: nxt + 1 + ncols]
    if len(names) < ncols:
        raise InvalidRequest("VBT header too short")
    if len(set(names)) != len(names):
        raise InvalidRequest("VBT header repeats a field name")
    return VbtHeader(scalar, "little" if endian == "<" else "big", tuple(names), rows[0], grid_t, spacing_t)


def pair_paths(raw: str) -> tuple[str, str]:
    """``(header, binary)`` client paths from either one (``X.bin.head`` ↔ ``X.bin``)."""
    text = raw.strip()
    if text.endswith(".head"):
        return text, text[: -len(".head")]
    return text + ".head", text


def read_header(path: Path) -> VbtHeader:
    """Read and parse a header file (at most 1 MiB)."""
    with path.open("rb") as handle:
        raw = handle.read(_MAX_HEADER_BYTES + 1)
    if len(raw) > _MAX_HEADER_BYTES:
        raise InvalidRequest("VBT header file is too large (over 1 MiB); is it a binary file?")
    try:
        return parse_header(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidRequest("VBT header file is not text; open the .bin.head file.") from None


class VbtTable:
    """A VBT opened for reading: its header and a read-only memmap of shape ``(fields, rows)``."""

    def __init__(self, header: VbtHeader, head_path: Path, bin_path: Path) -> None:
        self.header = header
        self.head_path = head_path
        self.bin_path = bin_path
        size = bin_path.stat().st_size
        expected = header.expected_bytes
        declared = (f"{len(header.fields)} fields x {header.num_rows} rows of {header.scalar_type} "
                    f"({expected} bytes)")
        if size < expected:
            raise InvalidRequest(f"VBT binary file is truncated: the header declares {declared}, "
                                 f"{bin_path.name} has {size} bytes.")
        if size > expected:
            raise InvalidRequest(f"VBT binary file is larger than its header declares: {declared}, "
                                 f"{bin_path.name} has {size} bytes. Check the scalar type and row count.")
        shape = (len(header.fields), header.num_rows)
        if expected == 0:
            self.data: np.ndarray = np.zeros(shape, dtype=header.dtype)
        else:
            self.data = np.memmap(bin_path, dtype=header.dtype, mode="r", shape=shape)

    def column(self, name: str) -> np.ndarray:
        """One field as a memmap view (file byte order)."""
        return self.data[self.header.fields.index(name)]

    def volume(self, name: str) -> np.ndarray:
        """One field of a volume as a ``(nz, ny, nx)`` view (x fastest, as VisIVO stores it)."""
        if self.header.grid is None:
            raise InvalidRequest("This VBT is a point table, not a volume.")
        nx, ny, nz = self.header.grid
        return self.column(name).reshape(nz, ny, nx)

    def to_arrow(self) -> pa.Table:
        """All fields as an Arrow table: zero-copy over the memmap when the file is native-endian."""
        arrays = []
        for i in range(len(self.header.fields)):
            values = self.data[i]
            if not values.dtype.isnative:
                values = values.astype(values.dtype.newbyteorder("="))  # byte-swapped copy
            arrays.append(pa.array(values))
        return pa.Table.from_arrays(arrays, names=list(self.header.fields))

    def close(self) -> None:
        """Drop the memmap (the mapping closes when the last view, e.g. an Arrow scan, is gone)."""
        self.data = np.zeros((len(self.header.fields), 0), dtype=self.header.dtype)


def write_vbt(bin_path: Path, columns: Mapping[str, np.ndarray], *, scalar_type: str = "float",
              endian: str = "little", grid: tuple[int, int, int] | None = None,
              spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Path:
    """Write a VBT pair (``bin_path`` and ``bin_path + '.head'``); returns the header path.

    For a volume, each column is a ``(nz, ny, nx)`` array (or flat, x fastest) and ``grid`` is
    ``(nx, ny, nz)``.
    """
    dtype = np.dtype(("<" if endian == "little" else ">") + _SCALARS[scalar_type])
    flat = [np.ascontiguousarray(v, dtype=dtype).reshape(-1) for v in columns.values()]
    rows = flat[0].size if flat else 0
    if any(v.size != rows for v in flat):
        raise ValueError("all VBT columns must have the same length")
    with bin_path.open("wb") as handle:
        for values in flat:
            handle.write(values.tobytes())
    count = str(rows)
    if grid is not None:
        count += " " + " ".join(str(int(n)) for n in grid) + " " + " ".join(repr(float(d)) for d in spacing)
    head = Path(str(bin_path) + ".head")
    head.write_text("\n".join([scalar_type, str(len(flat)), count, endian, *columns.keys()]) + "\n")
    return head
