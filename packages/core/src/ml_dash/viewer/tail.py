"""Reading the complete lines appended to a JSONL file since a byte offset: the viewer's only way into streams.

A `.dash` stream is append-only, so a reader that remembers its byte offset reads each line once. A torn last
line (no newline yet) is left for the next read; lines that are not JSON objects are counted, never fatal;
bytes that are not UTF-8 are replaced rather than refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jsonio import complete_end

MAX_READ = 64 * 1024 * 1024  # bytes parsed per call; a reader catches up over several calls


@dataclass
class Tail:
    rows: list[dict[str, Any]] = field(default_factory=list)
    offset: int = 0  # the byte just after the last complete line read
    invalid: int = 0  # complete lines that were not JSON objects
    reset: bool = False  # the file shrank or was replaced: rows start from the beginning again
    missing: bool = False


try:
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None  # type: ignore[assignment]


def parse_lines(lines: list[bytes]) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects among ``lines`` and how many were not one: all lines in one orjson call when they are
    all valid (the common case), else line by line."""
    lines = [ln for ln in lines if ln.strip()]
    if _orjson is not None and lines:
        try:
            objs = _orjson.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            pass
        else:
            if len(objs) == len(lines):  # else a corrupt line held two values, or two lines made one
                rows = [o for o in objs if isinstance(o, dict)]
                return rows, len(objs) - len(rows)
    rows, bad = [], 0
    for line in lines:
        obj = parse_line(line)
        if obj is None:
            bad += 1
        else:
            rows.append(obj)
    return rows, bad


def parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except UnicodeDecodeError:
        try:
            obj = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            return None
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def read_from(path: Path, offset: int, ino: int | None = None, limit: int = MAX_READ,
              end: int | None = None) -> tuple[Tail, int | None]:
    """Rows of the complete lines after ``offset`` (before ``end``, when given: the server's committed size), and
    the file's inode (pass it back next time)."""
    out = Tail(offset=offset)
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
        out.missing = True
        out.reset = offset > 0
        out.offset = 0
        return out, None
    try:
        st = os.fstat(fd)
        if (ino is not None and st.st_ino != ino) or st.st_size < offset:
            out.reset = True
            offset = out.offset = 0
        size = st.st_size if end is None else min(st.st_size, max(end, offset))
        if size == offset:
            return out, st.st_ino
        raw = os.pread(fd, min(limit, size - offset), offset)
    finally:
        os.close(fd)
    end = raw.rfind(b"\n")
    if end < 0:
        if len(raw) >= limit:  # one line longer than the read limit: skip it as invalid
            nxt = _skip_line(path, offset + len(raw))
            out.invalid += 1
            out.offset = nxt
        return out, st.st_ino
    out.rows, out.invalid = parse_lines(raw[:end].split(b"\n"))
    out.offset = offset + end + 1
    return out, st.st_ino


def _skip_line(path: Path, pos: int) -> int:
    with open(path, "rb") as f:
        f.seek(pos)
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return pos
            i = chunk.find(b"\n")
            if i >= 0:
                return pos + i + 1
            pos += len(chunk)


def complete_size(path: Path) -> int:
    """The byte offset just after the last complete line (where a live reader starts)."""
    try:
        return complete_end(path)[1]
    except OSError:
        return 0
