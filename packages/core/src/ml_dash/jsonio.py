"""JSON helpers shared by every module that reads or writes JSON: the fast encoder, timestamps, ids, atomic
metadata writes, tolerant reads of JSON and JSONL files and the scan for the last complete line of a file.

Nothing here knows the `.dash` layout; that is `layout`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _no_default(o: Any) -> Any:
    raise TypeError(f"value of type {type(o).__name__} is not JSON serialisable")


try:  # the C encoder, built once: JSONEncoder.encode rebuilds it on every call, which costs more than encoding
    from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
    from json.encoder import encode_basestring_ascii as _esc

    _c_enc = _c_make_encoder(None, _no_default, _esc, None, ": ", ", ", False, False, True)

    def encode(o: Any) -> str:
        return "".join(_c_enc(o, 0))
except (ImportError, TypeError):  # pragma: no cover - pure-Python json
    encode = json.JSONEncoder(allow_nan=True, default=_no_default).encode

try:  # orjson formats a row ~10x faster than the standard encoder (whose float repr dominates a row's cost)
    import orjson as _orjson

    _dumps = _orjson.dumps
    _loads = _orjson.loads
    # dataclasses and datetimes are not values a record may hold: let them fail as the standard encoder does
    _OPT = _orjson.OPT_PASSTHROUGH_DATACLASS | _orjson.OPT_PASSTHROUGH_DATETIME
    OPT_LINE = _OPT | _orjson.OPT_APPEND_NEWLINE
except ImportError:  # pragma: no cover - orjson is a dependency; the standard encoder still works without it
    _orjson = None  # type: ignore[assignment]
    _loads = json.loads  # type: ignore[assignment]


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One JSONL line as a dict (None for a blank, corrupt or non-object line), as Python's json reads it: orjson
    first, the standard parser for what orjson refuses (the bare ``NaN`` / ``Infinity`` tokens)."""
    try:
        obj = _loads(line)
    except ValueError:
        try:
            obj = json.loads(line)
        except ValueError:
            return None
    return obj if isinstance(obj, dict) else None


def iso_seconds(text: Any) -> Any:
    """ISO-8601 (``...Z``) as unix seconds; anything else unchanged."""
    if not isinstance(text, str):
        return text
    try:
        t = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return text
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def dumpb(o: Any) -> bytes:
    """Compact JSON bytes of ``o``, the same in meaning as `encode`: non-finite floats are written as ``NaN``,
    ``Infinity`` and ``-Infinity`` (orjson would write them as ``null``, so any ``null`` in its output, or a
    value it refuses (ints beyond 64 bits, lone surrogates), sends the value to the standard encoder)."""
    if _orjson is not None:
        try:
            b = _dumps(o, None, _OPT)
        except TypeError:
            pass
        else:
            if b"null" not in b:
                return b
    return encode(o).encode()


def join_lines(objs: list[Any], line: Callable[[int, bytes], bytes]) -> bytes:
    """``line(k, dumpb(objs[k]))`` for every object, joined: one orjson pass when it can write them all. Each
    orjson result is formatted and dropped at once (an orjson result keeps a 4 KiB buffer: a list of them would
    hold 4 KiB per row)."""
    if _orjson is not None:
        try:
            blob = b"".join([line(k, _dumps(o, None, _OPT)) for k, o in enumerate(objs)])
        except TypeError:
            pass
        else:
            if b"null" not in blob:
                return blob
    return b"".join([line(k, dumpb(o)) for k, o in enumerate(objs)])


def object_lines(objs: list[Any], nulls: int = 0) -> bytes | None:
    """The JSONL of a list of dicts, from one orjson call over the whole list: the array is cut into lines at
    ``},{``. None (the caller formats row by row) unless the cut is exact and the text holds exactly ``nulls``
    ``null`` tokens (those the caller put there: any other is a non-finite float or text the standard encoder
    writes differently). A ``},{`` inside a row (in a string, or between nested objects) adds to the count of
    cuts, and two occurrences cannot overlap, so a count of one less than the rows means every cut is a row's
    end."""
    if _orjson is None or not objs:
        return None
    try:
        b = _dumps(objs, None, _OPT)
    except TypeError:
        return None
    if b.count(b"null") != nulls or b.count(b"},{") != len(objs) - 1 or not b.startswith(b"[{"):
        return None
    return b[1:-1].replace(b"},{", b"}\n{") + b"\n"


def dumpb_line(o: Any) -> bytes:
    """`dumpb` plus a trailing newline: one JSONL line."""
    if _orjson is not None:
        try:
            b = _dumps(o, None, OPT_LINE)
        except TypeError:
            pass
        else:
            if b"null" not in b:
                return b
    return (encode(o) + "\n").encode()


_iso_cache: tuple[int | None, str] = (None, "")  # (second, its text): rows logged within one second share it
_day_cache: tuple[int | None, str] = (None, "")


def iso(ts: float) -> str:
    """ISO-8601 UTC with microseconds and a trailing Z (the reference's format), cached per second and per day."""
    global _iso_cache, _day_cache
    s = int(ts)
    cached = _iso_cache
    if cached[0] != s:
        day, sec = divmod(s, 86400)
        if _day_cache[0] != day:
            _day_cache = (day, time.strftime("%Y-%m-%dT", time.gmtime(day * 86400)))
        hour, sec = divmod(sec, 3600)
        cached = (s, "%s%02d:%02d:%02d" % (_day_cache[1], hour, *divmod(sec, 60)))
        _iso_cache = cached
    return "%s.%06dZ" % (cached[1], int((ts - s) * 1_000_000))


