"""SAMP routes: hub connection, messaging queues, and files shared with SAMP peers.

Included WITHOUT the token dependency (a hub and peers on the user's machine call them), but every
route answers only requests that come from a loopback address, are addressed to a loopback host name
(``Host``: defeats DNS rebinding) and carry no foreign ``Origin`` (a web page in the user's browser);
anything else gets HTTP 403 ``{"valid": false, "error"}``. Setting ``samp_require_token`` also
demands the API token (file downloads by token excepted, since peers cannot send it).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from app.auth import require_token
from app.deps import get_samp, session_id_of
from app.errors import ApiError
from app.responses import ok
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


router = APIRouter(prefix="/v1/samp", tags=["samp"], dependencies=[Depends(loopback_only)])


async def samp_service(request: Request) -> SampService:
    """:func:`get_samp`, enforcing the API token first when ``samp_require_token`` is set."""
    service = get_samp(request)
    if service.config.require_token:
        await require_token(request)
    return service


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


class ConnectRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    lockfile: str | None = None


class SendRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    mtype: str = Field(validation_alias=AliasChoices("mtype", "samp.mtype"))
    params: dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("params", "samp.params"))
    recipient: str | None = Field(None, validation_alias=AliasChoices("recipient", "recipient_id", "client_id"))


class ReceiveRequest(SendRequest):
    sender: str = Field("", validation_alias=AliasChoices("sender", "sender_id"))
    sender_name: str = ""
    session_id: str | None = None


class PathRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str
    name: str | None = None
    session_id: str | None = None


class SendFileRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str | None = None
    token: str | None = None
    dataset_id: str | None = None
    name: str | None = None
    recipient: str | None = Field(None, validation_alias=AliasChoices("recipient", "recipient_id", "client_id"))


# -- hub ----------------------------------------------------------------------------------------
@router.get("/status")
def status(samp: SampService = Depends(samp_service)) -> dict:
    """Connection state (the hub is pinged; a restarted hub is reconnected), peers and queue sizes."""
    return ok(samp.status())


@router.post("/hub-status")
def hub_status(body: dict[str, Any] | None = None, samp: SampService = Depends(samp_service)) -> dict:
    """Heartbeat: record what the client reports about its hub, check ours, reconnect if needed."""
    return ok(samp.heartbeat(body or {}))


@router.post("/connect")
def connect(body: ConnectRequest | None = None, samp: SampService = Depends(samp_service)) -> dict:
    """Register with the user's hub (lockfile from the body, ``SAMP_HUB`` or ``~/.samp``) and stay connected."""
    return ok(samp.connect(body.lockfile if body else None))


@router.post("/disconnect")
def disconnect(samp: SampService = Depends(samp_service)) -> dict:
    """Unregister from the hub and stop reconnecting."""
    return ok(samp.disconnect())


# -- messages -----------------------------------------------------------------------------------
@router.post("/send")
def send(body: SendRequest, request: Request, samp: SampService = Depends(samp_service)) -> dict:
    """Notify one peer (id or name) or all subscribed peers; queued in ``/pending`` while no hub is connected."""
    return ok(samp.send(body.mtype, body.params, recipient=body.recipient, session_id=session_id_of(request)))


@router.post("/receive")
def receive(body: ReceiveRequest, request: Request, samp: SampService = Depends(samp_service)) -> dict:
    """Inbound delivery from a hub bridge: the message goes to the inbox (of ``session_id`` if given)."""
    message = samp.receive(body.mtype, body.params, sender=body.sender, sender_name=body.sender_name,
                           session_id=body.session_id or session_id_of(request))
    return ok(message=message)


@router.get("/pending")
def pending(peek: bool = False, samp: SampService = Depends(samp_service)) -> dict:
    """Outbound messages waiting for a hub; pulled (removed) unless ``peek=true``."""
    items = samp.pending(consume=not peek)
    return ok(messages=items, count=len(items))


@router.get("/inbox")
def inbox(request: Request, since: int | None = None, limit: int = 100,
          samp: SampService = Depends(samp_service)) -> dict:
    """Received messages for the caller's session: after ``since``, else after the session's previous pull."""
    return ok(samp.inbox.pull(session_id_of(request), since=since, limit=max(1, min(limit, 1000))))


# -- files --------------------------------------------------------------------------------------
@router.post("/files/register")
def register_file(body: PathRequest, request: Request, samp: SampService = Depends(samp_service)) -> dict:
    """An unguessable token (and URL) for a file inside the data roots."""
    return ok(samp.files.register_path(body.path, _base_url(request)))


@router.get("/files/{token}")
def serve_file(token: str, samp: SampService = Depends(get_samp)) -> FileResponse:
    """The file of a token (FITS as ``application/fits``); 404 for an unknown token."""
    path, content_type = samp.files.served_file(token)
    return FileResponse(path, media_type=content_type, filename=path.name, content_disposition_type="inline")


@router.post("/upload-file")
async def upload_file(request: Request, filename: str | None = None,
                      samp: SampService = Depends(samp_service)) -> dict:
    """Store an uploaded file (multipart field ``file``, or a raw body named by ``?filename=``) under a size cap."""
    path, size, _ = await receive_upload(
        request.stream(),
        content_type=request.headers.get("content-type", ""),
        content_length=request.headers.get("content-length"),
        filename=filename,
        directory=samp.config.output_dir / "samp_uploads",
        max_bytes=samp.config.max_file_bytes,
    )
    return ok(samp.files.file_info(path.resolve(), _base_url(request)), uploaded_bytes=size)


@router.post("/import-url")
def import_url(body: ImportRequest, request: Request, samp: SampService = Depends(samp_service)) -> dict:
    """Download an http(s) URL (size cap, timeout, no redirect to other schemes) and open it in the session."""
    return ok(samp.files.import_url(body.url, name=body.name, session_id=body.session_id or session_id_of(request),
                              base_url=_base_url(request)))


@router.post("/send-fits")
def send_fits(body: SendFileRequest, request: Request, samp: SampService = Depends(samp_service)) -> dict:
    """``image.load.fits`` with a served URL of the FITS file (path, token or dataset) to one or all peers."""
    sid = session_id_of(request)
    source = samp.files.resolve_source(token=body.token, path=body.path, dataset_id=body.dataset_id, session_id=sid)
    return ok(samp.send_fits(source, name=body.name, recipient=body.recipient, session_id=sid,
                             base_url=_base_url(request)))


@router.post("/send-catalogue")
def send_catalogue(body: SendFileRequest, request: Request, samp: SampService = Depends(samp_service)) -> dict:
    """``table.load.votable`` with the catalogue (CSV, TSV, FITS table ... converted to VOTable) to peers."""
    sid = session_id_of(request)
    source = samp.files.resolve_source(token=body.token, path=body.path, dataset_id=body.dataset_id, session_id=sid)
    return ok(samp.send_catalogue(source, name=body.name, recipient=body.recipient, session_id=sid,
                                  base_url=_base_url(request)))
