"""Issue 11, finding 1: ``files/list`` of ``/`` or of a path above the roots lists the roots."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.settings import DEMO_DATA_ROOT


def _expected_roots(settings) -> list[str]:
    out = Path(settings.output_dir).resolve()
    return [str(DEMO_DATA_ROOT.resolve()), str(Path(settings.data_root_paths[1])), str(out)]


@pytest.mark.parametrize("kind", ["slash", "slashes", "demo_up", "data_up", "relative_up", "deep_up"])
def test_above_roots_lists_the_roots(client: TestClient, settings, data_dir: Path, kind: str) -> None:
    path = {
        "slash": "/",
        "slashes": "//",
        "demo_up": f"{DEMO_DATA_ROOT}/..",
        "data_up": f"{data_dir}/..",
        "relative_up": "..",
        "deep_up": "../../../../../../../../..",
    }[kind]
    body = client.get("/v1/files/list", params={"path": path}).json()
    assert body["valid"] is True, body
    assert body["current_path"] == "/"
    entries = body["entries"]
    assert [e["path"] for e in entries] == _expected_roots(settings)
    for entry in entries:
        assert entry["type"] == "directory" and entry["is_fits"] is False
        assert entry["name"] == entry["path"] and Path(entry["path"]).is_absolute()


def test_above_roots_reveals_no_siblings(client: TestClient, data_dir: Path) -> None:
    (data_dir.parent / "sibling_secret").mkdir()
    (data_dir.parent / "secret.fits").write_bytes(b"SIMPLE")
    body = client.get("/v1/files/list", params={"path": f"{data_dir}/.."}).json()
    names = [e["name"] for e in body["entries"]]
    assert not any("secret" in n for n in names)
    # the sibling itself is outside the roots: "not found" as before
    assert client.get("/v1/files/list", params={"path": str(data_dir.parent / "sibling_secret")}).json() == {
        "valid": False, "error": "Directory not found."}


def test_root_entries_navigate(client: TestClient, data_dir: Path) -> None:
    (data_dir / "cube.fits").write_bytes(b"")
    top = client.get("/v1/files/list", params={"path": "/"}).json()
    data_entry = next(e for e in top["entries"] if e["path"] == str(data_dir))
    inside = client.get("/v1/files/list", params={"path": data_entry["path"]}).json()
    assert inside["current_path"] == str(data_dir)
    assert [e["name"] for e in inside["entries"]] == ["cube.fits"]
    # a client that joins current_path "/" with the absolute name still lands in the root
    joined = client.get("/v1/files/list", params={"path": "/" + data_entry["name"]}).json()
    assert joined["current_path"] == str(data_dir)


def test_unrelated_paths_still_not_found(client: TestClient) -> None:
    for path in ("/etc", "/usr/..x", "/etc/../usr"):
        body = client.get("/v1/files/list", params={"path": path}).json()
        assert body == {"valid": False, "error": "Directory not found."}, path
