"""The SAMP side of the server: hub connection state, messaging, and files shared with peers.

- ``connect`` registers the server with the user's hub and asks to *stay* connected: every status
  call, heartbeat, send and a background watchdog check the hub (ping, and the lockfile's secret),
  and reconnect when the hub has restarted. ``disconnect`` stops that.
- ``send`` notifies one peer (id or name) or all subscribed peers; without a hub the message waits
  in the outbox and goes out on the next (re)connection (or is pulled from ``/pending`` by a bridge).
- Received messages (SAMP notifications and calls of the standard MTypes, and ``/receive``) land
  in the inbox.
- Files: tokens for files inside the roots, uploads and URL imports stored in the output directory
  (``samp_uploads/``, ``samp_imports/``; catalogues converted for ``send-catalogue`` go to
  ``samp_exports/``), each served at ``/v1/samp/files/{token}``.
"""

from __future__ import annotations

import logging
import threading
import time
import xmlrpc.client
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pyvo.samp import SAMPProxyError

from app.errors import ApiError, InvalidRequest, NotFound
from app.io.paths import confine
from app.io.remote import RemoteError, check_http_url, download_to, make_client
from app.services.samp import messages
from app.services.samp.files import (
    FileTokens,
    content_type_for,
    is_fits_name,
    is_votable_name,
    safe_filename,
    unique_destination,
)
from app.services.samp.hub import CLIENT_NAME, HubConnection, HubError, lockfile_path, read_lockfile
from app.services.samp.queues import Inbox, Outbox
from app.services.samp.tables import as_votable
from app.services.sessions import SessionRegistry

log = logging.getLogger("visivo.samp")
BROADCAST = ("", "all", "*", "broadcast")


@dataclass(frozen=True)
class SampConfig:
    """Limits and intervals of the SAMP service.

    Attributes
    ----------
    output_dir
        Where uploads, imports and converted catalogues are written.
    max_file_bytes
        Cap on an upload or an imported URL.
    import_timeout
        Seconds for one URL import (whole transfer).
    hub_timeout
        Seconds for one call to the hub.
    watch_interval
        Seconds between watchdog checks of the hub once connected (0: no watchdog).
    require_token
        Also require ``X-Visivo-Token`` on the SAMP routes (except file downloads by token).
    """

    output_dir: Path
    max_file_bytes: int = 512 << 20
    import_timeout: float = 60.0
    hub_timeout: float = 5.0
    watch_interval: float = 10.0
    require_token: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> SampConfig:
        """Read ``samp_*`` settings when present, defaults otherwise."""
        return cls(
            output_dir=Path(settings.output_dir),
            max_file_bytes=int(getattr(settings, "samp_max_file_megabytes", 512)) << 20,
            import_timeout=float(getattr(settings, "samp_import_timeout_seconds", 60.0)),
            hub_timeout=float(getattr(settings, "samp_hub_timeout_seconds", 5.0)),
            watch_interval=float(getattr(settings, "samp_watch_seconds", 10.0)),
            require_token=bool(getattr(settings, "samp_require_token", False)),
        )


class _HubDown(Exception):
    """The hub stopped answering in the middle of an operation."""


