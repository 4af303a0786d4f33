"""Target name → ICRS coordinates: offline first, Sesame when the network answers.

Order of the resolvers (the response's ``resolver`` says which one answered):

1. ``coordinates`` — the name *is* coordinates: decimal degrees (``187.7059 12.3911``) or
   sexagesimal (``12:30:49.42 +12:23:28.0``, ``12h30m49.42s +12d23m28s``);
2. ``openngc`` — NGC/IC/Messier/UGC/PGC (and the other identifiers pyongc knows) and OpenNGC's
   common names (``Andromeda Galaxy``), from the OpenNGC database shipped with pyongc;
3. ``designation`` — coordinates embedded in an IAU-style designation to at least one second of
   RA (``2MASX J00424433+4116074``, ``SDSS J123049.42+122327.9``; digits after the seconds are
   decimals, as in 2MASS names);
4. ``sesame`` — CDS Sesame (Simbad, NED, VizieR) over HTTP with a short timeout, at the URLs of
   ``VISIVO_SESAME_URL`` (comma-separated mirrors; empty disables the network);
5. ``designation`` (``approximate: true``) — a truncated designation (``PSR J1939+2134``) when
   Sesame could not answer.

Sesame is spoken to directly (``<url>/-oI/A?<name>``, plain-text answer, ``%J`` line) rather than
through astropy's ``get_icrs_coordinates`` because the URL and timeout must be per request, not
process-wide astropy state.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.errors import InvalidRequest

SESAME_TIMEOUT_S = 3.0
_MAX_SESAME_BYTES = 1 << 20

_SEXA_CHARS = re.compile(r"^[\d\s.:,+\-−hmsd°'\"′″]+$", re.IGNORECASE)
_DESIGNATION = re.compile(r"(?<![A-Za-z0-9])J(\d{2})(\d{2})(\d{2})(\.?\d*)([+-])(\d{2})(\d{2})(\d{2})(\.?\d*)")
_SHORT_DESIGNATION = re.compile(r"(?<![A-Za-z0-9])J(\d{2})(\d{2})(\.\d+)?([+-])(\d{2})(\d{2})?(?![\d])")
_CATALOG_PREFIX = re.compile(r"^(MESSIER|NGC|IC|M|UGCA|UGC|PGC|LEDA|MCG|ESO|HCG|MEL|CL|LBN|MWSC)\s+(?=[\d+-])")


class SesameUnavailable(Exception):
    """No Sesame mirror answered (network down, timeout, HTTP error)."""


def _check_range(ra: float, dec: float) -> tuple[float, float]:
    if not (0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0):
        raise InvalidRequest(f"Coordinates out of range: RA {ra} deg, Dec {dec} deg.")
    return ra, dec


def _seconds(whole: str, fraction: str) -> float:
    digits = fraction.lstrip(".")
    return float(f"{whole}.{digits}") if digits else float(whole)


def parse_coordinates(text: str) -> tuple[float, float] | None:
    """``(ra_deg, dec_deg)`` when the whole text is coordinates, else ``None``."""
    if not _SEXA_CHARS.match(text):
        return None
    tokens = [t for t in re.split(r"[\s,:hmsd°'\"′″]+", text.replace("−", "-"), flags=re.IGNORECASE) if t]
    try:
        numbers = [float(t) for t in tokens]
    except ValueError:
        return None
    if len(numbers) == 2:
        return _check_range(numbers[0], numbers[1])
    if len(numbers) != 6:
        return None
    h, m, s, d, dm, ds = numbers
    if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 60 and abs(d) <= 90 and 0 <= dm < 60 and 0 <= ds < 60):
        raise InvalidRequest(f"Coordinates out of range: '{text}'.")
    sign = -1.0 if tokens[3].startswith("-") else 1.0
    ra = 15.0 * (h + m / 60.0 + s / 3600.0)
    dec = sign * (abs(d) + dm / 60.0 + ds / 3600.0)
    return _check_range(ra, dec)


def parse_designation(text: str, *, approximate: bool = False) -> tuple[float, float] | None:
    """Coordinates embedded in a J-designation (to the second of RA; ``approximate`` allows HHMM±DDMM)."""
    match = _DESIGNATION.search(text)
    if match:
        h, m, s, sf, sign, d, dm, ds, dsf = match.groups()
        ra = 15.0 * (int(h) + int(m) / 60.0 + _seconds(s, sf) / 3600.0)
        dec = (-1.0 if sign == "-" else 1.0) * (int(d) + int(dm) / 60.0 + _seconds(ds, dsf) / 3600.0)
        return _check_range(ra, dec)
    if approximate:
        short = _SHORT_DESIGNATION.search(text)
        if short:
            h, m, mf, sign, d, dm = short.groups()
            ra = 15.0 * (int(h) + (int(m) + float(mf or 0.0)) / 60.0)
            dec = (-1.0 if sign == "-" else 1.0) * (int(d) + int(dm or 0) / 60.0)
            return _check_range(ra, dec)
    return None


def _pretty(identifier: str) -> str:
    """``NGC0224`` → ``NGC 224``, ``M031`` → ``M 31`` (suffixes kept)."""
    match = re.match(r"^([A-Za-z]+)0*(\d+)(.*)$", identifier.strip())
    return f"{match.group(1)} {int(match.group(2))}{match.group(3)}" if match else identifier.strip()


def _fold(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@functools.cache
def _common_names() -> dict[str, str]:
    """OpenNGC common names (folded) → object name, read once from pyongc's database."""
    from pyongc import ongc  # noqa: PLC0415

    con = sqlite3.connect(f"file:{ongc.DBPATH}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT name, commonnames FROM objects WHERE commonnames != ''").fetchall()
    finally:
        con.close()
    return {_fold(common): name for name, commons in rows for common in commons.split(",") if common.strip()}


