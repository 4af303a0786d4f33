"""A small streaming ``multipart/form-data`` reader for one uploaded file (no extra dependency).

The body is read chunk by chunk; the first part with a ``filename`` is written to a sink as it
arrives (never held whole in memory) and stops with :class:`UploadTooLarge` past the size cap.
Other parts are small text fields (at most ``max_field_bytes`` each, ``max_parts`` in all).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import BinaryIO

MAX_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


class UploadTooLarge(ValueError):
    """The uploaded file is larger than the cap."""


@dataclass
class MultipartResult:
    """Text fields, and the uploaded file's field name, client file name and size (``None`` if no file)."""

    fields: dict[str, str] = field(default_factory=dict)
    file_field: str | None = None
    filename: str | None = None
    size: int = 0


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a ``multipart/form-data`` content type (:class:`MultipartError` otherwise)."""
    message = Message()
    message["content-type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        raise MultipartError("Expected multipart/form-data.")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 200:
        raise MultipartError("Missing or invalid multipart boundary.")
    return boundary.encode("latin-1")


def _disposition(block: bytes) -> tuple[str, str | None]:
    message = Message()
    for line in block.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            message[name.strip()] = value.strip()
    if message.get("content-disposition") is None:
        raise MultipartError("A part has no Content-Disposition.")
    name = message.get_param("name", header="content-disposition")
    filename = message.get_filename()
    return (name if isinstance(name, str) else ""), filename


class _Parser:
    def __init__(self, boundary: bytes, open_sink: Callable[[str], BinaryIO], max_file_bytes: int,
                 max_field_bytes: int, max_parts: int) -> None:
        self.delimiter = b"--" + boundary
        self.open_sink = open_sink
        self.max_file_bytes = max_file_bytes
        self.max_field_bytes = max_field_bytes
        self.max_parts = max_parts
        self.result = MultipartResult()
        self.buffer = b""
        self.state = "preamble"
        self.parts = 0
        self.sink: BinaryIO | None = None
        self.text: bytearray | None = None
        self.name = ""

    def _write(self, data: bytes) -> None:
        if not data:
            return
        if self.sink is not None:
            self.result.size += len(data)
            if self.result.size > self.max_file_bytes:
                raise UploadTooLarge(f"The upload is larger than the {self.max_file_bytes}-byte limit.")
            self.sink.write(data)
        elif self.text is not None:
            self.text.extend(data)
            if len(self.text) > self.max_field_bytes:
                raise MultipartError(f"Form field '{self.name}' is too long.")

    def _start_part(self, headers: bytes) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise MultipartError("Too many form parts.")
        self.name, filename = _disposition(headers)
        self.sink, self.text = None, None
        if filename is not None and self.result.file_field is None:
            self.result.file_field, self.result.filename = self.name, filename
            self.sink = self.open_sink(filename)
        elif filename is None:
            self.text = bytearray()
        # a second file part is read and dropped (sink and text both None)

    def _end_part(self) -> None:
        if self.text is not None:
            self.result.fields[self.name] = self.text.decode("utf-8", "replace")
        self.sink, self.text = None, None

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        while True:
            if self.state == "preamble":
                idx = self.buffer.find(self.delimiter)
                if idx < 0:
                    self.buffer = self.buffer[-len(self.delimiter):]
                    return
                self.buffer = self.buffer[idx + len(self.delimiter):]
                self.state = "after_delimiter"
            elif self.state == "after_delimiter":
                if len(self.buffer) < 2:
                    return
                if self.buffer.startswith(b"--"):
                    self.state, self.buffer = "done", b""
                    return
                if not self.buffer.startswith(b"\r\n"):
                    raise MultipartError("Malformed multipart delimiter line.")
                self.buffer = self.buffer[2:]
                self.state = "headers"
            elif self.state == "headers":
                idx = self.buffer.find(b"\r\n\r\n")
                if idx < 0:
                    if len(self.buffer) > MAX_HEADER_BYTES:
                        raise MultipartError("Multipart part headers are too long.")
                    return
                self._start_part(self.buffer[:idx])
                self.buffer = self.buffer[idx + 4:]
                self.state = "body"
            elif self.state == "body":
                marker = b"\r\n" + self.delimiter
                idx = self.buffer.find(marker)
                if idx < 0:
                    keep = len(marker) - 1
                    if len(self.buffer) > keep:
                        self._write(self.buffer[:-keep])
                        self.buffer = self.buffer[-keep:]
                    return
                self._write(self.buffer[:idx])
                self._end_part()
                self.buffer = self.buffer[idx + len(marker):]
                self.state = "after_delimiter"
            else:  # done: the epilogue is ignored
                self.buffer = b""
                return


async def read_multipart(
    chunks: AsyncIterator[bytes],
    boundary: bytes,
    open_sink: Callable[[str], BinaryIO],
    *,
    max_file_bytes: int,
    max_field_bytes: int = 64 * 1024,
    max_parts: int = 16,
) -> MultipartResult:
    """Stream a multipart body; the first file part goes to ``open_sink(client_filename)``.

    Raises
    ------
    UploadTooLarge
        The file part exceeds ``max_file_bytes``.
    MultipartError
        The body is malformed or truncated.
    """
    parser = _Parser(boundary, open_sink, max_file_bytes, max_field_bytes, max_parts)
    async for chunk in chunks:
        parser.feed(chunk)
        if parser.state == "done":
            break
    if parser.state != "done":
        raise MultipartError("The multipart body is truncated.")
    return parser.result
