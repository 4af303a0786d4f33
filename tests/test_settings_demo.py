"""Settings defaults/environment parsing and the deterministic demo tables."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from app.demo import DEMO_DIR, write_demo_tables
from app.settings import DEMO_DATA_ROOT, Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("VISIVO_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert (s.host, s.port, s.workers, s.backend) == ("127.0.0.1", 8000, 4, "auto")
    assert s.effective_heavy_slots == 3 and s.effective_linewidth_chunks == 4
    assert s.task_ttl_seconds == 3600 and s.product_cache_capacity == 64 and s.linewidth_snr == 3.0
    assert s.token_file == Path.home() / ".visivo_token"
    assert s.data_root_paths == (DEMO_DATA_ROOT,)


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("VISIVO_DATA_ROOTS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    monkeypatch.setenv("VISIVO_WORKERS", "1")
    monkeypatch.setenv("VISIVO_BACKEND", "cpu")
    monkeypatch.setenv("VISIVO_LINEWIDTH_CHUNKS", "7")
    s = Settings()
    assert s.data_root_paths == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    assert s.effective_heavy_slots == 1 and s.effective_linewidth_chunks == 7 and s.backend == "cpu"
    monkeypatch.setenv("VISIVO_BACKEND", "quantum")
    with pytest.raises(ValueError):
        Settings()


def test_demo_tables_are_reproducible(tmp_path: Path) -> None:
    written = write_demo_tables(tmp_path)
    for path in written:
        assert filecmp.cmp(path, DEMO_DIR / path.name, shallow=False), path.name
    head = (DEMO_DIR / "galaxies.bin.head").read_text().split()
    assert head[:4] == ["float", "7", "2000", "little"]
    assert (DEMO_DIR / "galaxies.bin").stat().st_size == 7 * 2000 * 4
