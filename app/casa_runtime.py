"""Offline set-up for the optional CASA toolchain (``casatasks``/``casatools``).

CASA is only a *reference* for our numbers (immoments, imstat, imfit ...): it is the
optional ``casa`` extra, never a core dependency, and nothing here imports it at
module level.

``casaconfig`` reads its configuration exactly once, when ``casatools``/``casatasks``
are first imported: the file named by the ``CASASITECONFIG`` environment variable
(an absolute path) and then the user's ``~/.casa/config.py`` (which wins where both
set a value). Without a config CASA tries to download measures data over the
network and writes ``casa-<date>.log`` into the working directory. We therefore
write a site config that

* points ``measurespath`` at the measures shipped in the ``casadata`` wheel,
* turns off ``measures_auto_update`` and ``data_auto_update`` (no network),
* sends the CASA log and cache into a private work directory,

and point ``CASASITECONFIG`` at it *before* the first CASA import.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

_CONFIG_NAME = "visivo_casasiteconfig.py"
_CASA_MODULES = ("casatasks", "casatools", "casadata")


def casatasks_available() -> bool:
    """Return True when casatasks, casatools and casadata are installed.

    Only looks the packages up (``importlib.util.find_spec``); it does not import
    them, so it is cheap and has no side effects.
    """
    try:
        return all(importlib.util.find_spec(name) is not None for name in _CASA_MODULES)
    except (ImportError, ValueError):
        return False


def _default_workdir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"visivo-casa-{uid}"


def _config_text(measurespath: str, workdir: Path) -> str:
    log = workdir / "casa.log"
    return (
        "# Written by app.casa_runtime.configure_casa_offline: offline CASA.\n"
        f"measurespath = {measurespath!r}\n"
        f"datapath = [{measurespath!r}]\n"
        "measures_auto_update = False\n"
        "data_auto_update = False\n"
        f"logfile = {str(log)!r}\n"
        f"cachedir = {str(workdir)!r}\n"
        "nologger = True\n"
        "nogui = True\n"
        "log2term = False\n"
        "casaconfig_verbose = 0\n"
    )


def configure_casa_offline(workdir: Path | None = None) -> None:
    """Prepare CASA to run offline; call before the first ``import casatasks``.

    Writes ``<workdir>/visivo_casasiteconfig.py`` and sets ``CASASITECONFIG`` to it.
    Idempotent: calling it again (with any ``workdir``) after CASA has been imported
    only checks that the loaded configuration is offline.

    Parameters
    ----------
    workdir : pathlib.Path, optional
        Directory for the config file, the CASA log (``casa.log``) and CASA's cache.
        Default: ``$TMPDIR/visivo-casa-<uid>``.

    Raises
    ------
    ModuleNotFoundError
        If the ``casa`` extra (casatasks, casatools, casadata) is not installed.
    RuntimeError
        If CASA was already imported with a configuration that allows network
        auto-updates (it reads its configuration only once per process).
    """
    if not casatasks_available():
        raise ModuleNotFoundError("CASA is not installed: pip install 'visivo-gpu-server[casa]'")
    if "casaconfig.config" in sys.modules or "casatools" in sys.modules:
        cfg = importlib.import_module("casaconfig.config")
        if getattr(cfg, "measures_auto_update", True) or getattr(cfg, "data_auto_update", True):
            raise RuntimeError(
                "CASA was imported before configure_casa_offline() and its configuration allows "
                "network auto-updates; configure it before the first casatools/casatasks import"
            )
        return
    import casadata  # light: only computes the path of the bundled data

    workdir = (workdir or _default_workdir()).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / _CONFIG_NAME
    text = _config_text(casadata.datapath, workdir)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    os.environ["CASASITECONFIG"] = str(path)


def run_casa_task(name: str, /, **kwargs: Any) -> Any:
    """Run one casatasks task offline and return what it returns.

    Parameters
    ----------
    name : str
        Task name, e.g. ``"immoments"`` or ``"imstat"``.
    **kwargs
        The task's parameters.
    """
    configure_casa_offline()
    casatasks = importlib.import_module("casatasks")
    task = getattr(casatasks, name, None)
    if task is None:
        raise AttributeError(f"casatasks has no task {name!r}")
    return task(**kwargs)
