"""The VisIVO server client: ``Client(url, token)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from astropy.io import fits
from astropy.table import Table

from visivo_client import products
from visivo_client.dataset import Dataset
from visivo_client.regions import parse_region
from visivo_client.tables import Catalogue, VbtTable
from visivo_client.tasks import cancel_task, run_task
from visivo_client.transport import Transport, resolve_token, resolve_url

JS9_ROUTE = "/api/visualization/js9/analysis"
JS9_TASKS = ("imstat", "imfit", "imview", "specflux", "imval")


class Client:
    """A connection to a VisIVO compute server.

    Parameters
    ----------
    url : str, optional
        Server URL; default ``$VISIVO_URL`` or ``http://127.0.0.1:8000``.
    token : str, optional
        API token; default ``$VISIVO_TOKEN``, else the file ``$VISIVO_TOKEN_FILE`` or ``~/.visivo_token``
        (where ``visivo-server`` writes it).
    progress : bool
        Default for the progress bar of heavy calls (tqdm on stderr); each call can override it.
    compression : {"qt-zlib", "none"}
        How arrays should travel (decoded transparently either way).
    timeout : float
        Seconds allowed for each HTTP answer.

    Notes
    -----
    The client keeps the server session (``X-Visivo-Session``) the first open creates, so every
    dataset it opens belongs to one session. Server errors raise :class:`VisivoError` with the
    server's message and HTTP status; an unreachable server raises :class:`VisivoConnectionError`,
    a rejected token :class:`VisivoAuthError`.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, progress: bool = True,
                 compression: str = "qt-zlib", timeout: float = 300.0) -> None:
        if compression not in ("qt-zlib", "none"):
            raise ValueError("compression must be 'qt-zlib' or 'none'")
        self.url = resolve_url(url)
        self.progress = progress
        self.compression = compression
        self._transport = Transport(self.url, resolve_token(token), timeout=timeout)

    def __repr__(self) -> str:
        return f"<visivo_client.Client {self.url} session={self.session_id}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections (the server session stays until it expires)."""
        self._transport.close()

    @property
    def session_id(self) -> str | None:
        return self._transport.session_id

    # ------------------------------------------------------------------ plumbing
    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self._transport.post(route, body)
        self._transport.adopt_session(answer)
        return answer

    def _task(self, operation: str, body: dict[str, Any], progress: bool | None, label: str) -> dict[str, Any]:
        return run_task(self._transport, operation, body, progress=self.progress if progress is None else progress,
                        description=label)

    # ------------------------------------------------------------------ server and files
    def health(self) -> dict[str, Any]:
        """``/v1/health``: backend, devices, slots, cache and task counters."""
        return self._transport.get("/v1/health")

    def ls(self, path: str = "") -> list[dict[str, Any]]:
        """Entries of a server directory (default: the first data root): ``name, path, type, size, is_fits``."""
        return self._transport.get("/v1/files/list", {"path": path or None})["entries"]

    def header(self, path: str) -> fits.Header:
        """Primary FITS header of a server file."""
        return products.header_from_cards(self._transport.post("/v1/files/header", {"path": path})["cards"])

    # ------------------------------------------------------------------ datasets
    def open(self, path: str) -> Dataset:
        """Open a FITS image or cube on the server (2-D, 3-D, 4-D with degenerate axes, gzip)."""
        return Dataset(self, self._post("/v1/datasets/open", {"path": path}))

    def dataset(self, dataset_id: str) -> Dataset:
        """A dataset already open in this client's session (e.g. a baseline-subtracted cube)."""
        return Dataset(self, self._transport.get(f"/v1/datasets/{dataset_id}"))

    def datasets(self) -> list[dict[str, Any]]:
        """The datasets open in this client's session."""
        if not self.session_id:
            return []
        return self._transport.get(f"/v1/sessions/{self.session_id}/datasets")["datasets"]

    def stack(self, datasets: Sequence[Dataset | str], *, method: str = "mean", weight_by: str = "uniform",
              weights: Sequence[float] | None = None, mask: dict[str, Any] | None = None,
              progress: bool | None = None) -> Table:
        """Stack the spatial-mean spectra of N ≥ 2 equal-shape cubes (server task ``stack``).

        ``datasets`` are :class:`Dataset` objects or server paths (opened first). ``method``:
        ``mean``, ``median`` or ``weighted_mean`` (``weight_by`` ``uniform``, ``rms`` = 1/σ², ``peak``;
        explicit ``weights`` override). ``mask``: a noise-aware mask spec applied to every cube (only
        its voxels enter the mean spectra). Returns a table with ``spectral`` (km/s for velocity axes)
        and ``flux`` (``BUNIT``); ``meta`` holds the server's answer (``weights_used``, ``peaks``, ...).
        """
        ids = [(d if isinstance(d, Dataset) else self.open(d)).dataset_id for d in datasets]
        body = {"dataset_ids": ids, "method": method, "weight_by": weight_by, "weights": list(weights or []),
                "mask": mask}
        return products.spectrum_table(self._task("stack", body, progress, "stack"))

    # ------------------------------------------------------------------ tables
    def catalogue(self, path: str | Sequence[str], format: str | None = None) -> Catalogue:  # noqa: A002
        """Open a catalogue (or several files with the same columns, concatenated)."""
        body = {"path": path, "format": format} if isinstance(path, str) else {"paths": list(path), "format": format}
        return Catalogue(self, self._post("/v1/catalogue/open", body))

    def vbt(self, path: str, *, as_cube: bool = False, field: str | None = None) -> VbtTable | Dataset:
        """Open a VisIVO Binary Table (``X.bin`` or ``X.bin.head``).

        With ``as_cube`` a volume's ``field`` (default the first) opens as a cube :class:`Dataset`
        (linear WCS ``X/Y/Z`` with the volume's cell size): slices, moments, PV... work on it.
        """
        answer = self._post("/v1/vbt/open", {"path": path, "as_cube": as_cube or None, "field": field})
        return Dataset(self, answer) if as_cube else VbtTable(self, answer)

    # ------------------------------------------------------------------ tasks
    def tasks(self) -> list[dict[str, Any]]:
        """Live server tasks: ``task_id``, ``operation``, ``status``, ``progress``, ``age_seconds``."""
        return self._transport.get("/v1/tasks")["tasks"]

    def task(self, task_id: str) -> dict[str, Any]:
        """One task's status (and result once done)."""
        return self._transport.get(f"/v1/tasks/{task_id}")

    def cancel(self, task_id: str) -> bool:
        """Cancel and remove a task; ``False`` if the server no longer knew it."""
        return cancel_task(self._transport, task_id)

    # ------------------------------------------------------------------ JS9 / CASA-style analysis
    def js9(self, task: str, path: str, region: str | dict[str, Any] | None = None, **parameters: Any) -> dict:
        """Run a JS9 analysis task and return the server's answer (``success, task, result, execution_time_sec``).

        ``region`` is a JS9 region object or DS9-style text (``circle(128,128,20)``, ``box(x,y,w,h[,a])``,
        ``ellipse(x,y,rx,ry[,a])``, ``polygon(x1,y1,...)``, ``point(x,y)``) in 1-based image pixels.
        ``parameters`` are the task's (``engine="casa"``, ``n_levels=...``, ``box="x1,y1,x2,y2"``, ...).
        """
        if task not in JS9_TASKS:
            raise ValueError(f"task must be one of {', '.join(JS9_TASKS)}")
        body = {"task": task, "image_path": path, "region": parse_region(region), "parameters": parameters}
        return self._transport.post(JS9_ROUTE, body)

    def imstat(self, path: str, region: str | dict[str, Any] | None = None, **parameters: Any) -> dict:
        """CASA ``imstat`` statistics (``result["DATA"]``: npts, sum, mean, sigma, rms, min, max, flux, ...)."""
        return self.js9("imstat", path, region, **parameters)

    def imfit(self, path: str, region: str | dict[str, Any] | None = None, **parameters: Any) -> dict:
        """2-D Gaussian fit (``result["fit"]``)."""
        return self.js9("imfit", path, region, **parameters)

    def imview(self, path: str, region: str | dict[str, Any] | None = None, **parameters: Any) -> dict:
        """Contours (``result["contour_levels"]``, ``result["contour_paths"]``)."""
        return self.js9("imview", path, region, **parameters)

    contours = imview

    def specflux(self, path: str, region: str | dict[str, Any] | None = None, **parameters: Any) -> dict:
        """Flux in a region (``result["flux"]``)."""
        return self.js9("specflux", path, region, **parameters)

    def imval(self, path: str, region: str | dict[str, Any] | None = None, **parameters: Any) -> dict:
        """Pixel values (``result["values"]``, ``shape``, ``mask``)."""
        return self.js9("imval", path, region, **parameters)
