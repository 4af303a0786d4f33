"""Issue 11, finding 9: app/demo_data/PROVENANCE.md lists exactly the files shipped in app/demo_data."""

from __future__ import annotations

import gzip
import hashlib
import re

from app.settings import DEMO_DATA_ROOT

PROVENANCE = DEMO_DATA_ROOT / "PROVENANCE.md"
_DATA_NAME = re.compile(r"^[\w.+-]+\.(fits|fits\.gz|csv|bin|head)$")


def _prose() -> str:
    """The document without its fenced code blocks (the record of CASA calls names CASA's own outputs)."""
    return re.sub(r"```.*?```", "", PROVENANCE.read_text(), flags=re.S)


def _files_table() -> set[str]:
    text = PROVENANCE.read_text()
    section = text[text.index("## Files"):text.index("### Header details")]
    return {m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", section, flags=re.M)}


def _shipped() -> set[str]:
    return {p.name for p in DEMO_DATA_ROOT.iterdir() if p.is_file() and p.name != "PROVENANCE.md"
            and not p.name.startswith(".") and p.suffix != ".py"}


def test_files_table_equals_shipped_files() -> None:
    assert _files_table() == _shipped()


def test_every_data_file_named_in_the_prose_is_shipped() -> None:
    named = {m for m in re.findall(r"`([^`]+)`", _prose()) if _DATA_NAME.match(m)}
    assert named, "the document names its files in backticks"
    assert named <= _shipped(), named - _shipped()


def test_listed_checksums_are_the_decompressed_fits() -> None:
    text = PROVENANCE.read_text()
    listed = dict(re.findall(r"\*\*`([^`]+)`\*\* \(sha256 of the FITS `([0-9a-f]{64})`\)", text))
    assert set(listed) == {n for n in _shipped() if n.endswith(".fits.gz")}
    for name, digest in listed.items():
        with gzip.open(DEMO_DATA_ROOT / name) as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == digest, name
