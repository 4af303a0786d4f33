"""JS9: the CASA-style analysis API and the JS9 web viewer.

API (token required, ``X-Visivo-Token``, like every ``/v1`` route; its own error bodies, see
:mod:`app.services.js9.errors`):

- ``POST /api/visualization/js9/analysis`` — the analysis contract (``js9-casa-analysis-api``);
- ``GET /api/visualization/js9/file?path=…`` — the raw FITS file (confined to the data roots) for
  the viewer to display;
- ``GET /api/visualization/js9/status`` — engines, tasks, cache counters, whether JS9 is installed.

Viewer (no token: static files only, nothing secret; every call the page makes carries the token):

- ``GET /js9/`` — the viewer page (``app/static/js9``), or HTTP 503 with instructions when JS9
  itself has not been installed (``scripts/install_js9.sh`` puts the npm package ``js9`` into
  ``app/static/vendor/js9``; nothing is fetched from a CDN at run time);
- ``GET /js9/vendor/…`` — the JS9 files; ``GET /js9/<file>`` — the page's own files.

Include with ``app.include_router(js9.router)`` — *not* among the routers that get the token
dependency globally, because the static viewer must load without it.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from app.auth import require_token
from app.deps import RuntimeDep, session_id_of
from app.operations.defs._js9 import Js9Detail, Js9Failure, Js9Request, Js9Success
from app.operations.models import ErrorBody
from app.responses import SafeJSONResponse
from app.services.js9 import analysis
from app.services.js9.errors import Js9NotFound

STATIC_ROOT = Path(__file__).resolve().parent.parent / "static"
VIEWER_DIR = STATIC_ROOT / "js9"
VENDOR_DIR = STATIC_ROOT / "vendor" / "js9"
#: A file whose presence means JS9 is installed.
JS9_MARKER = "js9.min.js"
API_PREFIX = "/api/visualization/js9"

mimetypes.add_type("application/wasm", ".wasm")

router = APIRouter(tags=["js9"])


def js9_installed() -> bool:
    """True when ``scripts/install_js9.sh`` has put JS9 into ``app/static/vendor/js9``."""
    return (VENDOR_DIR / JS9_MARKER).is_file()


ANALYSIS_RESPONSES: dict[int | str, dict] = {
    400: {"model": Js9Detail, "description": "Invalid task, region, parameter, engine, or not a FITS file."},
    401: {"model": ErrorBody, "description": "Missing or wrong `X-Visivo-Token`."},
    404: {"model": Js9Detail, "description": "Image file not found (or outside the data roots)."},
    422: {"model": Js9Detail, "description": "The body is not an object with string `task` and `image_path`."},
    500: {"model": Js9Failure, "description": "The task ran and failed."},
}


#: The body is read raw (its errors have JS9 bodies); its schema is documented here.
ANALYSIS_BODY = {"requestBody": {"required": True,
                                 "content": {"application/json": {"schema": Js9Request.model_json_schema()}}}}


@router.post(f"{API_PREFIX}/analysis", dependencies=[Depends(require_token)], response_model=Js9Success,
             responses=ANALYSIS_RESPONSES, openapi_extra=ANALYSIS_BODY)
async def js9_analysis(request: Request, runtime: RuntimeDep) -> Response:
    """Run ``imstat``, ``imfit``, ``imview``, ``specflux`` or ``imval`` on a FITS image.

    The body is read raw so that its errors answer with the JS9 API's own bodies (see the schema).
    The header ``X-JS9-Cache: hit|miss`` says whether the product cache answered.
    """
    answer = await analysis.handle(runtime, await request.body(), session_id_of(request))
    return SafeJSONResponse(answer.body, status_code=answer.status, headers={"X-JS9-Cache": answer.cache})


@router.get(f"{API_PREFIX}/file", dependencies=[Depends(require_token)],
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The FITS file."},
                       404: {"model": Js9Detail, "description": "Not found (or outside the data roots)."}})
async def js9_file(runtime: RuntimeDep, path: str = "") -> Response:
    """The FITS file itself (plain or gzip), for ``JS9.Load`` in the viewer."""
    try:
        resolved = analysis.resolve_image(path, runtime.roots)
    except Js9NotFound as exc:
        return SafeJSONResponse({"detail": exc.message}, status_code=404)
    return FileResponse(resolved, media_type="application/octet-stream", filename=resolved.name)


@router.get(f"{API_PREFIX}/status", dependencies=[Depends(require_token)])
async def js9_status(runtime: RuntimeDep) -> Response:
    """Engines, tasks, cache counters and whether the JS9 viewer files are installed."""
    body = analysis.status(runtime)
    body["js9_installed"] = js9_installed()
    return SafeJSONResponse(body)


NOT_INSTALLED_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>JS9 viewer not installed</title></head>
<body style="font-family: sans-serif; max-width: 46em; margin: 3em auto;">
<h1>JS9 is not installed</h1>
<p>The JS9 viewer page needs the JS9 library, installed from the npm package <code>js9</code> into
<code>app/static/vendor/js9</code>. It is not fetched from the internet at run time.</p>
<p>Install it once (needs <code>npm</code>) and reload this page:</p>
<pre>make js9          # or: scripts/install_js9.sh</pre>
<p>The analysis API (<code>POST /api/visualization/js9/analysis</code>) works without it.</p>
</body></html>
"""


def _static_file(base: Path, relative: str) -> Response:
    """A file under ``base`` (no dot-files, no escaping the directory), 404 otherwise."""
    parts = [p for p in relative.split("/") if p]
    if any(p.startswith(".") or p in ("..", "node_modules") for p in parts):
        return Response("Not found", status_code=404, media_type="text/plain")
    try:
        target = (base / "/".join(parts)).resolve(strict=True)
        root = base.resolve(strict=True)
    except (OSError, RuntimeError):
        return Response("Not found", status_code=404, media_type="text/plain")
    if not target.is_file() or root not in target.parents:
        return Response("Not found", status_code=404, media_type="text/plain")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media_type)


@router.get("/js9", include_in_schema=False)
async def js9_redirect() -> Response:
    return RedirectResponse("/js9/", status_code=307)


@router.get("/js9/", include_in_schema=False)
async def js9_index() -> Response:
    """The viewer page, or HTTP 503 with installation instructions when JS9 is missing."""
    if not js9_installed():
        return HTMLResponse(NOT_INSTALLED_PAGE, status_code=503)
    return _static_file(VIEWER_DIR, "index.html")


@router.get("/js9/{path:path}", include_in_schema=False)
async def js9_static(path: str) -> Response:
    """The page's own files, or JS9's under ``vendor/``."""
    if path == "vendor" or path.startswith("vendor/"):
        if not js9_installed():
            return Response("JS9 is not installed (run scripts/install_js9.sh)", status_code=404,
                            media_type="text/plain")
        return _static_file(VENDOR_DIR, path[len("vendor/"):])
    return _static_file(VIEWER_DIR, path)
