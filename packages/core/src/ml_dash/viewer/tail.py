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


def last_lines(path: Path, count: int, end: int | None = None) -> tuple[Tail, int]:
    """The rows of the last ``count`` complete lines (before ``end``, when given), read backwards from the end of
    the file, and how many complete lines the file holds (newlines counted in large blocks: no parse). The
    Tail's ``offset`` is where its lines end (where a live reader goes on)."""
    out = Tail()
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
        out.missing = True
        return out, 0
    try:
        size = os.fstat(fd).st_size if end is None else min(os.fstat(fd).st_size, end)
        buf = b""
        pos = size
        while pos > 0 and buf.count(b"\n") <= count:
            step = min(max(65536, len(buf)), pos)  # doubling: a few reads whatever the lines' length
            pos -= step
            buf = os.pread(fd, step, pos) + buf
        stop = buf.rfind(b"\n") + 1  # a torn last line waits for the next read
        lines = buf[:stop].split(b"\n")[:-1]
        if pos > 0:
            lines = lines[1:]  # the first may be the end of a line that starts before ``pos``
        lines = lines[-count:] if count else []
        out.rows, out.invalid = parse_lines(lines)
        out.offset = pos + stop
        total = buf.count(b"\n", 0, stop) + newlines(fd, pos)  # (the lines before the part read)
    finally:
        os.close(fd)
    return out, total


_counted: dict[tuple[int, int], tuple[int, int]] = {}  # (device, inode) -> (bytes counted, newlines in them)


def newlines(fd: int, size: int) -> int:
    """The newlines among the first ``size`` bytes of an append-only file, counted with numpy (vectorised) and
    remembered: a later call counts only what was appended since."""
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    at, total = _counted.get(key, (0, 0))
    if at > size:
        at, total = 0, 0
    if size > at:
        import numpy as np

        while at < size:  # (read, not memory-mapped: a file truncated meanwhile must not crash the server)
            chunk = os.pread(fd, min(1 << 24, size - at), at)
            if not chunk:
                break
            total += int(np.count_nonzero(np.frombuffer(chunk, dtype=np.uint8) == 10))
            at += len(chunk)
        size = at
        if len(_counted) > 1000:
            _counted.clear()
        _counted[key] = (size, total)
    return total
