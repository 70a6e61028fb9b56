"""The `.dash` layout of one experiment: every path, file name and JSON shape, for reading and writing.

Append-only JSONL streams, atomically replaced metadata, file locks. Every writer (threads of one process, other
processes, re-runs) goes through `ExperimentDir`; indices and sequence numbers are taken under a per-stream lock
from the last complete line of the stream's file, so they stay unique and gap-free however many writers append. A
torn last line left by a killed writer is cut off by the next writer and ignored by readers.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count, islice
from operator import eq
from pathlib import Path
from typing import Any

from .jsonio import (
    dumpb,
    dumpb_line,
    iso_parts,
    isos,
    join_lines,
    new_id,
    now_iso,
    object_lines,
    parse_line,
    read_json,
    read_jsonl,
    scan_tail,
    strings_json,
    write_json_atomic,
)
from .names import DATA as DATA
from .names import EXPERIMENT_JSON as EXPERIMENT_JSON
from .names import FILES as FILES
from .names import FILES_INDEX_STEM as FILES_INDEX_STEM
from .names import LOGS_DIR as LOGS_DIR
from .names import META as META
from .names import METRICS as METRICS
from .names import PARAMETERS_JSON as PARAMETERS_JSON
from .names import PRIVATE as PRIVATE
from .names import TRACKS as TRACKS
from .names import (
    check_prefix,
    metric_segments,
    split_path,
    topic_folder,
)
from .names import content_type as check_content_type

# file and folder names of a run <root>/<prefix>/ (docs/layout.md), spelled in `names` (whose rules refuse them):
# experiment.json, parameters.json; logs/logs.jsonl; metrics/<name>/ and tracks/<folder>/, each with data.jsonl (the
# records) and metadata.json (the summary); files/.files_metadata.json and files/<dir>/<id>/<filename>; .ml_dash/
# (locks/, ring/, staging/, cursors/, quarantine/, mirror-*, server/: never part of the data)
LOGS = f"{LOGS_DIR}/logs.jsonl"
FILES_INDEX = FILES_INDEX_STEM + ".json"  # in files/
RUN_DIRS = frozenset({LOGS_DIR, METRICS, TRACKS, FILES, PRIVATE})  # a run's own folders: no run is nested in them
STALE_AFTER = 60.0  # a RUNNING run whose heartbeat is older than this reads back as CRASHED
STATUS_KEYS = ("status", "heartbeatAt", "updated_at")  # the fields of experiment.json `effective_status` reads
COUNT_KEY = {"metrics": "totalDataPoints", "tracks": "totalEntries"}  # a stream's row count in its metadata.json
# one metric row's stored line (less its newline): index, the data object's text less its braces, createdAt's text
METRIC_LINE = b'{"index":%d,"data":{%b},"createdAt":"%b"}'
_LEVELS = {lv: b'"%s"' % lv.encode() for lv in ("info", "warn", "error", "debug", "fatal")}


def _line(_k: int, b: bytes) -> bytes:
    return b + b"\n"


_LOG_LINE = b'{"sequenceNumber":%d,"timestamp":"%s.%06dZ","level":%b,"message":"%b","metadata":null}\n'


def _plain_log_lines(first: int, entries: list[Any]) -> bytes | None:
    """The journal lines of log lines without metadata, numbered from ``first``, put together without a Python
    step per line: the columns transposed by ``zip``, the timestamps by numpy (`iso_parts`), the messages' JSON
    cut out of one orjson call (`strings_json`), then one %-format for all lines. None when a line has metadata
    or anything else the row-by-row formatter would write differently."""
    if len(entries) < 16:
        return None
    lengths = set(map(len, entries))
    if not lengths <= _PLAIN_LENGTHS or 4 in lengths and any(len(e) > 3 and e[3] is not None for e in entries):
        return None
    stamps, levels, messages = list(zip(*entries, strict=False))[:3]
    if not set(levels) <= _LEVELS.keys() or set(map(type, stamps)) - _STAMP_TYPES:
        return None
    parts = iso_parts(list(stamps))
    texts = strings_json(list(messages)) if set(map(type, messages)) == _STR else None
    if parts is None or texts is None:
        return None
    k = len(entries)
    args: list[Any] = [None] * (5 * k)
    args[0::5] = range(first, first + k)
    args[1::5] = parts[0]
    args[2::5] = parts[1]
    args[3::5] = map(_LEVELS.__getitem__, levels)
    args[4::5] = texts
    return (_LOG_LINE * k) % tuple(args)


_STR = {str}
_PLAIN_LENGTHS = {3, 4}
_STAMP_TYPES = {float, int}


def _track_catch_up(s: Stream, topic: str, meta_path: Path) -> dict[str, Any]:
    """Under the topic's lock: ``s.meta`` counting every entry in the topic's file. Entries another process
    appended since this one last looked are counted from the bytes they added (a writer rewrites metadata.json
    once per pass, so that file may lag behind its data); on the first look, metadata.json is trusted when it
    counts as many entries as the file has lines, else the file is counted again."""
    before = s.known_size
    changed = s.sync_tail()
    meta = s.meta
    if meta is not None and before >= 0:
        if changed and s.known_size > before:
            track_stats(meta, _lines_between(s, before, s.known_size))
        elif changed:  # the file shrank under us (cut, or replaced): count it again
            meta = None
        if meta is not None:
            return meta
    m = read_json(meta_path)
    size = s.known_size
    if not isinstance(m, dict) or m.get("totalEntries") != (_count_lines(s, size) if size > 0 else 0):
        fresh = track_meta(topic)
        if isinstance(m, dict) and isinstance(m.get("trackId"), str):  # keep the topic's identity
            fresh["trackId"], fresh["createdAt"] = m["trackId"], m.get("createdAt", fresh["createdAt"])
        m = fresh
        if size > 0:
            rows, _ = read_jsonl(s.path, size)
            track_stats(m, rows)
    assert isinstance(m, dict)
    s.meta = m
    return m


def _lines_between(s: Stream, start: int, end: int) -> list[dict[str, Any]]:
    assert s.fd is not None
    data = os.pread(s.fd, end - start, start)
    return [d for d in map(parse_line, data.split(b"\n")) if d is not None]


def _count_lines(s: Stream, size: int) -> int:
    assert s.fd is not None
    n = off = 0
    while off < size:
        chunk = os.pread(s.fd, min(1 << 22, size - off), off)
        if not chunk:
            break
        n += chunk.count(b"\n")
        off += len(chunk)
    return n


def _warn(message: str) -> None:
    from .console import warn

    warn(message)


def _write_meta(path: Path, s: Stream) -> None:
    """metadata.json is derived from the data file: failing to rewrite it must not fail (and so repeat) the
    batch that was already appended; the next batch rewrites it."""
    s.meta_dirty = False
    try:
        write_json_atomic(path, s.meta)
    except OSError as e:
        s.meta = None
        _warn(f"could not rewrite {path} ({type(e).__name__}: {e}); it is rewritten with the next batch")


_thread_locks: dict[str, threading.Lock] = {}


def _reset_locks_in_child() -> None:
    _thread_locks.clear()  # a lock held by a parent's thread at fork time would never be released here


os.register_at_fork(after_in_child=_reset_locks_in_child)


class Stream:
    """One append-only JSONL file (logs, one metric, one track topic) with its lock and bookkeeping."""

    def __init__(self, path: Path, index_field: str | None) -> None:
        self.path = path
        self.index_field = index_field
        self.fd: int | None = None
        self.known_size = -1
        self.next_index = 0
        self.dirty = False
        self.meta: dict[str, Any] | None = None
        self.meta_dirty = False
        self.lock_name = ""
        self.topic: str | None = None  # a track topic's stream: its topic

    def _open(self) -> int:
        if self.fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            self.known_size = -1
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
            self.known_size = -1

    def forget(self) -> None:
        """After fork: drop the inherited descriptor without touching the parent's state."""
        self.fd = None
        self.known_size = -1

    def sync_tail(self) -> bool:
        """Under the lock: catch up with other writers; cut a torn last line. True when the file changed."""
        fd = self._open()
        st = os.fstat(fd)
        if st.st_nlink == 0:  # the file (or the whole root) was deleted under us: start a new file
            self.close()
            self.meta = None
            fd = self._open()
            st = os.fstat(fd)
            _warn(f"{self.path} was deleted while the run was writing it; recreated it")
        size = st.st_size
        if size == self.known_size:
            return False
        valid_end, last = scan_tail(fd, size)
        if valid_end < size:
            os.ftruncate(fd, valid_end)
            size = valid_end
        if self.index_field is not None:
            idx = last.get(self.index_field) if last else None
            self.next_index = idx + 1 if isinstance(idx, int) else 0
        self.known_size = size
        return True

    def write(self, data: bytes) -> None:
        fd = self._open()
        start = self.known_size
        view = memoryview(data)
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError:
            # a partial batch (disk full, file size limit) is cut off again, so the retry does not duplicate it
            try:
                os.ftruncate(fd, start)
            except OSError:
                self.known_size = -1  # rescan under the lock next time
            raise
        self.known_size += len(data)
        self.dirty = True

    def fsync(self) -> None:
        if self.dirty and self.fd is not None:
            os.fsync(self.fd)
            self.dirty = False


