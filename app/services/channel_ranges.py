"""Channel lists written as inclusive ranges (for FITS HISTORY and messages)."""

from __future__ import annotations

from collections.abc import Iterable


def format_ranges(channels: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 4, 51, 52]`` -> ``"0..4,51..52"`` (sorted, unique; a lone channel as ``"7"``)."""
    chans = sorted({int(c) for c in channels})
    parts: list[str] = []
    i = 0
    while i < len(chans):
        j = i
        while j + 1 < len(chans) and chans[j + 1] == chans[j] + 1:
            j += 1
        parts.append(str(chans[i]) if i == j else f"{chans[i]}..{chans[j]}")
        i = j + 1
    return ",".join(parts)
