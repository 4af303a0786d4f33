"""The SAMP side of the server: hub connection state, messaging, and files shared with peers.

- ``connect`` registers the server with the user's hub and asks to *stay* connected: every status
  call, heartbeat, send and a background watchdog check the hub (ping, and the lockfile's secret),
  and reconnect when the hub has restarted. ``disconnect`` stops that. The hub is the one the
  server is configured for (:func:`~app.services.samp.hub.lockfile_path`); a client cannot name
  another lockfile. The lockfile is read before the service lock is taken (no file I/O under the
  lock), and any failure to read or use it only sets ``last_error``: status calls keep answering.
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
from pathlib import Path
from typing import Any

from pyvo.samp import SAMPProxyError

from app.errors import InvalidRequest
from app.services.samp import messages
from app.services.samp.config import SampConfig
from app.services.samp.files import is_fits_name
from app.services.samp.hub import CLIENT_NAME, HubConnection, HubError, lockfile_path, read_lockfile
from app.services.samp.queues import Inbox, Outbox
from app.services.samp.sharing import SharedFiles, sniff
from app.services.sessions import SessionRegistry

log = logging.getLogger("visivo.samp")
#: The answer to a ``connect`` naming a lockfile other than the configured one.
CLIENT_LOCKFILE_REFUSED = ("The SAMP lockfile is set by the server's configuration (VISIVO_SAMP_LOCKFILE_DIR, "
                           "SAMP_HUB or ~/.samp); a client cannot choose another one.")
BROADCAST = ("", "all", "*", "broadcast")


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


class _HubDown(Exception):
    """The hub stopped answering in the middle of an operation."""


class SampService:
    """State of the server's SAMP presence (one per app)."""

    def __init__(self, config: SampConfig, roots: Sequence[Path], sessions: SessionRegistry) -> None:
        self.files = SharedFiles(config, roots, sessions)
        self._config = config
        self.inbox = Inbox()
        self.outbox = Outbox()
        self._conn: HubConnection | None = None
        self._lock = threading.RLock()
        self._want = False
        self._lockfile: Path | None = None
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._ever_connected = False
        self.last_error = ""
        self.reconnects = 0
        self.connected_at: float | None = None
        self.last_heartbeat: dict[str, Any] | None = None

    @property
    def config(self) -> SampConfig:
        return self._config

    @config.setter
    def config(self, value: SampConfig) -> None:
        self._config = value
        self.files.config = value

    # -- hub connection -------------------------------------------------------------------
    def _on_message(self, kind: str, sender_id: str, sender_name: str, mtype: str, params: dict,
                    msg_id: str | None) -> None:
        self.inbox.add(mtype, params, kind=kind, sender_id=sender_id, sender_name=sender_name, msg_id=msg_id)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.connected_at = None
        if conn is not None:
            conn.close()

    def configured_lockfile(self) -> Path | None:
        """The lockfile this server uses (``None`` when ``SAMP_HUB`` is unusable)."""
        try:
            return lockfile_path(self.config.lockfile_dir)
        except HubError:
            return None

    def _read_configured(self) -> tuple[Path | None, dict[str, str] | None, str]:
        """``(path, params, error)`` of the configured lockfile; called with no lock held (file I/O)."""
        try:
            path = lockfile_path(self.config.lockfile_dir)
        except HubError as exc:
            return None, None, str(exc)
        try:
            return path, read_lockfile(path), ""
        except HubError as exc:
            return path, None, str(exc)

    def _open(self, path: Path, params: dict[str, str]) -> None:
        try:
            self._conn = HubConnection(params, timeout=self.config.hub_timeout, on_message=self._on_message)
        except HubError:
            raise
        except Exception as exc:  # e.g. a hub URL the HTTP stack refuses: never a 500, never a wedge
            raise HubError(f"Cannot register with the SAMP hub: {type(exc).__name__}") from None
        self._lockfile = path
        self.connected_at = time.time()
        self.last_error = ""
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True

    def ensure(self) -> bool:
        """Whether a live hub connection exists, reconnecting first when one is wanted and the hub changed."""
        if not self._want and self._conn is None:
            return False
        path, params, error = self._read_configured()  # before the lock: no file I/O under it
        with self._lock:
            conn = self._conn
            if conn is not None:
                changed = params is not None and (
                    params["samp.secret"] != conn.secret or params["samp.hub.xmlrpc.url"] != conn.hub_url)
                if not conn.gone.is_set() and conn.alive() and not changed:
                    return True
                self._drop()
            if not self._want:
                return False
            if params is None:
                self.last_error = error
                return False
            try:
                self._open(path, params)
            except HubError as exc:
                self.last_error = str(exc)
                return False
            self._flush()
            return True

    def connect(self, lockfile: str | None = None) -> dict[str, Any]:
        """Register with the configured hub and stay connected.

        ``lockfile`` (from older clients) is accepted only when it names the configured lockfile;
        any other value is refused with one fixed message, before anything is read.
        """
        configured = self.configured_lockfile()
        if lockfile and (configured is None or lockfile.strip() != str(configured)):
            raise InvalidRequest(CLIENT_LOCKFILE_REFUSED)
        path, params, error = self._read_configured()
        with self._lock:
            self._want = True
            self._ever_connected = False
            self._drop()
            try:
                if params is None:
                    raise HubError(error)
                self._open(path, params)
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
                "lockfile": _text(self._lockfile or self.configured_lockfile()) if self._want else None,
                "connected_since": self.connected_at,
                "reconnects": self.reconnects,
                "last_error": self.last_error,
                "peers": peers,
                "mtypes": list(messages.STANDARD_MTYPES),
                "inbox_size": len(self.inbox),
                "pending": len(self.outbox),
                "registered_files": len(self.files.tokens),
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
        self.files.close()

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
            conn.gone.set()
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
        connected = self.ensure()  # reads the lockfile: before the lock
        with self._lock:
            if connected:
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

    def send_fits(self, source: Path, *, name: str | None, recipient: str | None, session_id: str | None,
                  base_url: str) -> dict[str, Any]:
        """``image.load.fits`` with the file's URL to one or all peers."""
        if not (is_fits_name(source.name) or sniff(source) == "fits"):
            raise InvalidRequest(f"{source.name} is not a FITS file.")
        info = self.files.file_info(source, base_url)
        params = {"url": info["url"], "image-id": info["token"], "name": name or source.name}
        result = self.send(messages.IMAGE_LOAD_FITS, params, recipient=recipient, session_id=session_id)
        return {**result, **info}

    def send_catalogue(self, source: Path, *, name: str | None, recipient: str | None, session_id: str | None,
                       base_url: str) -> dict[str, Any]:
        """``table.load.votable`` with the catalogue (converted to VOTable when needed) to one or all peers."""
        votable, converted = self.files.votable_for(source)
        info = self.files.file_info(votable, base_url)
        params = {"url": info["url"], "table-id": info["token"], "name": name or source.name}
        result = self.send(messages.TABLE_LOAD_VOTABLE, params, recipient=recipient, session_id=session_id)
        return {**result, **info, "converted": converted, "source_path": str(source)}
