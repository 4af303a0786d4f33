"""Receiving an uploaded file (multipart form field, or a raw body) into a directory, under a size cap."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from app.errors import ApiError, InvalidRequest
from app.services.samp.files import safe_filename, unique_destination
from app.services.samp.multipart import MultipartError, UploadTooLarge, boundary_of, read_multipart

#: Allowance for multipart headers and small fields on top of the file cap (Content-Length pre-check).
MULTIPART_OVERHEAD = 64 * 1024


class PayloadTooLarge(ApiError):
    """The upload exceeds the cap (HTTP 413)."""

    status_code = 413


class _Sink:
    """Opens ``<random>_<name>.part`` next to the final name; :meth:`commit` renames it, :meth:`discard` removes it."""

    def __init__(self, directory: Path, default_name: str) -> None:
        self.directory = directory
        self.default_name = default_name
        self.dest: Path | None = None
        self.tmp: Path | None = None
        self.handle: BinaryIO | None = None

    def open(self, client_name: str | None) -> BinaryIO:
        self.dest = unique_destination(self.directory, safe_filename(client_name, self.default_name))
        self.tmp = self.dest.with_name(f".{self.dest.name}.{os.getpid()}.part")
        self.handle = self.tmp.open("wb")
        return self.handle

    def commit(self) -> Path:
        assert self.handle is not None and self.tmp is not None and self.dest is not None
        self.handle.close()
        os.replace(self.tmp, self.dest)
        return self.dest

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


async def receive_upload(
    chunks: AsyncIterator[bytes],
    *,
    content_type: str,
    content_length: str | None,
    filename: str | None,
    directory: Path,
    max_bytes: int,
    default_name: str = "upload.fits",
) -> tuple[Path, int, dict[str, str]]:
    """Store the uploaded file in ``directory``.

    ``multipart/form-data`` bodies keep the first file part (any field name; ``file`` by convention);
    any other body is taken whole as the file, named by ``filename``.

    Returns
    -------
    tuple
        ``(stored path, size in bytes, text form fields)``.

    Raises
    ------
    PayloadTooLarge
        The file (or the declared Content-Length) exceeds ``max_bytes``.
    """
    if content_length and content_length.isdigit() and int(content_length) > max_bytes + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(f"The upload is larger than the {max_bytes}-byte limit.")
    sink = _Sink(directory, default_name)
    fields: dict[str, str] = {}
    try:
        if content_type.lower().startswith("multipart/"):
            try:
                result = await read_multipart(chunks, boundary_of(content_type), sink.open, max_file_bytes=max_bytes)
            except MultipartError as exc:
                raise InvalidRequest(f"Bad upload: {exc}") from None
            if result.file_field is None:
                raise InvalidRequest("The upload has no file part (send the file in a form field named 'file').")
            size, fields = result.size, result.fields
        else:
            handle, size = sink.open(filename), 0
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise UploadTooLarge(f"The upload is larger than the {max_bytes}-byte limit.")
                handle.write(chunk)
        if size == 0:
            raise InvalidRequest("The upload is empty.")
        return sink.commit(), size, fields
    except UploadTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    finally:
        sink.discard()
