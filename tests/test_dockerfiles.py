"""Issue 11, finding 11: the Docker images, read as a user would deploy them (Docker itself is not run here).

Both images: JS9 installed by npm in a build stage and packaged (pyproject package-data), the token
where the desktop client looks, the README's exact build and run lines. GPU image: exactly one CUDA
runtime (the pip wheels; no nvidia/cuda base image). CPU image: no CUDA, CPU backend.
"""

from __future__ import annotations

import fnmatch
import glob
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {"cuda": ROOT / "Dockerfile.cuda", "cpu": ROOT / "Dockerfile.cpu"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` per instruction: comments dropped, continuation lines joined."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                         if not line.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
    return out


def stages(path: Path) -> list[dict]:
    """One dict per build stage: ``base``, ``name`` and its instructions."""
    result: list[dict] = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            result.append({"base": parts[0], "name": name, "steps": []})
        else:
            result[-1]["steps"].append((keyword, args))
    return result


def env_of(stage: dict) -> dict[str, str]:
    env = {}
    for keyword, args in stage["steps"]:
        if keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


@pytest.mark.parametrize("kind", list(IMAGES))
def test_js9_is_installed_by_npm_in_a_build_stage_and_reaches_the_image(kind: str) -> None:
    built = stages(IMAGES[kind])
    js9 = next(s for s in built if s["name"] == "js9")
    assert js9["base"].startswith("node:")  # npm lives only in the build stage
    assert any(k == "RUN" and "scripts/install_js9.sh" in a for k, a in js9["steps"])
    build = next(s for s in built if s["name"] == "build")
    copies = [a for k, a in build["steps"] if k == "COPY"]
    assert "--from=js9 /src/app/static/vendor/js9 ./app/static/vendor/js9" in copies
    steps = build["steps"]
    vendored = steps.index(("COPY", "--from=js9 /src/app/static/vendor/js9 ./app/static/vendor/js9"))
    installed = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "pip install" in a)
    assert vendored < installed  # JS9 is in the tree when pip builds the package (package data)
    final = built[-1]
    assert final["name"] is None
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final["steps"]
    assert not any("npm" in a or "node" in a for _, a in final["steps"])
    assert final["steps"][-1] == ("CMD", '["/opt/venv/bin/visivo-server"]')


def test_package_data_carries_the_vendored_js9(tmp_path: Path) -> None:
    """The pyproject globs, applied as setuptools applies them, pick up an installed JS9 tree."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["app"]
    app = tmp_path / "app"
    needed = ["static/vendor/js9/js9.min.js", "static/vendor/js9/js9support.min.js", "static/vendor/js9/js9.css",
              "static/vendor/js9/astroemw.wasm", "static/vendor/js9/images/icons/zoom.png",
              "static/js9/index.html", "demo_data/ngc5921_hi_cube.fits.gz"]
    for rel in needed:
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_bytes(b"")
    matched = {str(Path(p).relative_to(app)) for pattern in patterns
               for p in glob.glob(str(app / pattern), recursive=True) if Path(p).is_file()}
    assert set(needed) <= matched


def test_dockerignore_keeps_local_builds_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", "app/static/vendor", ".git"):
        assert entry in ignored
    assert not any(fnmatch.fnmatch("app/js9_router.py", p) for p in ignored)


def test_gpu_image_has_one_cuda_runtime() -> None:
    built = stages(IMAGES["cuda"])
    for stage in built:
        assert "cuda" not in stage["base"].lower(), stage["base"]  # no nvidia/cuda base image
    final = built[-1]
    assert final["base"] == next(s for s in built if s["name"] == "build")["base"]  # the venv's Python matches
    install = " ".join(a for k, a in built[1]["steps"] if k == "RUN")
    assert '".[gpu]"' in install
    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert all("cuda12" in dep or "cu12" in dep for dep in gpu)  # one CUDA major, from the wheels
    env = env_of(final)
    assert env["VISIVO_BACKEND"] == "gpu" and "compute" in env["NVIDIA_DRIVER_CAPABILITIES"]
    assert not any("apt-get install" in a and "cuda" in a for _, a in final["steps"])


def test_cpu_image_has_no_cuda() -> None:
    built = stages(IMAGES["cpu"])
    text = IMAGES["cpu"].read_text().lower()
    assert "[gpu]" not in text and "cupy" not in text and "nvidia" not in text
    assert all("cuda" not in s["base"].lower() for s in built)
    assert env_of(built[-1])["VISIVO_BACKEND"] == "cpu"
    assert built[-1]["base"] == built[1]["base"]


@pytest.mark.parametrize("kind", list(IMAGES))
def test_token_where_the_desktop_client_looks(kind: str) -> None:
    env = env_of(stages(IMAGES[kind])[-1])
    assert env["VISIVO_TOKEN_FILE"] == "/root/.visivo_token"  # ~/.visivo_token inside the image
    assert env["VISIVO_HOST"] == "0.0.0.0"


def _docker_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Docker\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


@pytest.mark.parametrize(("kind", "tag"), [("cuda", "visivo-gpu-server"), ("cpu", "visivo-cpu-server")])
def test_readme_documents_exact_build_and_run_lines(kind: str, tag: str) -> None:
    section = _docker_section()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", section, flags=re.S))
    commands = re.sub(r"\\\n\s*", " ", blocks)
    assert f"docker build -f Dockerfile.{kind} -t {tag} ." in commands
    run = next(line for line in commands.splitlines() if line.startswith("docker run") and line.rstrip().endswith(tag))
    assert ("--gpus all" in run) == (kind == "cuda")
    assert "-p 127.0.0.1:8000:8000" in run  # published on the host's loopback only
    # the host's ~/.visivo_token (the desktop client reads it) is the server's token
    assert '-e VISIVO_TOKEN="$(cat ~/.visivo_token)"' in run
    assert "-e VISIVO_DATA_ROOTS=/data" in run and ":/data:ro" in run
    assert "~/.visivo_token" in blocks and "umask 077" in blocks  # the token file is created first, private