def openngc_lookup(name: str) -> dict[str, Any] | None:
    """The OpenNGC object for a catalogue identifier or common name, else ``None``."""
    from pyongc import ongc  # noqa: PLC0415

    upper = " ".join(name.upper().split())
    candidates = [_CATALOG_PREFIX.sub(lambda m: "M" if m.group(1) == "MESSIER" else m.group(1), upper)]
    common = _common_names().get(_fold(name))
    if common:
        candidates.append(common)
    for candidate in candidates:
        try:
            obj = ongc.Dso(candidate)
        except Exception:  # pyongc raises ObjectNotFound / UnknownIdentifier (and ValueError in old versions)
            continue
        coords = obj.rad_coords
        if coords is None:
            continue
        ra, dec = (float(v) for v in np.degrees(coords))
        messier, _, _, commons, others = obj.identifiers
        aliases = ([_pretty(messier)] if messier else []) + list(commons or []) + list(others or [])
        return {"ra_deg": ra, "dec_deg": dec, "resolved_name": _pretty(obj.name), "object_type": obj.type,
                "aliases": aliases}
    return None


def _parse_sesame(text: str) -> dict[str, Any] | None:
    ra_dec = re.search(r"^%J\s+([+-]?[\d.]+)\s+([+-]?[\d.]+)", text, re.MULTILINE)
    if ra_dec is None:
        return None
    main = re.search(r"^%I\.0\s+(.+)$", text, re.MULTILINE)
    return {"ra_deg": float(ra_dec.group(1)), "dec_deg": float(ra_dec.group(2)),
            "resolved_name": " ".join(main.group(1).split()) if main else None}


def sesame_lookup(name: str, urls: Sequence[str], *, timeout: float = SESAME_TIMEOUT_S) -> dict[str, Any] | None:
    """Ask the Sesame mirrors in turn; ``None`` when the first one that answers does not know the name.

    Raises
    ------
    SesameUnavailable
        When no mirror answered.
    """
    failures = []
    for base in urls:
        if urllib.parse.urlparse(base).scheme not in ("http", "https"):
            failures.append(f"{base}: not an http(s) URL")
            continue
        url = f"{base.rstrip('/')}/-oI/A?{urllib.parse.quote(name)}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (scheme checked)
                text = response.read(_MAX_SESAME_BYTES).decode("utf-8", "replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{base}: {getattr(exc, 'reason', exc)}")
            continue
        found = _parse_sesame(text)
        if found is not None and not found["resolved_name"]:
            found["resolved_name"] = name
        return found
    raise SesameUnavailable("; ".join(failures) or "no Sesame URL configured")


def resolve_target(name: str | None, *, sesame_urls: Sequence[str], timeout: float = SESAME_TIMEOUT_S) -> dict:
    """Resolve a target name; see the module docstring for the order.

    Raises
    ------
    InvalidRequest
        Empty name, out-of-range coordinates, or a name no resolver knows.
    """
    query = " ".join((name or "").split())
    if not query:
        raise InvalidRequest("Give a target 'name'.")
    base = {"query": query, "approximate": False}
    coords = parse_coordinates(query)
    if coords is not None:
        return {**base, "ra_deg": coords[0], "dec_deg": coords[1], "resolved_name": query, "resolver": "coordinates"}
    found = openngc_lookup(query)
    if found is not None:
        return {**base, **found, "resolver": "openngc"}
    coords = parse_designation(query)
    if coords is not None:
        return {**base, "ra_deg": coords[0], "dec_deg": coords[1], "resolved_name": query, "resolver": "designation"}
    why = "Sesame lookups are disabled"
    if sesame_urls:
        try:
            found = sesame_lookup(query, sesame_urls, timeout=timeout)
        except SesameUnavailable as exc:
            why = f"Sesame could not be reached ({exc})"
        else:
            if found is not None:
                return {**base, **found, "resolver": "sesame"}
            why = "Sesame does not know it"
    coords = parse_designation(query, approximate=True)
    if coords is not None:
        return {**base, "ra_deg": coords[0], "dec_deg": coords[1], "resolved_name": query,
                "resolver": "designation", "approximate": True}
    raise InvalidRequest(f"Could not resolve '{query}': not coordinates, not an OpenNGC object, and {why}.")


def sesame_urls_from(setting: str | None) -> list[str]:
    """The comma-separated ``VISIVO_SESAME_URL`` as a list (empty: network lookups disabled)."""
    return [u.strip() for u in (setting or "").split(",") if u.strip()]
