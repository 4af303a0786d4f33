"""FastAPI application: routers, auth, error convention and start-up.

``uvicorn app.main:app`` serves the module-level :data:`app` (settings from the
environment); tests build their own with :func:`create_app`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.auth import require_token, resolve_token, write_token_file
from app.docs import install_docs
from app.errors import ApiError
from app.middleware import RequestGuard
from app.operations.http import build_router
from app.responses import SafeJSONResponse, failure
from app.routers import (
    datasets,
    hips,
    js9,
    meta,
    samp,
    spectral,
    tasks,
)
from app.runtime import VERSION, build_runtime
from app.settings import Settings

log = logging.getLogger("visivo")

#: Routers that require ``X-Visivo-Token`` (every one except SAMP).
AUTHENTICATED_ROUTERS = [
    meta.router, datasets.router, spectral.router, tasks.router,
    hips.router,
]


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        if err.get("type") == "json_invalid":
            reason = err.get("ctx", {}).get("error", "decode error")
            parts.append(f"malformed JSON body ({reason} at character {'.'.join(loc)})")
            continue
        field = ".".join(loc) or "body"
        parts.append(f"field '{field}': {err.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application. The runtime (token, backend, pools) is created at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conf = settings or Settings()
        token = resolve_token(conf.token)
        write_token_file(conf.token_file, token)
        runtime = build_runtime(conf, token)
        app.state.runtime = runtime
        if not conf.token:
            print(f"VisIVO server token: {token} (written to {conf.token_file})", flush=True)
        log.info("backend=%s roots=%s output=%s", runtime.backend.name, runtime.roots, conf.output_dir)
        try:
            yield
        finally:
            runtime.close()

    app = FastAPI(
        title="VisIVO GPU compute server",
        version=VERSION,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> SafeJSONResponse:
        return SafeJSONResponse(failure(exc.message), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> SafeJSONResponse:
        return SafeJSONResponse(failure(_validation_message(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> SafeJSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # e.g. not UTF-8
            return SafeJSONResponse(failure("Invalid request: the body is not valid JSON."), status_code=422)
        return SafeJSONResponse(failure(str(exc.detail)), status_code=exc.status_code)

    app.add_middleware(RequestGuard)  # request id, body limit, 500s that keep the connection (app/middleware.py)

    for router in AUTHENTICATED_ROUTERS:
        app.include_router(router, dependencies=[Depends(require_token)])
    app.include_router(build_router(), dependencies=[Depends(require_token)])  # every registered operation
    app.include_router(samp.router)  # token-free (a local SAMP hub calls it); answers loopback clients only
    app.include_router(js9.router)  # API routes check the token themselves; the /js9/ static viewer is token-free

    install_docs(app)  # /docs, /redoc, /openapi.json (token-free, offline assets); /v1/openapi.json (token)
    return app


app = create_app()
