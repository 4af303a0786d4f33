"""Files shared with SAMP peers: tokens and their URLs, URL imports opened in the session, VOTables to send.

Uploads (``samp_uploads/``), imports (``samp_imports/``) and catalogues converted for
``send-catalogue`` (``samp_exports/``) are written under the output directory, which is a readable
root, so every one of them can be served by token and opened as a dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from app.errors import ApiError, InvalidRequest, NotFound
from app.io.paths import confine
from app.io.remote import RemoteError, check_http_url, download_to, make_client
from app.services.samp.config import SampConfig
from app.services.samp.files import (
    FileTokens,
    content_type_for,
    is_fits_name,
    is_votable_name,
    safe_filename,
    unique_destination,
)
from app.services.samp.tables import as_votable
from app.services.sessions import SessionRegistry

MAX_CONVERTED = 256


class SharedFiles:
    """Token registry plus the operations that create shareable files.

    Parameters
    ----------
    config
        Size cap, import timeout and output directory (replaceable: :attr:`config` is read per call).
    roots
        Readable roots (data roots and the output directory).
    sessions
        Where imported files are opened as datasets.
    """

    def __init__(self, config: SampConfig, roots: Sequence[Path], sessions: SessionRegistry) -> None:
        self.config = config
        self.roots = tuple(roots)
        self.sessions = sessions
        self.tokens = FileTokens()
        self.http = make_client(min(30.0, config.import_timeout))
        self._votables: dict[tuple[str, int], Path] = {}

    def close(self) -> None:
        self.http.close()

    def file_info(self, path: Path, base_url: str) -> dict[str, Any]:
        """Token (minted on first use), served URL and facts of a resolved file inside the roots."""
        token = self.tokens.register(path)
        return {
            "token": token,
            "url": f"{base_url.rstrip('/')}/v1/samp/files/{token}",
            "path": str(path),
            "name": path.name,
            "size": path.stat().st_size,
            "content_type": content_type_for(path.name),
        }

    def register_path(self, raw_path: str, base_url: str) -> dict[str, Any]:
        """A token for a file inside the roots."""
        return self.file_info(confine(raw_path, self.roots), base_url)

    def served_file(self, token: str) -> tuple[Path, str]:
        """The file of ``token`` (still inside the roots) and its content type; 404 otherwise."""
        path = self.tokens.path_of(token)
        try:
            path = confine(str(path), self.roots)
        except InvalidRequest:
            raise NotFound("File not found.") from None
        return path, content_type_for(path.name)

    def open_in_session(self, path: Path, session_id: str | None) -> dict[str, Any]:
        """Open an imported file in the session: FITS image/cube, else catalogue when that service exists."""
        sid = self.sessions.ensure(session_id).session_id
        errors = []
        if is_fits_name(path.name):
            from app.services.datasets import open_dataset

            try:
                ds = open_dataset(self.sessions, self.roots, str(path), sid)
                return {"session_id": sid, "dataset_id": ds.dataset_id, "kind": ds.kind}
            except ApiError as exc:
                errors.append(exc.message)
        try:
            from app.services.catalogue import open_catalogue
        except ImportError:
            open_catalogue = None
        if open_catalogue is not None:
            try:
                ds = open_catalogue(self.sessions, self.roots, path=str(path), paths=None, fmt=None, session_id=sid)
                return {"session_id": sid, "dataset_id": ds.dataset_id, "kind": ds.kind}
            except ApiError as exc:
                errors.append(exc.message)
        return {"session_id": sid, "dataset_id": None, "kind": None, "open_error": "; ".join(errors)}

    def import_url(self, url: str, *, name: str | None, session_id: str | None, base_url: str) -> dict[str, Any]:
        """Download an http(s) URL into ``samp_imports/`` (size cap, timeout), give it a token, open it."""
        try:
            url = check_http_url(url)
        except RemoteError as exc:
            raise InvalidRequest(exc.message) from None
        guessed = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
        dest = unique_destination(self.config.output_dir / "samp_imports", safe_filename(name or guessed, "download"))
        try:
            download_to(self.http, url, dest, max_bytes=self.config.max_file_bytes,
                        total_timeout=self.config.import_timeout)
        except RemoteError as exc:
            raise InvalidRequest(f"Import failed: {exc.message}") from None
        dest = _with_sniffed_suffix(dest).resolve()
        return {**self.file_info(dest, base_url), **self.open_in_session(dest, session_id), "source_url": url}

    def resolve_source(self, *, token: str | None, path: str | None, dataset_id: str | None,
                       session_id: str | None) -> Path:
        """The file to send: by token, path inside the roots, or an open dataset of the session."""
        if token:
            return self.served_file(token)[0]
        if path:
            return confine(path, self.roots)
        if dataset_id:
            dataset = self.sessions.dataset(dataset_id, session_id)
            return confine(str(dataset.path), self.roots)
        raise InvalidRequest("Give the file's 'path', 'token' or 'dataset_id'.")

    def votable_for(self, source: Path) -> tuple[Path, bool]:
        """A VOTable of the catalogue at ``source`` (itself, or a converted copy made once per file version)."""
        key = (str(source), source.stat().st_mtime_ns)
        votable = self._votables.get(key)
        if votable is not None and votable.is_file():
            return votable, not is_votable_name(source.name)
        votable, converted = as_votable(source, self.config.output_dir / "samp_exports")
        votable = votable.resolve()
        if len(self._votables) >= MAX_CONVERTED:
            self._votables.clear()
        self._votables[key] = votable
        return votable, converted


def sniff(path: Path) -> str | None:
    """``fits`` or ``votable`` from a file's first bytes, else ``None``."""
    try:
        with path.open("rb") as handle:
            head = handle.read(256)
    except OSError:
        return None
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    text = head.lstrip().lower()
    if text.startswith(b"<?xml") or text.startswith(b"<votable"):
        return "votable"
    return None


def _with_sniffed_suffix(path: Path) -> Path:
    """Give a downloaded file without a known suffix one from its first bytes (``.fits``/``.vot``)."""
    lower = path.name.lower()
    if is_fits_name(lower) or is_votable_name(lower) or lower.endswith((".csv", ".tsv")):
        return path
    kind = sniff(path)
    if kind is None:
        return path
    target = path.with_name(path.name + (".fits" if kind == "fits" else ".vot"))
    path.rename(target)
    return target