class SampService:
    """State of the server's SAMP presence (one per app)."""

    def __init__(self, config: SampConfig, roots: Sequence[Path], sessions: SessionRegistry) -> None:
        self.config = config
        self.roots = tuple(roots)
        self.sessions = sessions
        self.inbox = Inbox()
        self.outbox = Outbox()
        self.tokens = FileTokens()
        self.http = make_client(min(30.0, config.import_timeout))
        self._conn: HubConnection | None = None
        self._lock = threading.RLock()
        self._want = False
        self._lockfile_arg: str | None = None
        self._lockfile: Path | None = None
        self._hub_gone = threading.Event()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._votables: dict[tuple[str, int], Path] = {}
        self.last_error = ""
        self.reconnects = 0
        self.connected_at: float | None = None
        self.last_heartbeat: dict[str, Any] | None = None

    # -- hub connection -------------------------------------------------------------------
    def _on_message(self, kind: str, sender_id: str, mtype: str, params: dict, msg_id: str | None) -> None:
        conn = self._conn
        name = conn.sender_name(sender_id) if conn is not None else ""
        self.inbox.add(mtype, params, kind=kind, sender_id=sender_id, sender_name=name, msg_id=msg_id)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.connected_at = None
        if conn is not None:
            conn.close()

    def _open(self) -> None:
        path = lockfile_path(self._lockfile_arg)
        params = read_lockfile(path)
        self._hub_gone.clear()
        self._conn = HubConnection(params, timeout=self.config.hub_timeout, on_message=self._on_message,
                                   on_hub_shutdown=self._hub_gone.set)
        self._lockfile = path
        self.connected_at = time.time()
        self.last_error = ""

    def _lockfile_changed(self, conn: HubConnection) -> bool:
        try:
            params = read_lockfile(self._lockfile or lockfile_path(self._lockfile_arg))
        except HubError:
            return False
        return params["samp.secret"] != conn.secret or params["samp.hub.xmlrpc.url"] != conn.hub_url

    def ensure(self) -> bool:
        """Whether a live hub connection exists, reconnecting first when one is wanted and the hub changed."""
        with self._lock:
            conn = self._conn
            if conn is not None:
                if not self._hub_gone.is_set() and conn.alive() and not self._lockfile_changed(conn):
                    return True
                self._drop()
            if not self._want:
                return False
            try:
                self._open()
            except HubError as exc:
                self.last_error = str(exc)
                return False
            if conn is not None:
                self.reconnects += 1
            self._flush()
            return True

    def connect(self, lockfile: str | None = None) -> dict[str, Any]:
        """Register with the hub (``lockfile``, else ``$SAMP_HUB``, else ``~/.samp``) and stay connected."""
        with self._lock:
            self._want = True
            self._lockfile_arg = lockfile or None
            self._drop()
            try:
                self._open()
            except HubError as exc:
                self.last_error = str(exc)
                self._start_watchdog()
                raise InvalidRequest(str(exc)) from None
            self._flush()
            self._start_watchdog()
        return self.status()

    def disconnect(self) -> dict[str, Any]:
        """Unregister from the hub and stop reconnecting."""
        with self._lock:
            self._want = False
            self._drop()
        return self.status()

    def heartbeat(self, info: dict[str, Any]) -> dict[str, Any]:
        """Record a client's hub heartbeat, check the hub (reconnecting if it restarted) and report."""
        self.last_heartbeat = {"received_at": time.time(), **info}
        return self.status()

    def status(self) -> dict[str, Any]:
        """Connection state, peers and queue sizes (the hub is pinged first)."""
        connected = self.ensure()
        with self._lock:
            conn = self._conn
            peers: list[dict[str, Any]] = []
            if connected and conn is not None:
                try:
                    peers = conn.peers()
                except Exception as exc:  # the hub vanished between ping and listing
                    self.last_error = f"Listing SAMP peers failed: {type(exc).__name__}"
            return {
                "connected": bool(connected and conn is not None),
                "auto_reconnect": self._want,
                "client_name": CLIENT_NAME,
                "client_id": conn.client_id if conn else None,
                "hub_url": conn.hub_url if conn else None,
                "lockfile": str(self._lockfile or lockfile_path(self._lockfile_arg)) if self._want else None,
                "connected_since": self.connected_at,
                "reconnects": self.reconnects,
                "last_error": self.last_error,
                "peers": peers,
                "mtypes": list(messages.STANDARD_MTYPES),
                "inbox_size": len(self.inbox),
                "pending": len(self.outbox),
                "registered_files": len(self.tokens),
                "last_heartbeat": self.last_heartbeat,
            }

    def _watch(self) -> None:
        while not self._stop.wait(self.config.watch_interval):
            if self._want:
                try:
                    self.ensure()
                except Exception:  # never let the watchdog die; the next round retries
                    log.exception("SAMP watchdog")

    def _start_watchdog(self) -> None:
        if self.config.watch_interval > 0 and (self._watchdog is None or not self._watchdog.is_alive()):
            self._stop.clear()
            self._watchdog = threading.Thread(target=self._watch, name="samp-watchdog", daemon=True)
            self._watchdog.start()

    def close(self) -> None:
        """Stop the watchdog, unregister from the hub, close the HTTP client."""
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=self.config.hub_timeout * 3 + 5)
        with self._lock:
            self._want = False
            self._drop()
        self.http.close()

    # -- messaging --------------------------------------------------------------------------
    def _deliver(self, message: dict[str, Any], recipient: str | None) -> list[str]:
        conn = self._conn
        if conn is None:
            raise _HubDown()
        try:
            target = conn.resolve_recipient(recipient) if recipient is not None else None
            return conn.send(message, target)
        except KeyError:
            raise InvalidRequest(f"Unknown SAMP recipient '{recipient}'.") from None
        except SAMPProxyError as exc:
            raise InvalidRequest(f"The SAMP hub refused the message: {exc.faultString}") from None
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            self._hub_gone.set()
            raise _HubDown() from exc

    def _flush(self) -> None:
        items = self.outbox.take()
        for i, item in enumerate(items):
            try:
                self._deliver({"samp.mtype": item["mtype"], "samp.params": item["params"]}, item["recipient"])
            except _HubDown:
                self.outbox.put_back(items[i:])
                return
            except InvalidRequest as exc:
                self.last_error = f"Queued message {item['id']} dropped: {exc.message}"

    def send(self, mtype: str, params: dict[str, Any] | None, *, recipient: str | None = None,
             session_id: str | None = None) -> dict[str, Any]:
        """Send now when connected, else queue; ``recipient`` is a client id or name (empty/``all``: broadcast)."""
        message = messages.make_message(mtype, params)
        target = None if (recipient or "").strip().lower() in BROADCAST else recipient.strip()
        with self._lock:
            if self.ensure():
                try:
                    ids = self._deliver(message, target)
                    return {"sent": True, "queued": False, "mtype": message["samp.mtype"], "recipients": ids,
                            "params": message["samp.params"]}
                except _HubDown:
                    pass
        entry = self.outbox.add(message, recipient=target, session_id=session_id)
        return {"sent": False, "queued": True, "mtype": message["samp.mtype"], "recipients": [],
                "message_id": entry["id"], "pending": len(self.outbox), "params": message["samp.params"]}

    def receive(self, mtype: str, params: dict[str, Any] | None, *, sender: str = "", sender_name: str = "",
                session_id: str | None = None) -> dict[str, Any]:
        """Put a message delivered by a bridge (``/receive``) into the inbox."""
        converted = messages.samp_value(params or {})
        return self.inbox.add(messages.check_mtype(mtype), converted, kind="bridge", sender_id=sender,
                              sender_name=sender_name, session_id=session_id)

    def pending(self, *, consume: bool) -> list[dict[str, Any]]:
        return self.outbox.take() if consume else self.outbox.peek()

    # -- files ------------------------------------------------------------------------------
    def file_info(self, path: Path, base_url: str) -> dict[str, Any]:
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

    def _open_in_session(self, path: Path, session_id: str | None) -> dict[str, Any]:
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
        return {**self.file_info(dest, base_url), **self._open_in_session(dest, session_id), "source_url": url}

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

    def send_fits(self, source: Path, *, name: str | None, recipient: str | None, session_id: str | None,
                  base_url: str) -> dict[str, Any]:
        """``image.load.fits`` with the file's URL to one or all peers."""
        if not (is_fits_name(source.name) or _sniff(source) == "fits"):
            raise InvalidRequest(f"{source.name} is not a FITS file.")
        info = self.file_info(source, base_url)
        params = {"url": info["url"], "image-id": info["token"], "name": name or source.name}
        result = self.send(messages.IMAGE_LOAD_FITS, params, recipient=recipient, session_id=session_id)
        return {**result, **info}

    def send_catalogue(self, source: Path, *, name: str | None, recipient: str | None, session_id: str | None,
                       base_url: str) -> dict[str, Any]:
        """``table.load.votable`` with the catalogue (converted to VOTable when needed) to one or all peers."""
        key = (str(source), source.stat().st_mtime_ns)
        votable = self._votables.get(key)
        converted = not is_votable_name(source.name)
        if votable is None or not votable.is_file():
            votable, converted = as_votable(source, self.config.output_dir / "samp_exports")
            votable = votable.resolve()
            self._votables[key] = votable
        info = self.file_info(votable, base_url)
        params = {"url": info["url"], "table-id": info["token"], "name": name or source.name}
        result = self.send(messages.TABLE_LOAD_VOTABLE, params, recipient=recipient, session_id=session_id)
        return {**result, **info, "converted": converted, "source_path": str(source)}


def _sniff(path: Path) -> str | None:
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
    kind = _sniff(path)
    if kind is None:
        return path
    target = path.with_name(path.name + (".fits" if kind == "fits" else ".vot"))
    path.rename(target)
    return target
