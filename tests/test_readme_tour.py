"""Issue 11, finding 9: the README's quick tour runs as written against a live server."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    nxt = text.find("\n## ", start + 1)
    return text[start: nxt if nxt >= 0 else len(text)]


def tour_block() -> str:
    """The first ```bash block of the "Quick tour" section."""
    match = re.search(r"```bash\n(.*?)```", _section("Quick tour"), flags=re.S)
    assert match, "the Quick tour has a bash block"
    return match.group(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_server(tmp_path: Path) -> typing.Iterator[tuple[str, Path]]:
    """``python -m app.cli`` on a free port, HOME = tmp_path (so the token lands in ``~/.visivo_token``)."""
    port = _free_port()
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIVO_")}
    env.update(HOME=str(home), VISIVO_OUTPUT_DIR=str(tmp_path / "out"), VISIVO_BACKEND="cpu",
               VISIVO_TOKEN_FILE=str(home / ".visivo_token"))
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
            if (home / ".visivo_token").exists():
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                pytest.fail("server did not start in 60 s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", home
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_tour_names_its_tools() -> None:
    section = _section("Quick tour")
    assert "`curl`" in section and "`python3`" in section
    block = tour_block()
    assert "$SID" in block and "$DS" in block
    assert re.search(r"^DS=\$\(", block, flags=re.M) and re.search(r"SID=\$\(", block)  # ids are captured


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
def test_tour_runs_as_written(live_server: tuple[str, Path]) -> None:
    url, home = live_server
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIVO_")}
    env.update(HOME=str(home), VISIVO_URL=url,
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", tour_block()], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[0] == "True"  # health ok
    assert re.fullmatch(r"dataset ds_\w+ in session \S+", lines[-2]), lines
    valid, *unit, peak = lines[-1].split()
    assert valid == "True" and " ".join(unit) == "Jy/beam km/s"
    assert 1.0 < float(peak) < 3.0  # NGC 5921 peak integrated intensity, channels 5..50 (Jy/beam km/s)


def test_legacy_section_names_the_setting() -> None:
    from app.settings import Settings

    section = _section("Older desktop clients")
    assert "VISIVO_TASK_STATUS_STYLE=legacy" in section
    assert "`completed`" in section and "`failed`" in section
    assert Settings(task_status_style="legacy").task_status_style == "legacy"
