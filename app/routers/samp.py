"""SAMP routes: hub connection, messaging queues, and files shared with SAMP peers.

Included WITHOUT the token dependency (a hub and peers on the user's machine call them), but every
route answers only requests that come from a loopback address, are addressed to a loopback host name
(``Host``: defeats DNS rebinding) and carry no foreign ``Origin`` (a web page in the user's browser);
anything else gets HTTP 403 ``{"valid": false, "error"}``. Setting ``samp_require_token`` also
demands the API token (file downloads by token excepted, since peers cannot send it).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import FileResponse

from app.auth import require_token
from app.deps import get_samp, session_id_of
from app.errors import ApiError
from app.operations.http import respond
from app.responses import ok
from app.routers.samp_models import (
    SAMP_ERRORS,
    SERVED_MEDIA_TYPES,
    ConnectRequest,
    FileInfo,
    Imported,
    ImportRequest,
    InboxPage,
    PendingMessages,
    Received,
    ReceiveRequest,
    RegisterFileRequest,
    SampStatus,
    SendFileRequest,
    SendRequest,
    SendResult,
    SentFile,
    Uploaded,
)
from app.services.samp import SampService
from app.services.samp.origin import is_loopback_host_header, is_loopback_origin
from app.services.samp.upload import receive_upload


class Forbidden(ApiError):
    """A request the SAMP routes do not answer (HTTP 403)."""

    status_code = 403


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` is ``localhost`` (or ``*.localhost``) or a loopback IPv4/IPv6 address."""
    name = (host or "").strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def loopback_only(request: Request) -> None:
    """Refuse (403) non-loopback clients, non-loopback ``Host`` headers and foreign ``Origin`` headers."""
    client = request.client
    if client is None or not is_loopback_host(client.host):
        raise Forbidden("SAMP routes answer requests from this machine (loopback) only.")
    if not is_loopback_host_header(request.headers.get("host")):
        raise Forbidden("SAMP routes must be addressed to localhost or a loopback address.")
    origin = request.headers.get("origin")
    if origin is not None and not is_loopback_origin(origin):  # strict: scheme, no userinfo, exact host
        raise Forbidden("Cross-origin requests to SAMP routes are refused.")


router = APIRouter(prefix="/v1/samp", tags=["samp"], dependencies=[Depends(loopback_only)], responses=SAMP_ERRORS)


async def samp_service(request: Request) -> SampService:
    """:func:`get_samp`, enforcing the API token first when ``samp_require_token`` is set."""
    service = get_samp(request)
    if service.config.require_token:
        await require_token(request)
    return service


SampDep = Annotated[SampService, Depends(samp_service)]


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# -- hub ----------------------------------------------------------------------------------------
@router.get("/status", response_model=SampStatus)
def status(samp: SampDep):  # noqa: ANN201
    """Connection state (the hub is pinged; a restarted hub is reconnected), peers and queue sizes."""
    return respond(SampStatus, ok(samp.status()))


@router.post("/hub-status", response_model=SampStatus)
def hub_status(samp: SampDep, body: Annotated[dict[str, Any] | None, Body(
        description="What the client knows about its hub (free-form; kept as `last_heartbeat`).",
        examples=[{"hub_running": True, "hub_url": "http://127.0.0.1:21012/xmlrpc"}])] = None):  # noqa: ANN201
    """Heartbeat: record what the client reports about its hub, check ours, reconnect if needed."""
    return respond(SampStatus, ok(samp.heartbeat(body or {})))


@router.post("/connect", response_model=SampStatus)
def connect(samp: SampDep, body: ConnectRequest | None = None):  # noqa: ANN201
    """Register with the user's hub (lockfile from the body, ``SAMP_HUB`` or ``~/.samp``) and stay connected."""
    return respond(SampStatus, ok(samp.connect(body.lockfile if body else None)))


@router.post("/disconnect", response_model=SampStatus)
def disconnect(samp: SampDep):  # noqa: ANN201
    """Unregister from the hub and stop reconnecting."""
    return respond(SampStatus, ok(samp.disconnect()))


# -- messages -----------------------------------------------------------------------------------
@router.post("/send", response_model=SendResult)
def send(body: SendRequest, request: Request, samp: SampDep):  # noqa: ANN201
    """Notify one peer (id or name) or all subscribed peers; queued in ``/pending`` while no hub is connected."""
    return respond(SendResult, ok(samp.send(body.mtype, body.params, recipient=body.recipient,
                                            session_id=session_id_of(request))))


