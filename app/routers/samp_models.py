"""Request and answer models of the SAMP routes (:mod:`app.routers.samp`), and their documented statuses."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from app.operations.http import STANDARD_ERRORS
from app.operations.models import Envelope, ErrorBody
from app.services.samp.files import CONTENT_TYPES

#: Statuses of the SAMP routes: 403 for foreign callers; 401 only with ``VISIVO_SAMP_REQUIRE_TOKEN``.
SAMP_ERRORS: dict[int | str, dict[str, Any]] = {
    **{code: body for code, body in STANDARD_ERRORS.items() if code != 429},
    401: {"model": ErrorBody, "description": "Only with `VISIVO_SAMP_REQUIRE_TOKEN=true`: missing or wrong "
                                             "`X-Visivo-Token`."},
    403: {"model": ErrorBody, "description": "Not from this machine: non-loopback client, non-loopback `Host` "
                                             "or a foreign `Origin`."},
    404: {"model": ErrorBody, "description": "Unknown file token, or unknown (or another session's) dataset."},
    413: {"model": ErrorBody, "description": "Upload or import larger than `VISIVO_SAMP_MAX_FILE_MEGABYTES`."},
}
#: Media types ``GET /v1/samp/files/{token}`` answers.
SERVED_MEDIA_TYPES = [media for _, media in CONTENT_TYPES] + ["application/octet-stream"]

_RECIPIENT = AliasChoices("recipient", "recipient_id", "client_id")


def _examples(*items: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="allow", json_schema_extra={"examples": list(items)})


# -- requests -------------------------------------------------------------------------------
class ConnectRequest(BaseModel):
    """Which hub to register with."""

    model_config = _examples({"lockfile": "/home/user/.samp"})
    lockfile: str | None = Field(None, description="Hub lockfile (default: `$SAMP_HUB`, else `~/.samp`).")


class SendRequest(BaseModel):
    """A SAMP notification."""

    model_config = _examples({"mtype": "coord.pointAt.sky", "params": {"ra": "187.2779", "dec": "2.0524"}})
    mtype: str = Field(validation_alias=AliasChoices("mtype", "samp.mtype"),
                       description="SAMP MType (alias `samp.mtype`), e.g. `image.load.fits`.")
    params: dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("params", "samp.params"),
                                   description="Message parameters (alias `samp.params`; sent as SAMP strings).")
    recipient: str | None = Field(None, validation_alias=_RECIPIENT,
                                  description="Peer client id or `samp.name` (default or `all`: every subscribed "
                                              "peer; aliases `recipient_id`, `client_id`).")


class ReceiveRequest(SendRequest):
    """A message a hub bridge delivers to this server."""

    model_config = _examples({"mtype": "coord.pointAt.sky", "params": {"ra": "187.2779", "dec": "2.0524"},
                              "sender": "c3", "sender_name": "Aladin"})
    sender: str = Field("", validation_alias=AliasChoices("sender", "sender_id"),
                        description="Sender client id (alias `sender_id`).")
    sender_name: str = Field("", description="Sender `samp.name`.")
    session_id: str | None = Field(None, description="Session whose inbox gets it (default: the "
                                                     "`X-Visivo-Session` header; none: every session).")


class RegisterFileRequest(BaseModel):
    """A file inside the data roots."""

    model_config = _examples({"path": "3c273_continuum.fits.gz"})
    path: str = Field(description="Path relative to a data root, or absolute inside one.")


class ImportRequest(BaseModel):
    """An http(s) URL to download and open."""

    model_config = _examples({"url": "https://example.org/data/m31.fits", "name": "m31.fits"})
    url: str = Field(description="http(s) URL (no redirect to another scheme; size cap and timeout apply).")
    name: str | None = Field(None, description="File name to store it under (default: from the URL).")
    session_id: str | None = Field(None, description="Session to open it in (default: `X-Visivo-Session`, "
                                                     "else a new one).")


class SendFileRequest(BaseModel):
    """A file to send to peers: by token, by path, or an open dataset."""

    model_config = _examples({"path": "3c273_continuum.fits.gz", "name": "3C 273"})
    path: str | None = Field(None, description="File inside the data roots.")
    token: str | None = Field(None, description="Token from `/v1/samp/files/register` or an upload.")
    dataset_id: str | None = Field(None, description="Open dataset of the caller's session.")
    name: str | None = Field(None, description="Display name for the peers (default: the file name).")
    recipient: str | None = Field(None, validation_alias=_RECIPIENT,
                                  description="Peer client id or `samp.name` (default: every subscribed peer).")


# -- answers --------------------------------------------------------------------------------
class Peer(BaseModel):
    """Another client registered with the hub."""

    id: str = Field(description="SAMP client id.")
    name: str | None = Field(None, description="Its `samp.name`.")
    mtypes: list[str] = Field(description="Standard MTypes it subscribes to.")


class SampStatus(Envelope):
    """Hub connection state, peers and queue sizes."""

    connected: bool = Field(description="Registered with a live hub now.")
    auto_reconnect: bool = Field(description="The server reconnects when the hub restarts (after `/connect`).")
    client_name: str = Field(description="This server's `samp.name`.")
    client_id: str | None = Field(description="Our client id at the hub (null when not connected).")
    hub_url: str | None = Field(description="The hub's XML-RPC URL (null when not connected).")
    lockfile: str | None = Field(description="Lockfile in use (null when not asked to connect).")
    connected_since: float | None = Field(description="Unix time of the current connection (s).")
    reconnects: int = Field(description="Reconnections since start-up.")
    last_error: str | None = Field(description="Last hub error, for a person to read.")
    peers: list[Peer] = Field(description="Other registered clients.")
    mtypes: list[str] = Field(description="Standard MTypes this server speaks.")
    inbox_size: int = Field(description="Messages in the inbox.")
    pending: int = Field(description="Outbound messages waiting for a hub.")
    registered_files: int = Field(description="File tokens minted.")
    last_heartbeat: dict[str, Any] | None = Field(description="Last `/hub-status` body with `received_at` (Unix s).")


class SendResult(Envelope):
    """A message sent now, or queued until a hub is connected."""

    sent: bool = Field(description="Delivered to the hub now.")
    queued: bool = Field(description="Queued in `/pending` (no hub connected).")
    mtype: str = Field(description="The MType sent.")
    recipients: list[str] = Field(description="Client ids it was delivered to (empty when queued).")
    params: dict[str, Any] = Field(description="Parameters as sent (SAMP strings).")
    message_id: int | None = Field(None, description="Queue id, when queued.")


class InboxMessage(BaseModel):
    """A received message."""

    id: int = Field(description="Increasing id (use as `since`).")
    mtype: str = Field(description="SAMP MType.")
    params: Any = Field(description="Parameters.")
    kind: str = Field(description="`notification`, `call` (from SAMP) or `bridge` (`/receive`).")
    sender_id: str = Field(description="Sender client id.")
    sender_name: str = Field(description="Sender `samp.name`.")
    msg_id: str | None = Field(description="SAMP message id of a call.")
    session_id: str | None = Field(description="Session it is addressed to (null: every session).")
    received_at: float = Field(description="Unix time (s).")


class Received(Envelope):
    """The message as stored in the inbox."""

    message: InboxMessage = Field(description="The stored message.")


class OutboxEntry(BaseModel):
    """An outbound message waiting for a hub."""

    id: int = Field(description="Queue id.")
    mtype: str = Field(description="SAMP MType.")
    params: dict[str, Any] = Field(description="Parameters (SAMP strings).")
    recipient: str | None = Field(description="Peer, or null for every subscribed peer.")
    session_id: str | None = Field(description="Session that sent it.")
    queued_at: float = Field(description="Unix time (s).")


class PendingMessages(Envelope):
    """Outbound messages waiting for a hub."""

    messages: list[OutboxEntry] = Field(description="Oldest first.")
    count: int = Field(description="Messages returned.")


class InboxPage(Envelope):
    """Received messages for the caller's session."""

    messages: list[InboxMessage] = Field(description="Oldest first.")
    last_id: int = Field(description="Id of the last message returned (the next `since`).")
    more: bool = Field(description="More messages follow (raise `limit` or pull again).")


