"""A file upload: a multipart body (``entry`` = the index entry as JSON, ``file`` = the content) parsed as it
streams in, the content written straight to a staging file under the experiment and hashed on the way; never
held whole in memory. The file is published into ``files/<dir>/<id>/<filename>`` once complete and checked."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from .backend import Backend, BadRequest, check_file_entry

MAX_FIELD = 1024 * 1024


class TooLarge(Exception):
    pass


class _Parts:
    def __init__(self, root: Backend, prefix: str, max_file: int) -> None:
        self.root = root
        self.prefix = prefix
        self.max_file = max_file
        self.fields: dict[str, bytearray] = {}
        self.name = ""
        self.is_file = False
        self.disposition = b""
        self.header_name = b""
        self.header_value = b""
        self.staged: Path | None = None
        self.out: IO[bytes] | None = None
        self.sha = hashlib.sha256()
        self.size = 0
        self.files = 0
        self.discard = False  # the entry came first and names a file the server already holds

    def on_part_begin(self) -> None:
        self.disposition = b""
        self.name = ""
        self.is_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, opts = parse_options_header(self.disposition)
        self.name = opts.get(b"name", b"").decode("utf-8", "replace")
        self.is_file = self.name == "file"
        if self.is_file:
            self.files += 1
            if self.files > 1:
                raise BadRequest("exactly one 'file' part is allowed")
            entry = self._entry_or_none()
            if entry is not None and self.root.has_file(self.prefix, entry["id"]):
                self.discard = True
                return
            self.staged = self.root.incoming()
            self.out = open(self.staged, "wb")
        elif len(self.fields) >= 8:
            raise BadRequest("too many form fields")
        else:
            self.fields[self.name] = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.is_file:
            self.size += len(chunk)
            if self.size > self.max_file:
                raise TooLarge(f"file larger than the limit of {self.max_file} bytes")
            if self.out is not None:
                self.out.write(chunk)
                self.sha.update(chunk)
        else:
            buf = self.fields[self.name]
            if len(buf) + len(chunk) > MAX_FIELD:
                raise TooLarge(f"form field {self.name!r} larger than {MAX_FIELD} bytes")
            buf.extend(chunk)

    def on_part_end(self) -> None:
        if self.is_file and self.out is not None:
            self.out.flush()

    def _entry_or_none(self) -> dict[str, Any] | None:
        raw = self.fields.get("entry")
        if raw is None:
            return None
        try:
            obj = json.loads(bytes(raw))
        except ValueError:
            raise BadRequest("'entry' is not valid JSON") from None
        return check_file_entry(obj)

    def cleanup(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
        if self.staged is not None:
            self.staged.unlink(missing_ok=True)


async def receive_file(root: Backend, prefix: str, content_type: str, stream: AsyncIterator[bytes],
                       max_file: int, fsync: bool) -> tuple[dict[str, Any], Path | None]:
    """Parse the upload; return (checked entry, staged content path or None when the id is already stored)."""
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise BadRequest("a file upload is multipart/form-data with an 'entry' (JSON) and a 'file' part")
    parts = _Parts(root, prefix, max_file)
    callbacks: Any = {k: getattr(parts, k) for k in ("on_part_begin", "on_part_data", "on_part_end",
                                                        "on_header_field", "on_header_value", "on_header_end",
                                                        "on_headers_finished")}
    parser = MultipartParser(boundary, callbacks)
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
        entry = parts._entry_or_none()
        if entry is None:
            raise BadRequest("missing the 'entry' part")
        if parts.files != 1:
            raise BadRequest("missing the 'file' part")
        if parts.discard or root.has_file(prefix, entry["id"]):
            parts.cleanup()
            return entry, None
        assert parts.out is not None and parts.staged is not None
        if fsync:
            import os

            parts.out.flush()
            os.fsync(parts.out.fileno())
        parts.out.close()
        parts.out = None
        digest = parts.sha.hexdigest()
        claimed = entry.get("checksum")
        if isinstance(claimed, str) and claimed and claimed.lower() != digest:
            raise BadRequest(f"checksum mismatch: entry says {claimed}, content is {digest}")
        size = entry.get("sizeBytes")
        if isinstance(size, int) and size != parts.size:
            raise BadRequest(f"size mismatch: entry says {size} bytes, received {parts.size}")
        entry["checksum"] = digest
        entry["sizeBytes"] = parts.size
        staged = parts.staged
        parts.staged = None
        return entry, staged
    except FormParserError:
        parts.cleanup()
        raise BadRequest("invalid multipart body") from None
    except BaseException:
        parts.cleanup()
        raise