def isos(stamps: list[float]) -> list[str]:
    """`iso` of each of ``stamps`` (the per-second cache inlined: a batch of log lines shares a few seconds)."""
    out: list[str] = []
    add = out.append
    last = None
    fmt = ""
    for ts in stamps:
        s = int(ts)
        if s != last:
            fmt = iso(float(s))[:-7] + "%06dZ"  # "%d" of a float truncates, as `iso`'s int() does
            last = s
        add(fmt % ((ts - s) * 1_000_000))
    return out


def iso_parts(stamps: list[float]) -> tuple[list[bytes], list[int]] | None:
    """`iso` of each of ``stamps`` in two parts, the second ``b"YYYY-MM-DDTHH:MM:SS"`` and the microseconds
    (``b"%s.%06dZ" % parts`` is `iso`), computed by numpy without a Python step per stamp; None when numpy is not
    imported yet (it is not imported here: an import on the writer thread would hold the GIL for a long time)
    or a stamp is negative or not finite."""
    np = sys.modules.get("numpy")
    if np is None or not stamps:
        return None
    try:
        a = np.array(stamps, dtype=np.float64)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 2.5e11:
            return None
        secs = np.trunc(a)
        micros = ((a - secs) * 1_000_000).astype(np.int64).tolist()  # the float arithmetic of `iso`
        uniq, where = np.unique(secs.astype(np.int64), return_inverse=True)
        heads = np.array([iso(float(x))[:-8].encode() for x in uniq.tolist()], dtype=object)
        return heads[where.reshape(-1)].tolist(), micros
    except (TypeError, ValueError, AttributeError):  # pragma: no cover - an odd numpy
        return None


def strings_json(strings: list[str]) -> list[bytes] | None:
    """The JSON text of each string less its quotes (`dumpb` of it), from one orjson call over the list, cut at
    ``","``; None when that cut could be wrong (a string holds an escaped quote, so the text has ``\\"``) or
    `dumpb` would not write orjson's text (``null`` in it)."""
    if _orjson is None or not strings:
        return None
    try:
        blob = _dumps(strings, None, _OPT)
    except TypeError:
        return None
    if b'\\"' in blob or b"null" in blob:
        return None
    parts = blob[2:-2].split(b'","')
    return parts if len(parts) == len(strings) else None


def now_iso() -> str:
    return iso(time.time())


_last_id = [0]
_id_lock = threading.Lock()


def new_id() -> str:
    """The reference's id scheme, a millisecond time shifted left 12 bits plus 12 random bits, made strictly
    increasing within a process so that ids taken in the same millisecond never collide."""
    with _id_lock:
        candidate = (int(time.time() * 1000) << 12) | random.getrandbits(12)
        if candidate <= _last_id[0]:
            candidate = _last_id[0] + 1
        _last_id[0] = candidate
    return str(candidate)


def read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing, empty or corrupt."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def write_json_atomic(path: Path, obj: Any, *, fsync: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = json.dumps(obj, indent=2, allow_nan=True).encode()
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a size limit: never leave the temporary copy behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_jsonl(path: Path, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """All complete, parseable lines of a JSONL file (of its first ``limit`` bytes), and how many lines were
    skipped (torn or corrupt)."""
    try:
        with open(path, "rb") as f:
            raw = f.read() if limit is None else f.read(limit)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return [], 0
    out: list[dict[str, Any]] = []
    skipped = 0
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:  # torn last line (no newline): ignored
        lines.pop()
        skipped += 1
    for line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if isinstance(obj, dict):
            out.append(obj)
        else:
            skipped += 1
    return out, skipped


def complete_end(path: Path) -> tuple[int, int]:
    """(size of the file, end of its last complete line); (0, 0) when it does not exist."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            pos = size
            while pos > 0:
                step = min(65536, pos)
                f.seek(pos - step)
                chunk = f.read(step)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    return size, pos - step + nl + 1
                pos -= step
            return size, 0
    except FileNotFoundError:
        return 0, 0


def scan_tail(fd: int, size: int) -> tuple[int, dict[str, Any] | None]:
    """(end of the last complete line, the last complete line that parses) of an open file of ``size`` bytes."""
    pos = size
    block = 65536
    buf = b""
    valid_end = -1
    while pos > 0:
        start = max(0, pos - block)
        chunk = os.pread(fd, pos - start, start)
        buf = chunk + buf
        pos = start
        if valid_end < 0:
            nl = buf.rfind(b"\n")
            if nl < 0:
                continue
            valid_end = pos + nl + 1
            buf = buf[: nl + 1]
        # walk complete lines backwards until one parses
        lines = buf.split(b"\n")[:-1]
        # the first element may be partial unless we reached the start of the file
        first_complete = 0 if pos == 0 else 1
        for line in reversed(lines[first_complete:]):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return valid_end, obj
        if pos == 0:
            break
        buf = lines[0] + b"\n" if lines else b""
    return (valid_end if valid_end >= 0 else 0), None
