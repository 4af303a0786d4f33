"""Confinement of client-supplied paths to the configured data roots.

A path is accepted when, after resolving ``..`` and every symbolic link, it lies
inside one of the roots. Relative paths are taken relative to the first root.
Every refusal looks exactly like "not found", so a client cannot probe the
file system outside the roots. Dot-entries (hidden files) are refused too.

``~`` is never expanded: a client path such as ``~root/x.fits`` or ``~/x.fits`` is an
ordinary relative name (a directory literally called ``~root`` under the first root),
so it answers "not found" like any other missing file whether or not that account
exists (no local-account oracle, and never the server's home directory).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from app.errors import InvalidRequest

FILE_NOT_FOUND = "File not found."
DIRECTORY_NOT_FOUND = "Directory not found."


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _absolute(text: str, roots: Sequence[Path]) -> Path:
    """The client's text as an absolute path (relative to the first root); leading ``//`` collapsed.

    ``~`` is never expanded: ``~user/x`` is a relative name like any other.
    """
    candidate = Path(re.sub(r"^/{2,}", "/", text)) if text else roots[0]
    return candidate if candidate.is_absolute() else roots[0] / candidate


def is_above_roots(raw: str | None, roots: Sequence[Path]) -> bool:
    """True when ``raw`` names ``/`` or a directory that strictly contains a root but is inside none.

    Decided on the lexically normalised path (``..`` folded, no file-system access), so a
    client learns nothing beyond the roots' own absolute paths.
    """
    text = (raw or "").strip()
    if not text or "\x00" in text:
        return False
    candidate = Path(os.path.normpath(_absolute(text, roots)))
    if any(_inside(candidate, r) for r in roots):
        return False
    return any(candidate in r.parents for r in roots)


def confine(raw: str | None, roots: Sequence[Path], *, want_dir: bool = False) -> Path:
    """Resolve a client path inside ``roots`` or raise :class:`InvalidRequest` ("not found").

    Parameters
    ----------
    raw
        The client's path: absolute, or relative to the first root; empty means the first root.
    roots
        Resolved data roots.
    want_dir
        Require a directory (else a regular file).
    """
    missing = DIRECTORY_NOT_FOUND if want_dir else FILE_NOT_FOUND
    text = (raw or "").strip()
    if "\x00" in text:
        raise InvalidRequest(missing)
    try:
        resolved = _absolute(text, roots).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        raise InvalidRequest(missing) from None
    root = next((r for r in roots if _inside(resolved, r)), None)
    if root is None:
        raise InvalidRequest(missing)
    if any(part.startswith(".") for part in resolved.relative_to(root).parts):
        raise InvalidRequest(missing)
    if want_dir and not resolved.is_dir():
        raise InvalidRequest(missing)
    if not want_dir and not resolved.is_file():
        raise InvalidRequest(missing)
    return resolved
