"""Session and dataset registry.

A session is created by an open call without ``X-Visivo-Session`` (or adopted when
the client sends an id we have not seen: single-user behaviour of the reference
backend). Datasets belong to the session that opened them; any other session
gets HTTP 404, exactly as for an unknown dataset.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import NotFound

SESSION_HEADER = "X-Visivo-Session"


def new_session_id() -> str:
    return f"sess_{secrets.token_hex(8)}"


def new_dataset_id() -> str:
    return f"ds_{secrets.token_hex(6)}"


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
    """Thread-safe registry of sessions and their datasets."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.datasets_opened = 0

    def ensure(self, session_id: str | None) -> Session:
        """Return the session with this id, creating it (new id when ``None``/empty)."""
        sid = (session_id or "").strip() or new_session_id()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                session = self._sessions[sid] = Session(sid)
            session.last_seen = time.time()
            return session

    def get(self, session_id: str) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise NotFound("Session not found.")
        return session

    def add_dataset(self, session: Session, dataset: Dataset) -> Dataset:
        with self._lock:
            session.datasets[dataset.dataset_id] = dataset
            self.datasets_opened += 1
        return dataset

    def remove_dataset(self, dataset: Dataset) -> None:
        with self._lock:
            session = self._sessions.get(dataset.session_id)
            if session is not None:
                session.datasets.pop(dataset.dataset_id, None)
        dataset.close()

    def dataset(self, dataset_id: str, session_id: str | None) -> Dataset:
        """The dataset if it belongs to ``session_id``; 404 otherwise (unknown and foreign look alike)."""
        with self._lock:
            session = self._sessions.get(session_id or "")
            dataset = session.datasets.get(dataset_id) if session else None
            if session is not None:
                session.last_seen = time.time()
        if dataset is None:
            raise NotFound(f"Dataset not found: {dataset_id}")
        return dataset

    def stats(self) -> dict[str, Any]:
        with self._lock:
            sessions = list(self._sessions.values())
        kinds: dict[str, int] = {}
        for s in sessions:
            for d in s.datasets.values():
                kinds[d.kind] = kinds.get(d.kind, 0) + 1
        now = time.time()
        return {
            "active_sessions": len(sessions),
            "open_datasets": sum(len(s.datasets) for s in sessions),
            "datasets_by_kind": kinds,
            "datasets_opened_total": self.datasets_opened,
            "oldest_session_age_seconds": round(max((now - s.created_at for s in sessions), default=0.0), 3),
        }

    def active_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close_all(self) -> None:
        with self._lock:
            for s in self._sessions.values():
                for d in s.datasets.values():
                    d.close()
            self._sessions.clear()