class MirrorMark:
    """How far into a source's track file a mirror holds (a byte offset)."""

    def __init__(self, end: int) -> None:
        self.end = end


class ExperimentDir:
    """Reads and writes one experiment folder ``<root>/<prefix>/`` in the `.dash` layout."""

    def __init__(self, root: str | os.PathLike[str], prefix: str) -> None:
        segs = check_prefix(prefix)
        self.root = Path(root)
        self.prefix = "/".join(segs)
        self.project = segs[0]
        self.name = segs[-1]
        self.path = self.root.joinpath(*segs)
        self.private = self.path / ".ml_dash"
        self._real_root = os.path.realpath(self.root)
        self.inside(self.private)
        self._streams: dict[tuple[str, str | None], Stream] = {}
        self._topic_dirs: dict[str, str] = {}
        self._lock_paths: dict[str, str] = {}
        # the background writer sets this: a metric's metadata.json (derived from the last index, so another writer
        # cannot make it wrong) is rewritten once per pass (`write_metas`) rather than after every batch
        self.defer_meta = False
        self._lock = threading.Lock()

    def inside(self, path: Path) -> Path:
        """``path``, unless a symbolic link on the way leads out of the root (ValueError): nothing is ever read
        or written outside the root, whatever links someone placed in it."""
        real = os.path.realpath(path)
        if real != self._real_root and not real.startswith(self._real_root.rstrip(os.sep) + os.sep):
            raise ValueError(f"refused: {path} leads out of the root {self.root} through a symbolic link")
        return path

    # ---- locks ---------------------------------------------------------------------------------------------
    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Exclusive access to one stream or file, across threads (a process-wide lock per lock file) and
        processes (a POSIX record lock, which a forked child does not inherit, unlike flock)."""
        lock_dir = self.private / "locks"
        path = self._lock_paths.get(name)
        if path is None:
            path = self._lock_paths[name] = str(lock_dir / (hashlib.sha1(name.encode()).hexdigest()[:20] + ".lock"))
        tlock = _thread_locks.get(path)
        if tlock is None:
            tlock = _thread_locks.setdefault(path, threading.Lock())
        with tlock:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                lock_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the lock

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        for s in self._streams.values():
            s.forget()

    def close(self) -> None:
        for s in self._streams.values():
            s.close()

    # ---- experiment.json / parameters.json -----------------------------------------------------------------
    def open_info(self, description: str | None, tags: list[str] | None, metadata: dict[str, Any] | None) -> dict[str, Any]:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.locked(EXPERIMENT_JSON):
            raw = read_json(self.path / EXPERIMENT_JSON)
            now = now_iso()
            info: dict[str, Any]
            if not isinstance(raw, dict):
                info = new_info(self.name, self.project, self.prefix, description, tags, metadata, now)
            else:
                info = raw
                if description is not None:
                    info["description"] = description
                if tags is not None:
                    info["tags"] = list(tags)
                if metadata is not None:
                    info["metadata"] = metadata
            info["updated_at"] = now
            info["status"] = "RUNNING"
            info.pop("statusReason", None)
            info["heartbeatAt"] = now
            write_json_atomic(self.path / EXPERIMENT_JSON, info)
        return info

    def update_info(self, **changes: Any) -> dict[str, Any]:
        with self.locked(EXPERIMENT_JSON):
            raw = read_json(self.path / EXPERIMENT_JSON)
            info: dict[str, Any] = raw if isinstance(raw, dict) else new_info(
                self.name, self.project, self.prefix, None, None, None, now_iso())
            for k, v in changes.items():
                if v is None:
                    info.pop(k, None)
                else:
                    info[k] = v
            info["updated_at"] = now_iso()
            write_json_atomic(self.path / EXPERIMENT_JSON, info, fsync="status" in changes)
        return info

    def set_params(self, flat: dict[str, Any]) -> int:
        path = self.path / PARAMETERS_JSON
        with self.locked(PARAMETERS_JSON):
            cur = read_json(path)
            if not isinstance(cur, dict) or not isinstance(cur.get("data"), dict):
                if path.exists() and path.stat().st_size:
                    shutil.copyfile(path, path.with_name(f".parameters.corrupt.{int(time.time())}.json"))
                cur = None
            cur = new_params(cur, flat)
            write_json_atomic(path, cur)
        return int(cur["version"])

    # ---- streams --------------------------------------------------------------------------------------------
    def _stream(self, kind: str, name: str | None) -> Stream:
        key = (kind, name)
        s = self._streams.get(key)
        if s is None:
            if kind == LOGS_DIR:
                s = Stream(self.path / LOGS, "sequenceNumber")
            elif kind == METRICS:
                s = Stream(self.path.joinpath(*metric_parts(name)), "index")
                s.lock_name = str(name)
            else:
                assert name is not None
                s = Stream(self.path.joinpath(*track_parts(self.track_folder(name))), None)
                s.topic = name
            self.inside(s.path)
            self._streams[key] = s
        return s

    def stream_path(self, kind: str, name: str | None) -> Path:
        """The JSONL file of a stream: kind "logs" (name None), "metrics" or "tracks"."""
        return self._stream(kind, name).path

    def track_folder(self, topic: str) -> str:
        """Folder for a topic: '/' -> '_' as in the reference; '~2', '~3', ... when another topic holds it."""
        cached = self._topic_dirs.get(topic)
        if cached is not None:
            return cached
        base = topic_folder(topic)
        tracks = self.path / TRACKS
        with self.locked("tracks-folders"):
            n = 1
            while True:
                folder = base if n == 1 else f"{base}~{n}"
                meta_path = tracks / folder / META
                meta = read_json(meta_path)
                if meta_topic(meta) == topic:
                    break
                if meta is None and not self.inside(tracks / folder / DATA).exists():
                    # claim it now so a concurrent writer of another topic goes on to the next folder
                    (tracks / folder).mkdir(parents=True, exist_ok=True)
                    write_json_atomic(meta_path, track_meta(topic))
                    break
                n += 1
        self._topic_dirs[topic] = folder
        return folder

    def append_logs(self, entries: list[Any]) -> None:
        """Append log lines, each ``(ts, level, message[, metadata])`` (a tuple or a list; no metadata: None)."""
        if not entries:
            return
        s = self._stream("logs", None)
        with self.locked(stream_key(LOGS_DIR)):
            s.sync_tail()
            n = s.next_index
            blob = _plain_log_lines(n, entries)
            if blob is not None:
                s.write(blob)
                s.next_index = n + len(entries)
                return
            stamps = isos([e[0] for e in entries])
            recs = [{"sequenceNumber": k, "timestamp": t, "level": e[1], "message": e[2],
                     "metadata": e[3] if len(e) > 3 else None} for k, t, e in zip(count(n), stamps, entries)]
            nulls = sum(1 for r in recs if r["metadata"] is None)
            blob = object_lines(recs, nulls)  # one orjson call for the batch; row by row when it cannot be exact
            if blob is None:
                blob = b"".join([b'{"sequenceNumber":%d,"timestamp":"%s","level":%b,"message":%b,"metadata":%b}\n'
                                 % (r["sequenceNumber"], r["timestamp"].encode(),
                                    _LEVELS.get(r["level"]) or dumpb(r["level"]), dumpb(r["message"]),
                                    b"null" if r["metadata"] is None else dumpb(r["metadata"])) for r in recs])
            s.write(blob)
            s.next_index = n + len(recs)

    def append_metrics(self, name: str | None, rows: list[dict[str, Any]], records: bool = False) -> None:
        """Append rows (each holding '_ts') with fresh indices; with ``records`` append stored-form records,
        skipping those whose index is already present (idempotent re-delivery)."""
        s = self._stream("metrics", name)
        with self.locked(stream_key(METRICS, name)):
            created = s.sync_tail() or s.meta is None
            n = s.next_index
            parts = []
            if records:
                for r in rows:
                    idx = r.get("index")
                    if not isinstance(idx, int) or idx < n:
                        continue
                    rec = dict(r)
                    rec["index"] = n
                    parts.append(dumpb_line(rec))
                    n += 1
            else:
                created_at = now_iso().encode()  # when the batch was stored; each row's call time is data["_ts"]
                first = n
                parts.append(join_lines(rows, lambda k, data: b'{"index":%d,"data":%b,"createdAt":"%b"}\n'
                                        % (first + k, data, created_at)))
                n += len(rows)
            if not parts or not rows:
                return
            s.write(b"".join(parts))
            self._counted(s, name, created, n)

    def append_metric_pieces(self, name: str | None, pieces: list[bytes]) -> None:
        """`append_metrics` for rows given as their JSON text less the outer braces (``dumpb(row)[1:-1]``): the
        same bytes on disk, put together without a Python step per row."""
        if not pieces:
            return
        s = self._stream("metrics", name)
        with self.locked(stream_key(METRICS, name)):
            created = s.sync_tail() or s.meta is None
            n = s.next_index
            k = len(pieces)
            args: list[Any] = [None] * (2 * k)  # index, row, index, row, ...: one %-format for all k lines
            args[0::2] = range(n, n + k)
            args[1::2] = pieces
            line = METRIC_LINE.replace(b'"%b"}', b'"%b"}' % now_iso().encode()) + b"\n"
            s.write((line * k) % tuple(args))
            self._counted(s, name, created, n + k)

    def _counted(self, s: Stream, name: str | None, created: bool, n: int) -> None:
        s.next_index = n
        meta_path = meta_file(s.path)
        if created or s.meta is None:
            m = read_json(meta_path)
            s.meta = m if isinstance(m, dict) else metric_meta(name)
        count_metric(s.meta, n)
        self._meta_changed(meta_path, s)

    def append_tracks(self, topic: str, entries: list[dict[str, Any]]) -> None:
        """Entries are {"timestamp": t, fields...}; consecutive entries with one timestamp are merged."""
        if not entries:
            return
        stamps = [e["timestamp"] for e in entries]
        if any(map(eq, stamps, islice(stamps, 1, None))):
            merged: list[dict[str, Any]] = []
            for e in entries:
                if merged and merged[-1]["timestamp"] == e["timestamp"]:
                    merged[-1].update(e)
                else:
                    merged.append(e)
        else:  # the usual case, checked without a Python step per entry
            merged = entries
        s = self._stream("tracks", topic)
        meta_path = meta_file(s.path)
        with self.locked(stream_key(TRACKS, topic)):
            meta = _track_catch_up(s, topic, meta_path)
            blob = object_lines(merged)  # one orjson call for the batch; row by row when it cannot be exact
            s.write(blob if blob is not None else join_lines(merged, _line))
            track_stats(meta, merged)
            meta["updatedAt"] = now_iso()
            self._meta_changed(meta_path, s)  # with a writer thread: once per pass (`write_metas`)

    def _meta_changed(self, path: Path, s: Stream) -> None:
        if self.defer_meta:
            s.meta_dirty = True
        else:
            _write_meta(path, s)

    def write_metas(self) -> None:
        """Rewrite the metadata.json of every stream appended to since the last call (see ``defer_meta``)."""
        for s in list(self._streams.values()):
            if s.meta_dirty and s.meta is not None and s.topic is not None:
                with self.locked(stream_key(TRACKS, s.topic)):
                    if s.meta_dirty and s.meta is not None:
                        _track_catch_up(s, s.topic, meta_file(s.path))  # entries another process appended since
                        _write_meta(meta_file(s.path), s)
            elif s.meta_dirty and s.meta is not None:
                with self.locked(stream_key(METRICS, s.lock_name)):
                    if s.meta_dirty and s.meta is not None:
                        s.sync_tail()  # another process may have appended since: count its rows too
                        s.meta["totalDataPoints"] = s.meta["nextIndex"] = s.next_index
                        _write_meta(meta_file(s.path), s)

    def fsync(self) -> None:
        for s in list(self._streams.values()):
            s.fsync()

    # ---- files ------------------------------------------------------------------------------------------------
    def publish_files(self, items: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Move staged content into files/<dir>/<id>/<filename> and add the entries to the index."""
        files_dir = self.path / FILES
        index_path = files_dir / FILES_INDEX
        done: list[dict[str, Any]] = []
        with self.locked(FILES):
            files_dir.mkdir(parents=True, exist_ok=True)
            idx = read_json(index_path)
            if not isinstance(idx, dict) or not isinstance(idx.get("files"), list):
                if index_path.exists() and index_path.stat().st_size:
                    shutil.copyfile(index_path, files_dir / f"{FILES_INDEX_STEM}.corrupt.{int(time.time())}.json")
                idx = files_index([])
            known = {e.get("id"): e for e in idx["files"] if isinstance(e, dict)}
            for staged, entry in items:
                other = known.get(entry["id"])
                if other is not None:
                    if all(other.get(k) == entry.get(k) for k in ("path", "filename", "checksum")):
                        done.append(entry)  # already published (a retry after a crash)
                        continue
                    entry["id"] = new_id()  # another writer's file took this id
                segs = [p for p in entry["path"].split("/") if p]
                target_dir = self.inside(files_dir.joinpath(*segs, entry["id"]))
                target_dir.mkdir(parents=True, exist_ok=True)
                target = target_dir / entry["filename"]
                if staged.exists():
                    os.replace(staged, target)
                elif not target.exists():
                    continue
                idx["files"].append(entry)
                known[entry["id"]] = entry
                done.append(entry)
            write_json_atomic(index_path, idx, fsync=True)
        return done

    def file_path(self, entry: dict[str, Any]) -> Path:
        return self.inside(self.path.joinpath(*file_parts(entry)))

    def append_log_records(self, records: list[dict[str, Any]]) -> None:
        """Append stored-form log records (a copy of another run's), skipping those whose sequence number is
        already present, so that a batch delivered twice is stored once."""
        s = self._stream("logs", None)
        with self.locked(stream_key(LOGS_DIR)):
            s.sync_tail()
            n = s.next_index
            parts = []
            for r in records:
                seq = r.get("sequenceNumber")
                if not isinstance(seq, int) or seq < n:
                    continue  # already here
                rec = dict(r)
                rec["sequenceNumber"] = n
                parts.append(dumpb_line(rec))
                n += 1
            if parts:
                s.write(b"".join(parts))
                s.next_index = n

    def write_info(self, info: dict[str, Any]) -> None:
        """Replace experiment.json with a copy of another run's (a mirror)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self.locked(EXPERIMENT_JSON):
            write_json_atomic(self.path / EXPERIMENT_JSON, info, fsync="status" in info)

    def write_params(self, params: dict[str, Any]) -> None:
        """Replace parameters.json with a copy of another run's (a dump of a server's run)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self.locked(PARAMETERS_JSON):
            write_json_atomic(self.path / PARAMETERS_JSON, params)

    def write_files_index(self, entries: list[dict[str, Any]]) -> None:
        """Replace the files index with ``entries`` (their content is already in place)."""
        path = self.files_index_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.locked(FILES):
            write_json_atomic(path, files_index(entries))

    def refresh_metric_meta(self, name: str | None, n: int) -> None:
        """Rewrite a metric's metadata.json for a data file of ``n`` rows (a writer that keeps no state: the
        server)."""
        path = self.metric_file(name).parent / META
        m = read_json(path)
        if not isinstance(m, dict):
            m = metric_meta(name)
        count_metric(m, n)
        write_json_atomic(path, m)

    def add_track_meta(self, topic: str, entries: list[dict[str, Any]]) -> None:
        """Count ``entries``, just appended to ``topic``, into its metadata.json (a writer that keeps no state)."""
        if not entries:
            return
        path = self.track_file(topic).parent / META
        m = read_json(path)
        if not isinstance(m, dict):
            m = track_meta(topic)
        track_stats(m, entries)
        m["updatedAt"] = now_iso()
        write_json_atomic(path, m)

    # ---- reading: what a run holds ----------------------------------------------------------------------------
    def info_file(self) -> Path:
        return self.path / EXPERIMENT_JSON

    def exists(self) -> bool:
        """Whether the run has been created (its experiment.json exists)."""
        return (self.path / EXPERIMENT_JSON).is_file()

    def read_info(self) -> dict[str, Any] | None:
        info = read_json(self.path / EXPERIMENT_JSON)
        return info if isinstance(info, dict) else None

    def read_params(self) -> dict[str, Any] | None:
        """parameters.json: ``{"version": n, "data": {flat params}, "updatedAt": ...}``, or None."""
        params = read_json(self.path / PARAMETERS_JSON)
        return params if isinstance(params, dict) else None

    def params(self) -> dict[str, Any]:
        """The flat parameters (an empty dict when there are none)."""
        params = self.read_params()
        return dict(params.get("data") or {}) if params is not None else {}

    def params_file(self) -> Path:
        return self.path / PARAMETERS_JSON

    def logs_file(self) -> Path:
        return self.path / LOGS

    def files_index_file(self) -> Path:
        return files_index_file(self.path)

    def metric_file(self, name: str | None) -> Path:
        return self.path.joinpath(*metric_parts(name))

    def metric_names(self) -> list[str]:
        """Every metric that has a data file, sorted (the unnamed metric is ``"None"``)."""
        return [name for name, _ in self.metric_files()]

    def metric_files(self) -> list[tuple[str, Path]]:
        base = self.path / METRICS
        if not base.is_dir():
            return []
        return sorted((str(p.parent.relative_to(base)).replace(os.sep, "/"), p) for p in base.rglob(DATA))

    def topic_files(self) -> list[tuple[str, Path]]:
        """(topic, its data file) for every track folder whose metadata.json names its topic, in folder order."""
        return [(topic, folder / DATA) for topic, folder in topic_folders(self.path / TRACKS)]

    def track_file(self, topic: str) -> Path:
        """The data file a writer appends ``topic``'s entries to (claiming its folder if it has none yet)."""
        return self.path.joinpath(*track_parts(self.track_folder(topic)))

    def topic_file(self, topic: str) -> Path | None:
        """The data file of ``topic`` (found by metadata.json, never by folder name), or None."""
        for t, data in self.topic_files():
            if t == topic:
                return data
        return None

    def stream_files(self) -> list[tuple[str, Path]]:
        """(kind, data file) of every stream: the logs, each metric, each track folder."""
        out = [(LOGS_DIR, self.path / LOGS)]
        out += [(METRICS, p) for _, p in self.metric_files()]
        out += [(TRACKS, p) for p in sorted(self.path.glob(f"{TRACKS}/*/{DATA}"))]
        return out

    def rel(self, path: Path) -> str:
        """A run file's path relative to the run folder, with '/' (the key cursors use)."""
        return str(path.relative_to(self.path)).replace(os.sep, "/")

    def files_index(self) -> list[dict[str, Any]]:
        """The entries of files/.files_metadata.json, in the order they were published (deleted ones included)."""
        return index_entries(read_json(files_index_file(self.path)))

    # ---- private state: .ml_dash/ ---------------------------------------------------------------------------
    def cursor_path(self, key: str) -> Path:
        """Where a store's replicator remembers how far it delivered (key: the store's key, made file-safe)."""
        return self.private / "cursors" / f"{key}.json"

    def quarantine_dir(self, key: str) -> Path:
        """Where batches a store refused for good are set aside."""
        return self.private / "quarantine" / key

    def server_state_path(self, key: str, create: bool = True) -> Path:
        """Where the server keeps one stream's per-source positions and committed size (key: the stream)."""
        folder = self.private / "server"
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return folder / (hashlib.sha1(key.encode()).hexdigest()[:24] + ".json")

    def mirror_state_path(self, topic: str) -> Path:
        """A mirror's record of how far into the source's track file of ``topic`` it holds."""
        return self.private / "mirror-tracks" / (hashlib.sha1(topic.encode()).hexdigest()[:20] + ".json")

    @contextmanager
    def mirror_tracks(self, topic: str) -> Iterator[MirrorMark]:
        """Under the mirror's lock of ``topic`` (not the topic's own lock: `append_tracks` takes that one): how far
        into the source's track file the mirror holds (``mark.end``); a raised ``mark.end`` is saved on exit."""
        path = self.mirror_state_path(topic)
        with self.locked("mirror-tracks/" + topic):
            state = read_json(path)
            end = state.get("end") if isinstance(state, dict) else None
            mark = MirrorMark(end if isinstance(end, int) else 0)
            start = mark.end
            yield mark
            if mark.end > start:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(path, {"topic": topic, "end": mark.end})

    def new_stage(self, folder: str = "staging") -> Path:
        """The content path in a fresh staging folder (``.ml_dash/<folder>/<uuid>/content``; the folder exists)."""
        d = self.private / folder / uuid.uuid4().hex
        d.mkdir(parents=True)
        return d / "content"

    def recover_staged(self) -> list[tuple[Path, dict[str, Any]]]:
        """Staged files of a process that died before publishing them: (content, entry) to publish now."""
        out: list[tuple[Path, dict[str, Any]]] = []
        base = self.private / "staging"
        if not base.is_dir():
            return out
        for folder in sorted(base.iterdir()):
            entry = read_json(folder / "entry.json")
            if not isinstance(entry, dict):
                continue
            pid = entry.get("_pid")
            if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
                continue
            content = folder / "content"
            if content.exists() or entry.get(STAGED_SOURCE):
                entry.pop("_pid", None)
                out.append((content, entry))
        return out


