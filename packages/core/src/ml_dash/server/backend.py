"""What the HTTP routes need from a storage engine, and the checks and merge rules every engine shares.

Two engines implement `Backend`: the `.dash` folder (`folder.FolderBackend`, the default and the embedded store)
and PostgreSQL plus an object store (`pg.PgBackend`). Both give the same guarantees: an append names its *source*
(one client `.dash` folder) and carries the source's own positions (journal indices for logs and metrics, journal
byte offsets for tracks); per stream and source the engine remembers how far that source got, so a batch sent any
number of times is stored once, and rows of several sources to one stream are renumbered into one gap-free index
sequence.
"""

from __future__ import annotations

import errno
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

from .. import layout
from ..jsonio import iso, now_iso
from ..names import file_name, logical_dir, metric_segments, topic_folder

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SOURCE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
INFO_KEYS = ("description", "tags", "metadata", "status", "statusReason", "heartbeatAt", "endedAt")
KINDS = ("logs", "metrics", "tracks")


class BadRequest(ValueError):
    """The request can never succeed as sent (HTTP 400)."""


# ASCII with \uXXXX escapes: any Python string (a lone surrogate too) is stored and answered losslessly
encode = json.JSONEncoder(allow_nan=True).encode


class Unavailable(RuntimeError):
    """The engine cannot answer now (database or object store unreachable): HTTP 503, the client retries."""


