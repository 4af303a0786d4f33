"""The README's "Python client and command line" examples run as written against the live server."""

from __future__ import annotations

import re
import shlex

from astropy.io import fits

from tests.client.conftest import REPO
from visivo_client.cli import main


def _section_blocks() -> dict[str, list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python client and command line", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        blocks.setdefault(language, []).append(body)
    return blocks


def test_python_example(live_server, monkeypatch, tmp_path) -> None:
    (code,) = _section_blocks()["python"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VISIVO_URL", live_server.url)
    monkeypatch.setenv("VISIVO_TOKEN", live_server.token)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102  (our own README)
    assert namespace["cube"].shape == (56, 256, 256) and namespace["stats"]["npts"] == 1257
    assert fits.getheader(tmp_path / "ngc5921_mom0.fits")["BUNIT"] == "Jy/beam km/s"
    assert namespace["pv"].header["CUNIT1"] == "arcsec" and len(namespace["bright"]) == 10


def test_shell_examples(live_server, monkeypatch, tmp_path, capsys) -> None:
    (script,) = _section_blocks()["bash"]
    lines = [line for line in script.splitlines() if line.strip()]
    assert len(lines) == 12 and all(line.startswith("visivo ") for line in lines)
    monkeypatch.chdir(tmp_path)
    for line in lines:
        argv = shlex.split(line)[1:] + ["--url", live_server.url, "--token", live_server.token]
        assert main(argv) == 0, (line, capsys.readouterr().err)
    out = capsys.readouterr().out
    for name in ("ngc5921_mom0.fits", "ngc5921_mom1.fits", "ngc5921_fwhm.fits", "ngc5921_pv.fits"):
        assert (tmp_path / name).is_file()
    assert "npts" in out and "1257" in out