STAGED_SOURCE = "_source"  # in a staged entry: the path to copy a large file's content from, when not yet copied


def stage_entry(content: Path, entry: dict[str, Any]) -> None:
    """Record a staged file's index entry beside its content (with the staging process id)."""
    write_json_atomic(content.parent / "entry.json", dict(entry, _pid=os.getpid()), fsync=False)


def unstage(content: Path) -> None:
    """Remove a staging folder once its content is published (moved away)."""
    folder = content.parent
    try:
        (folder / "entry.json").unlink(missing_ok=True)
        folder.rmdir()
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def incoming_dir(root: str | os.PathLike[str]) -> Path:
    """Where a server keeps uploads in progress: ``<root>/.ml_dash/incoming`` (no run can live there)."""
    return Path(root) / PRIVATE / "incoming"


# ---- paths inside a run folder, for readers that hold a folder rather than an `ExperimentDir` -----------------
def info_file(run: Path) -> Path:
    return run / EXPERIMENT_JSON


def params_file(run: Path) -> Path:
    return run / PARAMETERS_JSON


def logs_file(run: Path) -> Path:
    return run / LOGS


def metrics_dir(run: Path) -> Path:
    return run / METRICS


def tracks_dir(run: Path) -> Path:
    return run / TRACKS


def files_index_file(run: Path) -> Path:
    return run / FILES / FILES_INDEX


