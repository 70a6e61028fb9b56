"""A stream's commit record on the folder engine, kept as an append-only log of JSON lines.

Each committed append adds one line (how far each source got, the data file's committed size, the next index) to
the stream's state file and fdatasyncs it: one write to a file that exists, where replacing the whole file
(a new temporary file, its fsync, a rename) cost the server about three times the CPU per request. The last
complete line is the state. A line cut off by a crash is not newline-terminated (or does not parse): it was never
acknowledged, the line before it holds, and the next commit cuts it off first. Once the log outgrows
`COMPACT` bytes it is replaced atomically by its last line. A state file written as one JSON object (the format
before this log, and the info and params states) reads the same.

Callers hold the stream's locks (`ServerRoot.lock` and the record lock) around `read` and `commit`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orjson import dumps as _dumps
from orjson import loads as _loads

COMPACT = 64 * 1024  # bytes of log past which a commit replaces the file by its one line


class State(dict):  # type: ignore[type-arg]
    """The parsed state, and where the log's last complete line ends (``end``; None: the file must be replaced,
    not appended to: missing, a single JSON object, or too long)."""

    end: int | None = None
    length: int = 0


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, int | None]:
    """(the last complete state in ``raw``, where its line ends; None when ``raw`` is one JSON object)."""
    stop = len(raw)
    while stop > 0:
        if raw[stop - 1:stop] != b"\n":  # a torn tail, or the one-object format
            cut = raw.rfind(b"\n", 0, stop) + 1
            if stop == len(raw):
                try:
                    obj = _loads(raw)
                except ValueError:
                    obj = None
                if isinstance(obj, dict):
                    return obj, None
            stop = cut
            continue
        start = raw.rfind(b"\n", 0, stop - 1) + 1
        try:
            obj = _loads(raw[start:stop - 1])
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            return obj, stop
        stop = start
    return None, None


def read(path: Path) -> State:
    """The stream's state (``{"sources": {}}`` when there is none yet, or none that parses)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raw = b""
    obj, end = _parse(raw)
    st = State(obj if obj is not None and isinstance(obj.get("sources"), dict) else {"sources": {}})
    st.end = end if obj is not None else None
    st.length = len(raw)
    return st


def commit(path: Path, state: State, fsync: bool) -> None:
    """Make ``state`` the stream's committed state: one line appended (and fdatasync'd), or the file replaced
    atomically by that line."""
    line = _dumps(state) + b"\n"
    end = state.end
    if end is None or end + len(line) > COMPACT:
        _replace(path, line, fsync)
        state.end, state.length = len(line), len(line)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if state.length != end:  # a torn line a crash left: cut it, then append
            os.ftruncate(fd, end)
        if os.pwrite(fd, line, end) != len(line):
            raise OSError(28, "No space left on device (a short write of the commit record)")
        if fsync:
            os.fdatasync(fd)
    finally:
        os.close(fd)
    state.end = state.length = end + len(line)


def _replace(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(28, "No space left on device (a short write of the commit record)")
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