class Backend(ABC):
    """One storage engine behind the routes. Names (prefixes, metric names, topics) arrive unchecked: every
    method validates them and raises `BadRequest` for bad input."""

    # (factory, args) that builds this engine again in a worker process (`work`); None: serve it in-process only
    spec: tuple[Any, tuple[Any, ...]] | None = None

    # ---- writes ---------------------------------------------------------------------------------------------
    @abstractmethod
    def open_experiment(self, prefix: str, info: dict[str, Any], source: str) -> tuple[dict[str, Any], bool]:
        """Create or reopen; apply the client's descriptive and status fields unless stale. (info, created)."""

    @abstractmethod
    def set_params(self, prefix: str, data: Any, version: Any, source: str) -> bool:
        """Merge ``data`` into the parameters; False when this source already sent this ``version``."""

    @abstractmethod
    def append_logs(self, prefix: str, records: Any, source: str) -> dict[str, int]: ...

    @abstractmethod
    def append_metrics(self, prefix: str, name: str, records: Any, source: str) -> dict[str, int]: ...

    @abstractmethod
    def append_tracks(self, prefix: str, topic: str, entries: Any, offset: Any, end: Any, offsets: Any,
                      source: str) -> dict[str, int]: ...

    @abstractmethod
    def has_file(self, prefix: str, fid: str) -> bool: ...

    @abstractmethod
    def incoming(self) -> Path:
        """A fresh local path to stage one upload in while it streams in."""

    @abstractmethod
    def publish_file(self, prefix: str, staged: Path, entry: dict[str, Any]) -> bool:
        """Store the staged content under the checked entry; False when that id was already stored."""

    # ---- reads ----------------------------------------------------------------------------------------------
    @abstractmethod
    def experiments(self) -> list[tuple[str, dict[str, Any]]]:
        """(prefix, experiment.json) of every experiment, by prefix."""

    @abstractmethod
    def info(self, prefix: str) -> dict[str, Any] | None:
        """experiment.json, or None when there is no such experiment."""

    @abstractmethod
    def params(self, prefix: str) -> dict[str, Any]:
        """parameters.json: ``{"version": n, "data": {...}, ...}``."""

    @abstractmethod
    def names(self, prefix: str, kind: str) -> list[str]:
        """Metric names (kind "metrics") or track topics (kind "tracks"), sorted."""

    @abstractmethod
    def rows(self, prefix: str, kind: str, name: str | None = None, start: int = 0,
             limit: int | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(total, rows[start:start+limit]) of one stream as stored: logs (name None), a metric, a track topic
        (entries unmerged). An unknown stream is empty."""

    def rows_json(self, prefix: str, kind: str, name: str | None = None, start: int = 0,
                  limit: int | None = None) -> tuple[int, list[str]]:
        """`rows` as JSON texts, for answering pages without decoding and encoding every row again."""
        total, rows = self.rows(prefix, kind, name, start, limit)
        return total, [encode(r) for r in rows]

    @abstractmethod
    def files(self, prefix: str) -> list[dict[str, Any]]:
        """The file index entries (deleted ones left out)."""

    @abstractmethod
    def file_content(self, prefix: str, fid: str) -> tuple[dict[str, Any], Path | Iterator[bytes]] | None:
        """(entry, a local path or a byte-chunk iterator) of one file, None when missing."""

    # ---- reads for `ml-dash ls/show/export --url` and the viewer (docs/reading.md) ----------------------------
    @abstractmethod
    def summaries(self, last: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        """`runs.summary` of every run, by prefix (``last``: (stream, field) pairs whose last values to add)."""

    def summaries_json(self, last: list[tuple[str, str]] | None = None) -> bytes:
        """``{"runs": summaries(last)}`` as the JSON the read routes answer (an engine may keep it encoded)."""
        body = json.dumps({"runs": self.summaries(last)}, allow_nan=True, separators=(",", ":"), default=str)
        return body.encode()

    @abstractmethod
    def show(self, prefix: str) -> dict[str, Any] | None:
        """`runs.show` of one run (summary plus per-metric statistics), None when there is no such run."""

    @abstractmethod
    def columns(self, prefix: str, kind: str, name: str | None, fields: Any = None) -> Any:
        """`colview.Columns` of one stream (kind: metrics, tracks or logs; empty when it has no rows); bad
        names and unknown ``fields`` raise ValueError / KeyError."""

    def close(self) -> None:  # noqa: B027  (most engines hold nothing to release)
        """Release connections (the process is stopping)."""


# ---- checks shared by the engines ---------------------------------------------------------------------------
def check_source(source: object) -> str:
    if source is None:
        return "anonymous"
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise BadRequest("'source' must be 1-100 characters of [A-Za-z0-9_.-]")
    return source


MAX_POSITION = 2**63 - 1  # indices, offsets and versions: a 64-bit integer at most


def is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_POSITION


def check_kind(kind: str, name: str | None) -> None:
    if kind not in KINDS:
        raise BadRequest(f"unknown stream kind {kind!r}; one of {', '.join(KINDS)}")
    try:
        if kind == "metrics":
            metric_segments(name)
        elif kind == "tracks":
            topic_folder(name)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise BadRequest(str(e)) from None


def bulk_checked(records: list[Any], field: str, data: bool = False) -> bool:
    """True when every record is an object with an integer ``field`` from 0 to ``MAX_POSITION - 1`` (and, with
    ``data``, an object "data"): the per-row checks below in a few C passes over the batch. False: the per-row
    checks find what is wrong and name it."""
    if not records or set(map(type, records)) != {dict}:
        return False
    try:
        idx = list(map(itemgetter(field), records))
        if data and set(map(type, map(itemgetter("data"), records))) != {dict}:
            return False
    except KeyError:
        return False
    return set(map(type, idx)) == {int} and min(idx) >= 0 and max(idx) < MAX_POSITION


def check_records(records: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(records, list):
        raise BadRequest("'records' must be a list")
    if bulk_checked(records, field):
        return records
    for r in records:  # below MAX_POSITION: the source's mark (its next position) must fit in 64 bits too
        v = r.get(field) if type(r) is dict else None  # (is_count inlined: this runs once per row)
        if type(v) is not int or not 0 <= v < MAX_POSITION:
            raise BadRequest(f"every record needs an integer {field!r} from 0 to {MAX_POSITION - 1}")
    return records


def check_logs(records: Any) -> list[dict[str, Any]]:
    recs = check_records(records, "sequenceNumber")
    for r in recs:
        if not isinstance(r.get("message"), str) or not isinstance(r.get("level"), str):
            raise BadRequest("every log record needs string 'level' and 'message'")
    return recs


def check_metrics(name: Any, records: Any) -> list[dict[str, Any]]:
    check_kind("metrics", name)
    if isinstance(records, list) and bulk_checked(records, "index", data=True):
        return records
    recs = check_records(records, "index")
    for r in recs:
        if not isinstance(r.get("data"), dict):
            raise BadRequest("every metric record needs an object 'data'")
    return recs


def check_tracks(topic: Any, entries: Any, offset: Any, end: Any, offsets: Any) -> list[dict[str, Any]]:
    check_kind("tracks", topic)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BadRequest("'entries' must be a list of objects")
    for e in entries:
        ts = e.get("timestamp")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise BadRequest("every track entry needs a numeric 'timestamp'")
    if not is_count(offset) or offset >= MAX_POSITION:  # the source's mark (offset + 1) must fit in 64 bits too
        raise BadRequest("'offset' must be the journal byte offset of the first entry")
    if end is not None and not is_count(end):
        raise BadRequest("'end' must be an integer")
    if offsets is not None and (not isinstance(offsets, list) or len(offsets) != len(entries)
                                or not all(is_count(o) for o in offsets)):
        raise BadRequest("'offsets' must hold one integer per entry")
    return entries


def check_params(data: Any, version: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or not all(isinstance(k, str) and k for k in data):
        raise BadRequest("'data' must be an object with non-empty string keys")
    if version is not None and not is_count(version):
        raise BadRequest(f"'version' must be an integer from 0 to {MAX_POSITION}")
    return data


def check_file_entry(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise BadRequest("'entry' must be a JSON object")
    e = {k: v for k, v in entry.items() if k != "localPath"}
    fid = e.get("id")
    if not isinstance(fid, str) or not _ID.match(fid):
        raise BadRequest("file 'id' must be 1-64 characters of [A-Za-z0-9_-]")
    try:
        e["path"] = logical_dir(e.get("path", "/"))
        e["filename"] = file_name(e.get("filename"))
    except (TypeError, ValueError) as err:
        raise BadRequest(str(err)) from None
    layout.entry_defaults(e, now_iso())  # the layout's fields, for entries from clients that leave them out
    _check_entry_fields(e)
    return e


_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _check_entry_fields(e: dict[str, Any]) -> None:
    """The fields of a files index entry a client sends: their types, and what becomes an HTTP header."""
    from ..names import content_type

    try:
        content_type(e["contentType"])
    except (TypeError, ValueError) as err:
        raise BadRequest(f"file entry 'contentType': {err}") from None
    for k in ("description", "experimentId", "deletedAt"):
        if e[k] is not None and not isinstance(e[k], str):
            raise BadRequest(f"file entry {k!r} must be a string or null")
    for k in ("uploadedAt", "updatedAt"):
        if not isinstance(e[k], str) or len(e[k]) > 64:
            raise BadRequest(f"file entry {k!r} must be an ISO-8601 time string")
    for k in ("tags", "bindrs"):
        if not isinstance(e[k], list) or not all(isinstance(t, str) for t in e[k]):
            raise BadRequest(f"file entry {k!r} must be a list of strings")
    if e["metadata"] is not None and not isinstance(e["metadata"], dict):
        raise BadRequest("file entry 'metadata' must be an object or null")
    checksum = e.get("checksum")
    if checksum not in (None, "") and not (isinstance(checksum, str) and _HEX64.match(checksum)):
        raise BadRequest("file entry 'checksum' must be the content's sha256 as 64 hex digits, or null")
    size = e.get("sizeBytes")
    if size is not None and not is_count(size):
        raise BadRequest("file entry 'sizeBytes' must be a non-negative integer or null")


_FULL = {errno.ENOSPC: "no space left on the server's disk", errno.EDQUOT: "the server's disk quota is exceeded",
         errno.EFBIG: "a file on the server reached its size limit"}


def storage_failure(e: OSError) -> tuple[int, str]:
    """The HTTP status and reason for a storage error while handling a request: 507 for a full disk (retry
    later), 400 for a name the file system refuses, 503 for any other storage fault (retry later)."""
    what = f"{e.strerror or type(e).__name__} (errno {e.errno})"
    if e.errno in _FULL:
        return 507, f"insufficient storage: {_FULL[e.errno]}: {what}; nothing of this request was committed; retry later"
    if e.errno == errno.ENAMETOOLONG:
        return 400, f"a name is too long for the server's file system: {what}"
    return 503, f"storage error on the server: {what}; nothing of this request was committed; retry later"


# ---- merge rules shared by the engines ----------------------------------------------------------------------
def new_info(prefix: str, info: dict[str, Any]) -> dict[str, Any]:
    """experiment.json of an experiment this server creates (``prefix`` already checked)."""
    return layout.info_for(prefix, _str(info.get("created_at")) or now_iso())


def merge_info(cur: dict[str, Any], info: Any, last: str | None) -> str | None:
    """Apply the client's fields to ``cur`` unless its ``updated_at`` is older than this source's ``last``;
    returns the source's new mark (None: stale, nothing applied)."""
    if not isinstance(info, dict):
        raise BadRequest("'info' must be an object")
    stamp = _str(info.get("updated_at")) or ""
    if len(stamp) > 64 or not stamp.isprintable():  # it is kept as this source's mark (PostgreSQL: a text column)
        raise BadRequest("'updated_at' must be an ISO-8601 time string (at most 64 printable characters)")
    applied = None
    if last is None or stamp >= str(last):
        for k in INFO_KEYS:
            if k in info:
                _apply(cur, k, info[k])
        if "status" in info and "statusReason" not in info:
            cur.pop("statusReason", None)
        applied = stamp
    cur["updated_at"] = now_iso()
    return applied


def renumber(recs: list[dict[str, Any]], field: str, mark: int, next_index: int,
             metric: bool) -> tuple[list[tuple[int, dict[str, Any]]], int, int]:
    """The records past this source's ``mark``, renumbered from ``next_index``: ([(source index, record)],
    new mark, new next index). The records are renumbered in place (they are the request's own, parsed for it)."""
    out = []
    if any(recs[k][field] > recs[k + 1][field] for k in range(len(recs) - 1)):
        recs = sorted(recs, key=lambda r: int(r[field]))
    now = None
    for rec in recs:
        src = rec[field]
        if src < mark:
            continue
        mark = src + 1
        rec[field] = next_index
        if metric and "createdAt" not in rec:
            ts = rec["data"].get("_ts")
            if isinstance(ts, (int, float)) and 0 < ts < 1e11:
                rec["createdAt"] = iso(ts)
            else:
                rec["createdAt"] = now = now or now_iso()
        out.append((src, rec))
        next_index += 1
    return out, mark, next_index


def track_keep(entries: list[dict[str, Any]], offset: int, end: int | None, offsets: list[int] | None,
               mark: int) -> tuple[list[tuple[int | None, dict[str, Any]]], int]:
    """The entries past this source's ``mark`` (a journal byte offset): ([(offset or None, entry)], new mark)."""
    if offsets is not None:
        keep: list[tuple[int | None, dict[str, Any]]] = [(o, e) for e, o in zip(entries, offsets, strict=True)
                                                         if o >= mark]
    else:  # batch-granular: a retry resends the same batch
        keep = [(None, e) for e in entries] if offset >= mark else []
    return keep, max(mark, end if end is not None else offset + 1)


def metric_meta(m: Any, name: str, n: int) -> dict[str, Any]:
    """A metric's metadata.json (``m``, or a new one) for a data file of ``n`` rows: the layout's shape."""
    out: dict[str, Any] = m if isinstance(m, dict) else layout.metric_meta(name)
    layout.count_metric(out, n)
    return out


def track_meta(m: Any, topic: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A topic's metadata.json (``m``, or a new one) with ``entries`` (just appended) counted in."""
    out: dict[str, Any] = m if isinstance(m, dict) else layout.track_meta(topic)
    layout.track_stats(out, entries)
    out["updatedAt"] = now_iso()
    return out


def new_params(cur: Any, data: dict[str, Any]) -> dict[str, Any]:
    """parameters.json after merging ``data``."""
    return layout.new_params(cur, data)


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _apply(cur: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        if key in ("statusReason", "endedAt"):
            cur.pop(key, None)
        else:
            cur[key] = None
        return
    if key == "tags" and not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
        raise BadRequest("'tags' must be a list of strings")
    if key in ("status", "statusReason", "heartbeatAt", "endedAt", "description") and not isinstance(value, str):
        raise BadRequest(f"{key!r} must be a string")
    if key == "metadata" and not isinstance(value, dict):
        raise BadRequest("'metadata' must be an object")
    cur[key] = value