def private_dir(run: Path) -> Path:
    """The run's private state (locks, ring, staging, cursors, ...): never part of the data."""
    return run / PRIVATE


def source_id_file(run: Path) -> Path:
    """Where a run folder keeps the id it sends to servers as its source (shared by every process writing it)."""
    return run / PRIVATE / "source-id"


def metric_parts(name: str | None) -> tuple[str, ...]:
    """The data file of metric ``name`` relative to the run folder, as path segments (the name is checked)."""
    return (METRICS, *metric_segments(name), DATA)


def track_parts(folder: str) -> tuple[str, ...]:
    """The data file of the track folder ``folder`` relative to the run folder, as path segments."""
    return (TRACKS, folder, DATA)


def file_parts(entry: dict[str, Any]) -> tuple[str, ...]:
    """A files index entry's content relative to the run folder, as path segments (ValueError, KeyError or
    TypeError when the entry names a path that could leave its folder)."""
    segs = [p for p in str(entry.get("path", "/")).split("/") if p]
    split_path("/".join(segs + [str(entry["id"]), str(entry["filename"])]), "file path")
    return (FILES, *segs, str(entry["id"]), str(entry["filename"]))


TOPIC_KEY = "topic"  # in a track folder's metadata.json: the topic it holds (never the folder's name)