class FileInfo(Envelope):
    """A file shared with SAMP peers by an unguessable token."""

    token: str = Field(description="Token of the file.")
    url: str = Field(description="URL peers download it from (`/v1/samp/files/{token}`).")
    path: str = Field(description="The file on this server.")
    name: str = Field(description="File name.")
    size: int = Field(description="Size (bytes).")
    content_type: str = Field(description="Media type it is served with.")


class Uploaded(FileInfo):
    """An uploaded file, stored and given a token."""

    uploaded_bytes: int = Field(description="Bytes received.")


class Imported(FileInfo):
    """A downloaded file, given a token and opened in the session when it is FITS or a catalogue."""

    source_url: str = Field(description="The URL downloaded.")
    session_id: str = Field(description="Session it was opened in.")
    dataset_id: str | None = Field(description="The new dataset, or null when it could not be opened.")
    kind: str | None = Field(description="Dataset kind (`image`, `cube`, `catalogue`), or null.")
    open_error: str | None = Field(None, description="Why it could not be opened, when it could not.")


class SentFile(SendResult, FileInfo):
    """A file sent to peers (`image.load.fits` or `table.load.votable`) with its token and URL."""

    converted: bool | None = Field(None, description="Catalogues: converted to VOTable for the peers.")
    source_path: str | None = Field(None, description="Catalogues: the file before conversion.")
