"""The SAMP inbox (messages received from peers or the bridge) and outbox (messages waiting for a hub).

Both are bounded (oldest dropped first) and thread-safe: the SAMP client's callback threads add to
the inbox while routes read it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Any

DEFAULT_CAPACITY = 1000


class Inbox:
    """Received messages, each with an increasing ``id``.

    A message with a ``session_id`` is visible to that session only; others to every session.
    A session that pulls without ``since`` gets what arrived after its previous pull.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._messages: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._cursors: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.received_total = 0

    def add(self, mtype: str, params: Any, *, kind: str, sender_id: str = "", sender_name: str = "",
            msg_id: str | None = None, session_id: str | None = None) -> dict[str, Any]:
        """Append a message; ``kind`` is ``notification``, ``call`` (SAMP) or ``bridge`` (``/receive``)."""
        with self._lock:
            message = {
                "id": next(self._ids),
                "mtype": mtype,
                "params": params,
                "kind": kind,
                "sender_id": sender_id,
                "sender_name": sender_name,
                "msg_id": msg_id,
                "session_id": session_id,
                "received_at": time.time(),
            }
            self._messages.append(message)
            self.received_total += 1
            return dict(message)

    def pull(self, session_id: str | None, *, since: int | None = None, limit: int = 100) -> dict[str, Any]:
        """Messages after ``since`` (or after the session's last pull) visible to ``session_id``."""
        with self._lock:
            start = since if since is not None else (self._cursors.get(session_id, 0) if session_id else 0)
            visible = [
                dict(m) for m in self._messages
                if m["id"] > start and (m["session_id"] is None or m["session_id"] == session_id)
            ]
            page = visible[: max(0, limit)]
            last = page[-1]["id"] if page else start
            if session_id:
                self._cursors[session_id] = max(self._cursors.get(session_id, 0), last)
            return {"messages": page, "last_id": last, "more": len(visible) > len(page)}

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)


class Outbox:
    """Messages to send that wait for a hub connection (flushed on (re)connect, or pulled by a bridge)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._messages: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, message: dict[str, Any], *, recipient: str | None, session_id: str | None) -> dict[str, Any]:
        """Queue a SAMP message (``{"samp.mtype", "samp.params"}``) for ``recipient`` (``None``: all peers)."""
        with self._lock:
            entry = {
                "id": next(self._ids),
                "mtype": message["samp.mtype"],
                "params": message["samp.params"],
                "recipient": recipient,
                "session_id": session_id,
                "queued_at": time.time(),
            }
            self._messages.append(entry)
            return dict(entry)

    def take(self) -> list[dict[str, Any]]:
        """Remove and return every queued message, oldest first."""
        with self._lock:
            items = list(self._messages)
            self._messages.clear()
            return items

    def peek(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in self._messages]

    def put_back(self, items: list[dict[str, Any]]) -> None:
        """Return messages that could not be delivered to the front of the queue."""
        with self._lock:
            for item in reversed(items):
                self._messages.appendleft(item)

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)