def meta_topic(meta: Any) -> str | None:
    """The topic a track folder's parsed metadata.json names (None: not a topic's folder)."""
    topic = meta.get(TOPIC_KEY) if isinstance(meta, dict) else None
    return topic if isinstance(topic, str) else None


def topic_folders(tracks: Path, read: Any = read_json) -> list[tuple[str, Path]]:
    """(topic, folder) of every folder under ``tracks`` whose metadata.json (read with ``read``) names its topic,
    in folder order; a folder that is a symbolic link is never followed (it could lead out of the root)."""
    try:
        folders = sorted(tracks.iterdir())
    except OSError:  # no tracks (or not a folder)
        return []
    out = []
    for folder in folders:
        if folder.is_symlink():
            continue
        topic = meta_topic(read(folder / META))
        if topic is not None:
            out.append((topic, folder))
    return out


def data_file(folder: Path) -> Path:
    """The data file of a metric's or topic's folder."""
    return folder / DATA


def meta_file(data: Path) -> Path:
    """The metadata.json beside a metric's or topic's data file."""
    return data.parent / META


def stream_key(kind: str, name: str | None = None) -> str:
    """A stream's key: the name of the lock every writer of it (the run's own, other processes, the server) takes
    to append, and of the server's state for it."""
    return kind if kind == LOGS_DIR else f"{kind}/{name}"