@router.post("/receive", response_model=Received)
def receive(body: ReceiveRequest, request: Request, samp: SampDep):  # noqa: ANN201
    """Inbound delivery from a hub bridge: the message goes to the inbox (of ``session_id`` if given)."""
    message = samp.receive(body.mtype, body.params, sender=body.sender, sender_name=body.sender_name,
                           session_id=body.session_id or session_id_of(request))
    return respond(Received, ok(message=message))


@router.get("/pending", response_model=PendingMessages)
def pending(samp: SampDep, peek: Annotated[bool, Query(  # noqa: ANN201
        description="Leave the messages queued (default: pull, i.e. remove them).")] = False):
    """Outbound messages waiting for a hub; pulled (removed) unless ``peek=true``."""
    items = samp.pending(consume=not peek)
    return respond(PendingMessages, ok(messages=items, count=len(items)))


@router.get("/inbox", response_model=InboxPage)
def inbox(  # noqa: ANN201
    request: Request, samp: SampDep,
    since: Annotated[int | None, Query(description="Return messages with an id above this one (default: "
                                                   "after the session's previous pull).")] = None,
    limit: Annotated[int, Query(description="Most messages returned (clamped to 1–1000).")] = 100,
):
    """Received messages for the caller's session: after ``since``, else after the session's previous pull."""
    return respond(InboxPage, ok(samp.inbox.pull(session_id_of(request), since=since, limit=max(1, min(limit, 1000)))))


# -- files --------------------------------------------------------------------------------------
@router.post("/files/register", response_model=FileInfo)
def register_file(body: RegisterFileRequest, request: Request, samp: SampDep):  # noqa: ANN201
    """An unguessable token (and URL) for a file inside the data roots."""
    return respond(FileInfo, ok(samp.files.register_path(body.path, _base_url(request))))


@router.get("/files/{token}", response_class=FileResponse, responses={200: {
    "description": "The file's bytes (served inline, named by `Content-Disposition`).",
    "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in SERVED_MEDIA_TYPES}}})
def serve_file(token: Annotated[str, Path(description="Token from `/files/register`, an upload or an import.")],
               samp: SampService = Depends(get_samp)) -> FileResponse:
    """The file of a token (FITS as ``application/fits``); 404 for an unknown token."""
    path, content_type = samp.files.served_file(token)
    return FileResponse(path, media_type=content_type, filename=path.name, content_disposition_type="inline")


UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "The file (its name is kept, made safe)."}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                            "description": "The raw file; name it with `?filename=`."}},
}}}


@router.post("/upload-file", response_model=Uploaded, openapi_extra=UPLOAD_BODY)
async def upload_file(  # noqa: ANN201
    request: Request, samp: SampDep,
    filename: Annotated[str | None, Query(description="Name of a raw (non-multipart) upload.")] = None,
):
    """Store an uploaded file (multipart field ``file``, or a raw body named by ``?filename=``) under a size cap."""
    path, size, _ = await receive_upload(
        request.stream(),
        content_type=request.headers.get("content-type", ""),
        content_length=request.headers.get("content-length"),
        filename=filename,
        directory=samp.config.output_dir / "samp_uploads",
        max_bytes=samp.config.max_file_bytes,
    )
    return respond(Uploaded, ok(samp.files.file_info(path.resolve(), _base_url(request)), uploaded_bytes=size))


@router.post("/import-url", response_model=Imported)
def import_url(body: ImportRequest, request: Request, samp: SampDep):  # noqa: ANN201
    """Download an http(s) URL (size cap, timeout, no redirect to other schemes) and open it in the session."""
    return respond(Imported, ok(samp.files.import_url(
        body.url, name=body.name, session_id=body.session_id or session_id_of(request), base_url=_base_url(request))))


@router.post("/send-fits", response_model=SentFile)
def send_fits(body: SendFileRequest, request: Request, samp: SampDep):  # noqa: ANN201
    """``image.load.fits`` with a served URL of the FITS file (path, token or dataset) to one or all peers."""
    sid = session_id_of(request)
    source = samp.files.resolve_source(token=body.token, path=body.path, dataset_id=body.dataset_id, session_id=sid)
    return respond(SentFile, ok(samp.send_fits(source, name=body.name, recipient=body.recipient, session_id=sid,
                                               base_url=_base_url(request))))


@router.post("/send-catalogue", response_model=SentFile)
def send_catalogue(body: SendFileRequest, request: Request, samp: SampDep):  # noqa: ANN201
    """``table.load.votable`` with the catalogue (CSV, TSV, FITS table ... converted to VOTable) to peers."""
    sid = session_id_of(request)
    source = samp.files.resolve_source(token=body.token, path=body.path, dataset_id=body.dataset_id, session_id=sid)
    return respond(SentFile, ok(samp.send_catalogue(source, name=body.name, recipient=body.recipient, session_id=sid,
                                                    base_url=_base_url(request))))
