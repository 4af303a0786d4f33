"""The server's own SAMP client: hub discovery, connection with timeouts, subscriptions, sending.

- Discovery follows the SAMP Standard Profile: ``<VISIVO_SAMP_LOCKFILE_DIR>/.samp`` when that setting
  is given, else ``SAMP_HUB=std-lockurl:file://...`` when set, else ``~/.samp``; only local (``file:``)
  lockfiles are read, and a client never names the file. Multi-hub mode (``~/.samp-1/``) is not used.
- The lockfile is read as a small regular file opened with ``O_NONBLOCK`` (a FIFO or device never
  blocks the read); every unusable lockfile gets the same answer (no existence oracle).
- The client is :class:`pyvo.samp.SAMPIntegratedClient` named for this server, listening on
  127.0.0.1 only. Its hub proxy is replaced by one whose XML-RPC calls time out, so a frozen hub
  cannot block a request forever.
- pyvo.samp probes the internet (an HTTP request to a public site) to choose the address it
  listens on unless ``conf.use_internet`` is false; this module turns that off for the process,
  since the address is always given explicitly here.
"""

from __future__ import annotations

import copy
import os
import re
import stat
import threading
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from pyvo.samp import SAMP_STATUS_OK, SAMPHubProxy, SAMPIntegratedClient
from pyvo.samp import conf as samp_conf
from pyvo.samp.utils import SAMPXXEServerProxy, ServerProxyPool

try:  # pyvo's XXE-safe XML-RPC parser (not part of its public API)
    from pyvo.samp.utils import get_safe_parser
except ImportError:  # pragma: no cover - older/newer pyvo: the standard parser (expat expands no external entities)
    get_safe_parser = None

from app.services.samp.messages import HUB_SHUTDOWN, STANDARD_MTYPES

samp_conf.use_internet = False

CLIENT_NAME = "VisIVO Server"
CLIENT_DESCRIPTION = "VisIVO GPU compute server for radio-astronomy cubes (FastAPI)"
MAX_LOCKFILE_BYTES = 64 * 1024
LISTEN_ADDRESS = "127.0.0.1"
_JAVA_ESCAPE = re.compile(r"\\(.)")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

#: ``on_message(kind, sender_id, sender_name, mtype, params, msg_id)``
MessageHandler = Callable[[str, str, str, str, dict, "str | None"], None]


class HubError(Exception):
    """No usable hub (no lockfile, malformed lockfile, unreachable hub, refused registration)."""


def lockfile_path(directory: Path | None = None) -> Path:
    """The hub lockfile the server is configured for; never a path chosen by a client.

    ``directory/.samp`` when a directory is configured (``VISIVO_SAMP_LOCKFILE_DIR``), else
    ``$SAMP_HUB`` (``std-lockurl:file:...``), else ``~/.samp`` of the server's user.
    """
    if directory is not None:
        return Path(directory) / ".samp"
    env = os.environ.get("SAMP_HUB", "").strip()
    if not env:
        return Path.home() / ".samp"
    if not env.startswith("std-lockurl:"):
        raise HubError("SAMP_HUB must have the form std-lockurl:<url> (Standard Profile).")
    url = env[len("std-lockurl:"):]
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(url2pathname(parts.path))
    if not parts.scheme:
        return Path(url)
    raise HubError("Only local (file:) SAMP lockfiles are supported.")


def no_hub_message(path: Path) -> str:
    """The one answer for a missing, unreadable, non-regular, oversized or malformed lockfile."""
    return f"No running SAMP hub found (no usable lockfile at {path})."