def is_run_folder(rel: str, names: list[str]) -> bool:
    """Whether the folder ``rel`` (relative to the root, '/'-separated), holding entries ``names``, is a run."""
    return "/" in rel and EXPERIMENT_JSON in names


def may_hold_runs(name: str, in_run: bool) -> bool:
    """Whether a listing of runs searches the subfolder ``name`` (of a run, when ``in_run``): never a hidden or
    private folder (no prefix segment starts with '.'), nor a run's own folders; other subfolders of a run may hold
    runs nested under its prefix."""
    return not name.startswith(".") and not (in_run and name in RUN_DIRS)


def scan_folder(path: str, rel: str) -> tuple[bool, list[str]] | None:
    """One folder of a listing walk: whether ``path`` (``rel`` under the root) is a run, and the names of the
    subfolders that may hold runs (links never followed); None when it cannot be listed."""
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except OSError:
        return None
    is_run = is_run_folder(rel, [e.name for e in entries])
    subs = []
    for e in entries:
        if not may_hold_runs(e.name, is_run):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                subs.append(e.name)
        except OSError:
            continue
    return is_run, subs


def list_runs(root: str | os.PathLike[str]) -> list[str]:
    """Prefixes of every run under a root: folders at least two levels down holding experiment.json. Hidden and
    private folders and a run's own folders are not searched (other subfolders of a run are: runs nest under a
    run's prefix); links are never followed, so nothing outside the root is listed."""
    out: list[str] = []

    def walk(d: str, rel: str, depth: int) -> None:
        got = scan_folder(d, rel)
        if got is None:
            return
        is_run, subs = got
        if is_run:
            out.append(rel)
        if depth > 32:
            return
        for name in subs:
            walk(os.path.join(d, name), f"{rel}/{name}" if rel else name, depth + 1)

    walk(os.fspath(root), "", 0)
    return sorted(out)


