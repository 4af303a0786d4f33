"""Session and dataset registry.

A session is created by an open call without ``X-Visivo-Session`` (or adopted when
the client sends an id we have not seen: single-user behaviour of the reference
backend). Datasets belong to the session that opened them:

- a request naming that session (or naming none: the token already authenticates the
  caller, and older desktop windows send no session) addresses the dataset by its id;
- a request naming a *different* session gets HTTP 404, exactly as for an unknown
  dataset, and the message says which session was asked.

Sessions idle for longer than ``ttl_seconds`` expire: their datasets are closed (file
handles released) on the next registry call. A session holds at most
``max_datasets`` open datasets, and no dataset is registered when the process is
close to its file-descriptor limit (a reserve stays free for sockets, so the server
keeps accepting connections instead of failing every ``accept``).
"""

from __future__ import annotations

import os
import resource
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import InvalidRequest, NotFound
from app.io.fits_reader import TOO_MANY_FILES

SESSION_HEADER = "X-Visivo-Session"


def new_session_id() -> str:
    return f"sess_{secrets.token_hex(8)}"


def new_dataset_id() -> str:
    return f"ds_{secrets.token_hex(6)}"


def fd_usage() -> tuple[int, int] | None:
    """``(open descriptors, soft limit)`` of this process, or ``None`` where it cannot be read."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    return used, int(soft)


def fd_reserve(limit: int) -> int:
    """Descriptors kept free for sockets and transient files: ``max(16, limit // 8)``."""
    return max(16, limit // 8)


def lookup_error(kind: str, item_id: str, session_id: str | None) -> NotFound:
    """The 404 of an unknown or foreign dataset/task; names the session that was asked, if any."""
    if session_id:
        return NotFound(f"{kind} {item_id} not found in session {session_id}")
    return NotFound(f"{kind} {item_id} not found")


@dataclass
class Dataset:
    """An open dataset: its file, kind and the reader object of that kind."""

    dataset_id: str
    session_id: str
    path: Path
    kind: str  # image | cube | catalogue | vbt ...
    handle: Any  # e.g. FitsImage
    info: dict[str, Any]  # the open response (without valid/error)
    opened_at: float = field(default_factory=time.time)
    #: Last answer of an operation on this dataset, by operation (e.g. ``GET /v1/spectral/linewidth/{id}``).
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def version_key(self) -> str:
        """Identity used in cache keys: dataset id plus file modification time."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            mtime = 0
        return f"{self.dataset_id}:{mtime}"

    def close(self) -> None:
        close = getattr(self.handle, "close", None)
        if close is not None:
            close()


@dataclass
class Session:
    session_id: str
    created_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    datasets: dict[str, Dataset] = field(default_factory=dict)


class SessionRegistry:
    """Thread-safe registry of sessions and their datasets.

    Parameters
    ----------
    ttl_seconds
        Sessions idle (no call naming them or their datasets) longer than this expire; 0 = never.
    max_datasets
        Open datasets one session may hold (``None``: no cap).
    """

    def __init__(self, ttl_seconds: int = 0, max_datasets: int | None = None) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.datasets_opened = 0
        self.ttl_seconds = ttl_seconds
        self.max_datasets = max_datasets
        self.sessions_expired = 0

    def expire(self, now: float | None = None) -> int:
        """Drop sessions idle for longer than the TTL, closing their datasets; the number dropped."""
        if self.ttl_seconds <= 0:
            return 0
        now = time.time() if now is None else now
        with self._lock:
            stale = [s for s in self._sessions.values() if now - s.last_seen > self.ttl_seconds]
            for session in stale:
                del self._sessions[session.session_id]
            self.sessions_expired += len(stale)
        for session in stale:  # file I/O outside the lock
            for dataset in session.datasets.values():
                dataset.close()
        return len(stale)

    def ensure(self, session_id: str | None) -> Session:
        """Return the session with this id, creating it (new id when ``None``/empty)."""
        self.expire()
        sid = (session_id or "").strip() or new_session_id()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                session = self._sessions[sid] = Session(sid)
            session.last_seen = time.time()
            return session

    def get(self, session_id: str) -> Session:
        self.expire()
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise NotFound("Session not found.")
        return session

    def add_dataset(self, session: Session, dataset: Dataset) -> Dataset:
        """Register an opened dataset; refused (and closed) past the per-session cap or near the fd limit."""
        usage = fd_usage()
        if usage is not None and usage[1] - usage[0] < fd_reserve(usage[1]):
            dataset.close()
            raise InvalidRequest(TOO_MANY_FILES)
        with self._lock:
            held = len(session.datasets)
            refused = self.max_datasets is not None and held >= self.max_datasets
            if not refused:
                session.datasets[dataset.dataset_id] = dataset
                session.last_seen = time.time()
                if self._sessions.get(session.session_id) is not session:  # expired meanwhile: bring it back
                    self._sessions[session.session_id] = session
                self.datasets_opened += 1
        if refused:
            dataset.close()
            raise InvalidRequest(
                f"Session {session.session_id} already holds {held} open datasets, the limit "
                f"(VISIVO_MAX_DATASETS_PER_SESSION = {self.max_datasets}); close one with DELETE /v1/datasets/{{id}}."
            )
        return dataset

    def remove_dataset(self, dataset: Dataset) -> None:
        with self._lock:
            session = self._sessions.get(dataset.session_id)
            if session is not None:
                session.datasets.pop(dataset.dataset_id, None)
        dataset.close()

    def dataset(self, dataset_id: str, session_id: str | None) -> Dataset:
        """The dataset by id, if ``session_id`` is its session or ``None``/empty; 404 otherwise.

        Unknown and foreign datasets look alike; the 404 names the session that was asked.
        """
        self.expire()
        sid = (session_id or "").strip()
        with self._lock:
            if sid:
                session = self._sessions.get(sid)
                dataset = session.datasets.get(dataset_id) if session else None
            else:
                dataset = next((s.datasets[dataset_id] for s in self._sessions.values()
                                if dataset_id in s.datasets), None)
                session = self._sessions.get(dataset.session_id) if dataset is not None else None
            if session is not None:
                session.last_seen = time.time()
        if dataset is None:
            raise lookup_error("Dataset", dataset_id, sid or None)
        return dataset

    def stats(self) -> dict[str, Any]:
        self.expire()
        with self._lock:
            sessions = list(self._sessions.values())
        kinds: dict[str, int] = {}
        for s in sessions:
            for d in s.datasets.values():
                kinds[d.kind] = kinds.get(d.kind, 0) + 1
        now = time.time()
        return {
            "sessions_expired_total": self.sessions_expired,
            "active_sessions": len(sessions),
            "open_datasets": sum(len(s.datasets) for s in sessions),
            "datasets_by_kind": kinds,
            "datasets_opened_total": self.datasets_opened,
            "oldest_session_age_seconds": round(max((now - s.created_at for s in sessions), default=0.0), 3),
        }

    def active_count(self) -> int:
        self.expire()
        with self._lock:
            return len(self._sessions)

    def close_all(self) -> None:
        with self._lock:
            for s in self._sessions.values():
                for d in s.datasets.values():
                    d.close()
            self._sessions.clear()