def _read_capped(path: Path) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_LOCKFILE_BYTES`, opened without blocking.

    ``O_NONBLOCK`` makes ``open`` return at once on a FIFO (which would otherwise wait for a
    writer) and the ``fstat`` check then refuses it, like any device, socket or directory.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_LOCKFILE_BYTES:
            raise HubError("not a small regular file")
        chunks, total = [], 0
        while total <= MAX_LOCKFILE_BYTES:
            chunk = os.read(fd, MAX_LOCKFILE_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_LOCKFILE_BYTES:
        raise HubError("too large")
    return data


def read_lockfile(path: Path) -> dict[str, str]:
    """The ``key=value`` entries of a lockfile; :class:`HubError` (one message) when it is unusable.

    Values are unescaped like Java properties (JSAMP, TOPCAT's hub, writes ``http\\://host\\:port/``).
    Missing, unreadable, non-regular (FIFO, device, directory), larger than
    :data:`MAX_LOCKFILE_BYTES`, not UTF-8 text, holding control characters (NUL ...), without
    ``samp.secret`` and ``samp.hub.xmlrpc.url``, or with a hub URL that is not http(s): all answer
    the same :func:`no_hub_message`.
    """
    try:
        data = _read_capped(path)
        text = data.decode("utf-8")
    except (OSError, ValueError, HubError):
        raise HubError(no_hub_message(path)) from None
    if _CONTROL.search(text):
        raise HubError(no_hub_message(path))
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = _JAVA_ESCAPE.sub(r"\1", value.strip())
    url = values.get("samp.hub.xmlrpc.url", "")
    if not values.get("samp.secret") or not url:
        raise HubError(no_hub_message(path))
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:
        valid = False
    if not valid:
        raise HubError(no_hub_message(path))
    return values


class _TimeoutTransport(xmlrpc.client.Transport):
    """XML-RPC transport with a socket timeout and pyvo's XXE-safe parser."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> Any:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection

    def getparser(self) -> Any:
        if get_safe_parser is None:  # pragma: no cover
            return super().getparser()
        return get_safe_parser(self._use_datetime, self._use_builtin_types)


class TimeoutHubProxy(SAMPHubProxy):
    """:class:`pyvo.samp.SAMPHubProxy` whose calls time out after ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def _make_proxy(self, url: str, **kwargs: Any) -> SAMPXXEServerProxy:
        return SAMPXXEServerProxy(url, transport=_TimeoutTransport(self.timeout), **kwargs)

    def connect(self, hub: Any = None, hub_params: dict | None = None, pool_size: int = 4) -> None:
        if hub is not None or hub_params is None:
            raise HubError("TimeoutHubProxy connects from lockfile parameters only.")
        self._connected = False
        self.lockfile = {}
        self.proxy = ServerProxyPool(pool_size, self._make_proxy, hub_params["samp.hub.xmlrpc.url"], allow_none=1)
        try:
            self.ping()
        except Exception:
            self.proxy.shutdown()
            self.proxy = None
            raise
        self.lockfile = copy.deepcopy(hub_params)
        self._connected = True


class HubConnection:
    """One registration of this server with one hub.

    Parameters
    ----------
    params
        The hub's lockfile entries.
    timeout
        Seconds for each call to the hub.
    on_message
        Called (from a SAMP callback thread) for every message of :data:`STANDARD_MTYPES` received;
        calls are acknowledged with ``samp.ok`` afterwards.
    """

    def __init__(self, params: dict[str, str], *, timeout: float, on_message: MessageHandler) -> None:
        self.params = params
        self.hub_url = params["samp.hub.xmlrpc.url"]
        self.secret = params["samp.secret"]
        self._on_message = on_message
        #: Set when this hub announced its shutdown or stopped answering (per connection, so a late
        #: notification from an old hub never condemns the connection to its successor).
        self.gone = threading.Event()
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()
        self.client = SAMPIntegratedClient(
            name=CLIENT_NAME,
            description=CLIENT_DESCRIPTION,
            metadata={"samp.icon.url": "", "author.name": "VisIVO", "visivo.server": "1"},
            addr=LISTEN_ADDRESS,
        )
        self.client.hub = TimeoutHubProxy(timeout)
        try:
            self.client.connect(hub_params=params, pool_size=4)
        except Exception as exc:
            self.close()
            raise HubError(f"Cannot register with the SAMP hub at {self.hub_url}: {type(exc).__name__}") from None
        try:
            for mtype in STANDARD_MTYPES:
                self.client.bind_receive_notification(mtype, self._notification, declare=False)
                self.client.bind_receive_call(mtype, self._call, declare=False)
            self.client.bind_receive_notification(HUB_SHUTDOWN, self._shutdown, declare=False)
            self.client.declare_subscriptions()
        except Exception as exc:
            self.close()
            raise HubError(f"Cannot subscribe with the SAMP hub: {type(exc).__name__}") from None

    # -- callbacks (SAMP client threads) ----------------------------------------------------
    def sender_name(self, sender_id: str) -> str:
        with self._lock:
            if sender_id in self._names:
                return self._names[sender_id]
        try:
            name = str(self.client.get_metadata(sender_id).get("samp.name", ""))
        except Exception:  # the sender may be gone already; its id is enough
            name = ""
        with self._lock:
            self._names[sender_id] = name
        return name

    def _notification(self, private_key: str, sender_id: str, mtype: str, params: dict, extra: dict) -> None:
        self._on_message("notification", sender_id, self.sender_name(sender_id), mtype, params, None)

    def _call(self, private_key: str, sender_id: str, msg_id: str, mtype: str, params: dict, extra: dict) -> None:
        self._on_message("call", sender_id, self.sender_name(sender_id), mtype, params, msg_id)
        self.client.reply(msg_id, {"samp.status": SAMP_STATUS_OK, "samp.result": {}})

    def _shutdown(self, private_key: str, sender_id: str, mtype: str, params: dict, extra: dict) -> None:
        self.gone.set()

    # -- state ------------------------------------------------------------------------------
    @property
    def client_id(self) -> str | None:
        inner = self.client.client
        return inner.get_public_id() if inner is not None else None

    def alive(self) -> bool:
        """Whether the hub answers a ping."""
        try:
            self.client.ping()
        except Exception:  # any transport or protocol failure means "not reachable"
            return False
        return True

    def peers(self) -> list[dict[str, Any]]:
        """Other registered clients: ``id``, ``name`` and which standard MTypes each is subscribed to."""
        peers = []
        hub_id = getattr(self.client.client, "_hub_id", None)  # the hub registers itself as a client too
        for cid in self.client.get_registered_clients():
            if cid == hub_id:
                continue
            try:
                subscribed = self.client.get_subscriptions(cid)
            except Exception:  # a client can leave between the two calls
                subscribed = {}
            peers.append({
                "id": cid,
                "name": self.sender_name(cid),
                "mtypes": [m for m in STANDARD_MTYPES if m in subscribed],
            })
        return peers

    def resolve_recipient(self, recipient: str) -> str:
        """A client id from an id or a (case-insensitive) ``samp.name``."""
        peers = self.peers()
        for peer in peers:
            if peer["id"] == recipient:
                return recipient
        for peer in peers:
            if peer["name"].lower() == recipient.lower():
                return peer["id"]
        raise KeyError(recipient)

    def send(self, message: dict[str, Any], recipient: str | None) -> list[str]:
        """Notify ``recipient`` (a client id) or every subscribed peer; the ids notified."""
        if recipient is None:
            return list(self.client.notify_all(message) or [])
        self.client.notify(recipient, message)
        return [recipient]

    def close(self) -> None:
        """Unregister and stop the callback server (quietly when the hub is already gone)."""
        inner = self.client.client
        try:
            if inner is not None and inner.is_registered and self.alive():
                inner.unregister()
        except Exception:  # the hub went away meanwhile; nothing left to undo there
            pass
        finally:
            if inner is not None and inner.is_running:
                inner.stop(timeout=5.0)
            self.client.hub.disconnect()