# ---- JSON shapes --------------------------------------------------------------------------------------------------
def new_info(name: str, project: str, prefix: str, description: str | None, tags: list[str] | None,
             metadata: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """experiment.json of a new run (status and times are set by the caller)."""
    return {"name": name, "project": project, "description": description, "tags": list(tags or []), "bindrs": [],
            "prefix": prefix, "metadata": metadata, "created_at": now, "write_protected": False}


def info_for(prefix: str, created_at: str) -> dict[str, Any]:
    """experiment.json of a run someone else describes (a server's, before the client's fields are merged in)."""
    segs = prefix.split("/")
    return new_info(segs[-1], segs[0], prefix, None, None, None, created_at)


def new_params(cur: Any, flat: dict[str, Any]) -> dict[str, Any]:
    """parameters.json after merging the flat parameters ``flat`` into ``cur`` (a new one when it is not one)."""
    if not isinstance(cur, dict) or not isinstance(cur.get("data"), dict):
        cur = {"version": 0, "data": {}}
    cur["data"].update(flat)
    cur["version"] = int(cur.get("version") or 0) + 1
    cur["updatedAt"] = now_iso()
    out: dict[str, Any] = cur
    return out


def empty_params() -> dict[str, Any]:
    """parameters.json of a run without parameters (what a reader answers when there is none)."""
    return {"version": 0, "data": {}}


def index_entries(idx: Any) -> list[dict[str, Any]]:
    """The entries of a parsed files index (none when it is missing or corrupt)."""
    entries = idx.get("files") if isinstance(idx, dict) else None
    return [e for e in entries or [] if isinstance(e, dict)]


def files_index(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The files index holding ``entries``."""
    return {"files": entries}


def entry_defaults(entry: dict[str, Any], now: str) -> dict[str, Any]:
    """Fill in the files index fields a client may leave out of an entry it sends (in place; returned)."""
    for k, v in (("experimentId", None), ("description", None), ("tags", []), ("bindrs", []),
                 ("contentType", "application/octet-stream"), ("metadata", None), ("uploadedAt", now),
                 ("updatedAt", now), ("deletedAt", None)):
        entry.setdefault(k, v)
    return entry


def metric_meta(name: str | None) -> dict[str, Any]:
    """metadata.json of a new metric (the counts are set by the writer)."""
    return {"metricId": new_id(), "name": "None" if name is None else name, "description": None, "tags": [],
            "metadata": None, "createdAt": now_iso()}


def count_metric(meta: dict[str, Any], n: int) -> None:
    """A metric's metadata after its data file reached ``n`` rows."""
    meta["totalDataPoints"] = n
    meta["nextIndex"] = n
    meta["updatedAt"] = now_iso()


def file_entry(experiment_id: str, path: str, filename: str, description: str | None, tags: list[str] | None,
               metadata: dict[str, Any] | None, content_type: str | None) -> dict[str, Any]:
    """A files index entry for a file about to be staged (size and checksum are filled in when it is stored)."""
    now = now_iso()
    return {
        "id": new_id(), "experimentId": experiment_id, "path": path, "filename": filename,
        "description": description, "tags": list(tags or []), "bindrs": [],
        "contentType": check_content_type(content_type) if content_type else _guess_type(filename),
        "sizeBytes": None, "checksum": None,
        "metadata": metadata, "uploadedAt": now, "updatedAt": now, "deletedAt": None,
    }


def _guess_type(filename: str) -> str:
    import mimetypes

    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def merge_tracks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Track entries as read back: consecutive entries sharing a timestamp are one entry."""
    out: list[dict[str, Any]] = []
    for r in rows:
        if out and out[-1].get("timestamp") == r.get("timestamp"):
            out[-1].update(r)
        else:
            out.append(dict(r))
    return out


def run_span(info: dict[str, Any]) -> tuple[str | None, str | None]:
    """When a run started and when it ended (or was last seen), as experiment.json's ISO times: created_at; endedAt,
    else the last heartbeat, else updated_at."""
    start = info.get("created_at")
    end = next((v for v in (info.get(k) for k in ("endedAt", "heartbeatAt", "updated_at")) if isinstance(v, str)),
               None)
    return (start if isinstance(start, str) else None), end


def effective_status(info: dict[str, Any] | None, stale_after: float | None = None) -> str | None:
    """The status to show: experiment.json's, or CRASHED for a RUNNING run whose heartbeat is older than
    ``stale_after`` seconds (default `STALE_AFTER`)."""
    if not isinstance(info, dict):
        return None
    status = info.get("status")
    if status == "RUNNING":
        beat = info.get("heartbeatAt") or info.get("updated_at")
        if isinstance(beat, str):
            try:
                t = _dt.datetime.fromisoformat(beat.rstrip("Z")).replace(tzinfo=_dt.timezone.utc).timestamp()
            except ValueError:
                return "CRASHED"
            if _dt.datetime.now(_dt.timezone.utc).timestamp() - t > (STALE_AFTER if stale_after is None else stale_after):
                return "CRASHED"
    return status if isinstance(status, str) else None


def track_meta(topic: str) -> dict[str, Any]:
    """metadata.json of a new track topic (the stats are added by `track_stats`)."""
    return {"trackId": new_id(), "topic": topic, "columns": [], "totalEntries": 0, "firstTimestamp": None,
            "lastTimestamp": None, "createdAt": now_iso()}


def track_stats(meta: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    """Count ``entries`` (just appended) into a topic's metadata: columns, totalEntries, first/last timestamp."""
    if not entries:
        return
    cols = set(meta.get("columns") or [])
    cols.update(*entries)
    cols.discard("timestamp")
    meta["columns"] = sorted(cols)
    meta["totalEntries"] = int(meta.get("totalEntries") or 0) + len(entries)
    if meta.get("firstTimestamp") is None:
        meta["firstTimestamp"] = entries[0].get("timestamp")
    meta["lastTimestamp"] = entries[-1].get("timestamp")
