"""The ``visivo`` command line against the live server: outputs, saved FITS files and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from astropy.io import fits

from tests.client.conftest import CUBE, IMAGE, REPO, free_port
from tests.client.refs import cube_data, cube_header, cube_wcs, image_data, same_celestial, wire
from visivo_client.cli import build_parser, main
from visivo_client.products import quiet_wcs
from visivo_client.transport import Transport

COMMANDS = ["health", "ls", "header", "open", "moment", "linewidth", "pv", "baseline", "noise", "imstat", "tasks",
            "region-spectrum", "region-stats"]


@pytest.fixture
def visivo(live_server, capsys):
    """``visivo(*args)`` → (exit code, stdout, stderr), run in-process with the live server's URL and token."""

    def run(*args: str, token: str | None = None) -> tuple[int, str, str]:
        code = main([*args, "--url", live_server.url, "--token", token or live_server.token])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_console_script_is_declared_and_runs(live_server) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["visivo"] == "visivo_client.cli:run"
    assert "visivo_client*" in project["tool"]["setuptools"]["packages"]["find"]["include"]
    done = subprocess.run([sys.executable, "-m", "visivo_client.cli", "health", "--json", "--url", live_server.url,
                           "--token", live_server.token], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_common_options(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0 and f"usage: visivo {command}" in text
    assert all(option in text for option in ("--url", "--token", "--json"))


def test_health_ls_header_open(visivo) -> None:
    code, out, _ = visivo("health", "--json")
    assert code == 0 and json.loads(out)["backend"] == "cpu"
    code, out, _ = visivo("ls")
    assert code == 0 and CUBE in out and IMAGE in out
    code, out, _ = visivo("ls", "--json")
    assert {e["name"] for e in json.loads(out)} >= {CUBE, IMAGE, "catalogue_sky.csv"}
    code, out, _ = visivo("header", CUBE, "--json")
    cards = json.loads(out)
    assert code == 0 and fits.Header.fromstring("".join(cards))["CDELT3"] == cube_header()["CDELT3"]
    code, out, _ = visivo("open", CUBE)
    assert code == 0 and "(56, 256, 256)" in out and "VRAD" in out
    info = json.loads(visivo("open", CUBE, "--json")[1])
    assert (info["width"], info["height"], info["depth"]) == (256, 256, 56) and info["bunit"] == "Jy/beam"


def test_moment_writes_fits_with_the_cubes_celestial_wcs(visivo, raw_for, tmp_path) -> None:
    out = tmp_path / "mom0.fits"
    code, text, err = visivo("moment", CUBE, "--order", "0", "--channels", "5:50", "-o", str(out))
    assert code == 0 and f"written to {out}" in text and "100%" in err  # progress shown on long work
    hdu = fits.open(out)[0]
    same_celestial(quiet_wcs(hdu.header), cube_wcs().celestial)
    raw = raw_for()
    ds = raw.post("/v1/datasets/open", {"path": CUBE})
    raw.http.headers["X-Visivo-Session"] = ds["session_id"]
    answer = raw.post("/v1/products/moment", {"dataset_id": ds["dataset_id"], "order": 0, "channel_start": 5,
                                              "channel_end": 50})
    np.testing.assert_array_equal(hdu.data.ravel(), wire(answer["data_base64"]))
    assert hdu.header["BUNIT"] == "Jy/beam km/s" and any("channels=5..50" in h for h in hdu.header["HISTORY"])
    casa = tmp_path / "mom1.fits"
    code, text, _ = visivo("moment", CUBE, "--order", "1", "--channels", "5:50", "--convention", "casa",
                           "--threshold", "0.01", "-o", str(casa), "--json", "-q")
    summary = json.loads(text)
    assert code == 0 and summary["convention"] == "casa" and summary["output"] == str(casa)
    velocities = fits.getdata(casa)
    assert np.nanmin(velocities) == pytest.approx(summary["range_min"], rel=1e-6)


def test_linewidth_and_pv_files(visivo, tmp_path) -> None:
    lw = tmp_path / "lw.fits"
    code, text, _ = visivo("linewidth", CUBE, "--channels", "5:50", "-o", str(lw), "--json", "-q")
    summary = json.loads(text)
    data = fits.getdata(lw)
    assert code == 0 and fits.getheader(lw)["BUNIT"] == "km/s"
    assert np.isfinite(data).sum() == summary["fwhm_valid_pixels"]
    assert np.nanmax(data) == pytest.approx(summary["fwhm_range_max"], rel=1e-6)
    same_celestial(quiet_wcs(fits.getheader(lw)), cube_wcs().celestial)
    pv = tmp_path / "pv.fits"
    code, text, _ = visivo("pv", CUBE, "--path", "100,128:150,128", "--width", "1", "-o", str(pv))
    assert code == 0 and "arcsec" in text and "km/s" in text
    np.testing.assert_allclose(fits.getdata(pv), cube_data()[:, 128, 100:151], rtol=1e-6, equal_nan=True)
    header = fits.getheader(pv)
    assert header["CDELT1"] == pytest.approx(15.0, rel=1e-9) and header["CUNIT2"] == "km/s"


def test_baseline_noise_imstat(visivo) -> None:
    code, text, _ = visivo("baseline", CUBE, "--line-free", "0:4,51:55", "--order", "1", "--json", "-q")
    result = json.loads(text)
    assert code == 0 and result["fit_channels"] == [0, 1, 2, 3, 4, 51, 52, 53, 54, 55]
    written = np.asarray(fits.getdata(result["output_path"]), dtype=np.float64).reshape(56, 256, 256)
    channels = np.array(result["fit_channels"])
    spectrum = cube_data()[:, 100, 140].astype(np.float64)
    line = np.polyval(np.polyfit(channels, spectrum[channels], 1), np.arange(56))
    np.testing.assert_allclose(written[:, 100, 140], spectrum - line, atol=2e-6)
    code, text, _ = visivo("noise", CUBE, "--channels", "0:3", "--box", "0:127,0:255", "--json")
    noise = json.loads(text)
    plane = cube_data()[1, :, :128].astype(np.float64)
    plane = plane[np.isfinite(plane)]
    assert noise["sigma"][1] == pytest.approx(1.4826 * np.median(np.abs(plane - np.median(plane))), rel=1e-5)
    code, text, _ = visivo("noise", CUBE, "--channels", "0:1")
    assert code == 0 and "MAD" in text and len(text.strip().splitlines()) == 3
    code, text, _ = visivo("imstat", IMAGE, "--region", "circle(128,128,20)", "--json")
    stats = json.loads(text)["result"]["DATA"]
    yy, xx = np.indices(image_data().shape)
    inside = image_data()[(xx - 127) ** 2 + (yy - 127) ** 2 <= 400]
    assert code == 0 and stats["npts"] == inside.size and stats["sum"] == pytest.approx(inside.sum(), rel=1e-9)
    code, text, _ = visivo("imstat", IMAGE)
    assert code == 0 and "npts" in text and str(image_data().size) in text


def test_tasks_command(visivo, raw_for) -> None:
    raw = raw_for()
    ds = raw.post("/v1/datasets/open", {"path": CUBE})
    raw.http.headers["X-Visivo-Session"] = ds["session_id"]
    task_id = raw.post("/v1/tasks/moment", {"dataset_id": ds["dataset_id"], "order": 8})["task_id"]
    code, text, _ = visivo("tasks", "--json")
    assert code == 0 and task_id in [t["task_id"] for t in json.loads(text)]
    code, text, _ = visivo("tasks", task_id)
    assert code == 0 and text.startswith(f"{task_id} moment")
    code, text, _ = visivo("tasks", task_id, "--cancel")
    assert code == 0 and "cancelled" in text and raw.get(f"/v1/tasks/{task_id}").status_code == 404
    code, _, err = visivo("tasks", task_id)
    assert code == 1 and f"Task {task_id} not found" in err


def test_exit_codes(visivo, tmp_path, capsys) -> None:
    code, _, err = visivo("open", "no_such_cube.fits")
    assert code == 1 and "File not found." in err
    code, _, err = visivo("moment", CUBE, "--order", "7", "-o", str(tmp_path / "x.fits"))
    assert code == 1 and "Unsupported moment order 7" in err
    code, _, err = visivo("health", token="wrong-token")
    assert code == 3 and "Invalid token" in err
    assert main(["health", "--url", f"http://127.0.0.1:{free_port()}", "--token", "t"]) == 3
    assert "Cannot reach" in capsys.readouterr().err
    existing = tmp_path / "exists.fits"
    existing.write_text("keep me")
    for args in (["moment", CUBE, "--order", "0", "--channels", "5-50", "-o", str(tmp_path / "y.fits")],
                 ["moment", CUBE, "--order", "0", "-o", str(existing)],
                 ["pv", CUBE, "--path", "1,2", "-o", str(tmp_path / "z.fits")],
                 ["imstat", IMAGE, "--region", "circle(1,2)"]):
        with pytest.raises(SystemExit) as usage:
            visivo(*args)
        assert usage.value.code == 2
    assert existing.read_text() == "keep me"
    with pytest.raises(SystemExit) as missing_option:
        main(["moment", CUBE])
    assert missing_option.value.code == 2
    code, _, err = visivo("moment", CUBE, "--order", "0", "-o", str(tmp_path / "no" / "dir.fits"), "-q")
    assert code == 4 and "cannot write" in err


def test_ctrl_c_exit_code_and_cancel(visivo, raw_for, monkeypatch, tmp_path) -> None:
    real_get = Transport.get
    seen: list[str] = []

    def interrupted(self, route, params=None):
        if route.startswith("/v1/tasks/task_"):
            seen.append(route.rsplit("/", 1)[1])
            raise KeyboardInterrupt
        return real_get(self, route, params)

    monkeypatch.setattr(Transport, "get", interrupted)
    code, _, err = visivo("linewidth", CUBE, "--channels", "4:53", "--snr", "0", "-o", str(tmp_path / "lw.fits"))
    monkeypatch.undo()
    assert code == 130 and "interrupted" in err and not (tmp_path / "lw.fits").exists()
    assert raw_for().get(f"/v1/tasks/{seen[0]}").status_code == 404
