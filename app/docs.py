"""The browsable API: ``/docs`` (Swagger UI), ``/redoc`` (ReDoc) and ``/openapi.json``, served offline.

The Swagger UI and ReDoc assets come from the ``fastapi-offline`` package (installed from PyPI
with the server), so the pages load without any CDN. The pages and the schema are token-free —
the schema holds no data — and declare an API-key security scheme, so the page's *Authorize*
button sends ``X-Visivo-Token`` (and, optionally, ``X-Visivo-Session``) with "Try it out".
``/v1/openapi.json`` (token required) keeps working for older clients.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from app.auth import TOKEN_HEADER, require_token
from app.services.sessions import SESSION_HEADER

ASSETS_URL = "/docs-assets"
DESCRIPTION = f"""
Compute server for radio-astronomy cubes and images (VisIVO desktop client, JS9 viewers).

**Authentication.** Every route except SAMP's needs the header `{TOKEN_HEADER}` (the token the server
prints at start and writes to `~/.visivo_token`): press *Authorize* and paste it. Dataset-scoped
routes read `{SESSION_HEADER}` (optional: without it a dataset is addressed by its id).

**Errors.** Logical failures answer HTTP 200 with `{{"valid": false, "error": "…"}}`; unknown or
foreign datasets, sessions and tasks answer 404, validation errors 422 (the message names the
field), a full heavy queue 429, all with the same body. The JS9 analysis route has its own bodies.

**Arrays** travel as base64 of little-endian float32 in C order `(z, y, x)` (`data_base64`);
`"compression": "qt-zlib"` selects Qt `qCompress` payloads. NaN is `null` in JSON.
"""
#: The security requirement of authenticated operations: the token, with or without a session.
SECURED = [{"VisivoToken": [], "VisivoSession": []}, {"VisivoToken": []}]


#: ReDoc's bundle, served from here with its one CDN reference (a cosmetic logo) pointed at our favicon.
REDOC_JS_URL = "/docs-redoc.js"
REDOC_CDN_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _assets_dir() -> str:
    return str(resources.files("fastapi_offline") / "static")


@lru_cache(maxsize=1)
def _redoc_js() -> bytes:
    text = (resources.files("fastapi_offline") / "static" / "redoc.standalone.js").read_bytes()
    return text.replace(REDOC_CDN_LOGO.encode(), f"{ASSETS_URL}/favicon.png".encode())


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The schema with the API-key security schemes, cached on the app."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = {
        "VisivoToken": {"type": "apiKey", "in": "header", "name": TOKEN_HEADER,
                        "description": "The server's API token (`~/.visivo_token`)."},
        "VisivoSession": {"type": "apiKey", "in": "header", "name": SESSION_HEADER,
                          "description": "Session id from an open call (optional)."},
    }
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            token_free = path.startswith("/v1/samp")
            operation["security"] = [] if token_free else SECURED
    app.openapi_schema = schema
    return schema


def install_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc``, ``/openapi.json`` (token-free) and ``/v1/openapi.json`` (token)."""
    app.mount(ASSETS_URL, StaticFiles(directory=_assets_dir()), name="docs-assets")
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_public() -> dict[str, Any]:
        return app.openapi()

    @app.get("/v1/openapi.json", dependencies=[Depends(require_token)], include_in_schema=False)
    async def openapi_v1() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css", swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
        )

    @app.get(REDOC_JS_URL, include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(_redoc_js(), media_type="text/javascript")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} — API",
                              redoc_js_url=REDOC_JS_URL,
                              redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False)
