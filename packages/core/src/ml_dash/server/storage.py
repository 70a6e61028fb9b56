"""The server's side of the `.dash` layout: idempotent appends into the same files a local run writes.

Every append names its *source* (one client `.dash` folder) and carries the source's own positions: journal
indices for logs and metrics, journal byte offsets for tracks. Per stream the server keeps, in
``<exp>/.ml_dash/server/``, how far each source got and how large the data file was after the last committed
append. An append writes the new lines, fsyncs them, then commits that state atomically; a crash in between
leaves lines past the committed size, which the next append to that stream cuts off before the client's retry
writes them again. So a batch sent any number of times is stored once, and two machines logging to one
prefix both keep their rows (renumbered into one gap-free index sequence).

The server process owns its root (`serve` takes a lock on it); a local `Experiment` must not write there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .. import layout
from ..jsonio import complete_end, join_lines, new_id, read_json, read_jsonl, write_json_atomic
from ..layout import ExperimentDir
from . import commits
from .backend import (  # noqa: F401  (BadRequest and check_source re-exported)
    BadRequest,
    check_file_entry,
    check_logs,
    check_metrics,
    check_params,
    check_source,
    check_tracks,
    is_count,
    merge_info,
    metric_meta,
    new_info,
    track_keep,
    track_meta,
)
from .rows import keep_indexed


class ServerRoot:
    """All experiments under one server root; serialises writers per stream with in-process locks."""

    def __init__(self, root: str | os.PathLike[str], fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._dirs: dict[str, ExperimentDir] = {}

    def lock(self, key: str) -> threading.Lock:
        with self._guard:
            lk = self._locks.get(key)
            if lk is None:
                lk = self._locks[key] = threading.Lock()
            return lk

    def exp(self, prefix: str) -> ExperimentDir:
        """The experiment folder for ``prefix`` (validated: nothing escapes the root)."""
        with self._guard:
            d = self._dirs.get(prefix)
        if d is None:
            try:
                d = ExperimentDir(self.root, prefix)
            except (TypeError, ValueError) as e:
                raise BadRequest(str(e)) from None
            with self._guard:
                d = self._dirs.setdefault(prefix, d)
        return d

    def existing(self, prefix: str) -> ExperimentDir | None:
        d = self.exp(prefix)
        return d if d.exists() else None

    # ---- experiment.json ------------------------------------------------------------------------------------
    def open_experiment(self, prefix: str, info: dict[str, Any], source: str) -> tuple[dict[str, Any], bool]:
        """Create the experiment or reopen it; apply the client's descriptive and status fields unless stale."""
        d = self.exp(prefix)
        if not isinstance(info, dict):
            raise BadRequest("'info' must be an object")
        with self.lock("info:" + d.prefix):
            d.path.mkdir(parents=True, exist_ok=True)
            d.private.mkdir(parents=True, exist_ok=True)
            with d.locked(layout.EXPERIMENT_JSON):
                cur = read_json(d.info_file())
                created = not isinstance(cur, dict)
                if created:
                    cur = new_info(d.prefix, info)
                assert isinstance(cur, dict)
                state_path = d.server_state_path("info")
                state = _read_state(state_path)
                mark = merge_info(cur, info, state["sources"].get(source))
                if mark is not None:
                    state["sources"][source] = mark
                write_json_atomic(d.info_file(), cur, fsync=self.fsync)
                write_json_atomic(state_path, state, fsync=self.fsync)
        return cur, created

    def ensure(self, prefix: str) -> ExperimentDir:
        """Appends to an experiment nobody opened here (a server root wiped mid-run) create it."""
        d = self.exp(prefix)
        if not d.exists():
            self.open_experiment(prefix, {}, "anonymous")
        return d

    # ---- parameters.json ------------------------------------------------------------------------------------
    def set_params(self, prefix: str, data: Any, version: Any, source: str) -> bool:
        self.exp(prefix)
        check_params(data, version)
        d = self.ensure(prefix)
        with self.lock("params:" + d.prefix), d.locked("params:server"):  # threads, then worker processes
            state_path = d.server_state_path("params")
            state = _read_state(state_path)
            last = state["sources"].get(source)
            if version is not None and isinstance(last, int) and version <= last:
                return False  # a retried or stale version: already applied
            d.set_params(dict(data))
            if version is not None:
                state["sources"][source] = version
                write_json_atomic(state_path, state, fsync=self.fsync)
        return True

    # ---- logs and metrics (indexed streams) -----------------------------------------------------------------
    def append_logs(self, prefix: str, records: Any, source: str) -> dict[str, int]:
        self.exp(prefix)
        recs = check_logs(records)
        d = self.ensure(prefix)
        key = layout.stream_key(layout.LOGS_DIR)
        return self._append_indexed(d, key, d.logs_file(), key, "sequenceNumber", recs, source, None)

    def append_metrics(self, prefix: str, name: str, records: Any, source: str) -> dict[str, int]:
        self.exp(prefix)
        recs = check_metrics(name, records)
        d = self.ensure(prefix)
        key = layout.stream_key(layout.METRICS, name)
        return self._append_indexed(d, key, _inside(d, d.metric_file(name)), key, "index", recs, source, name)

    def _append_indexed(self, d: ExperimentDir, key: str, path: Path, lock_name: str, field: str,
                        recs: list[dict[str, Any]], source: str, metric: str | None) -> dict[str, int]:
        with self.lock(f"{d.prefix}\0{key}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            d.private.mkdir(parents=True, exist_ok=True)
            with d.locked(lock_name):
                state_path = d.server_state_path(key)
                state = _recover(path, commits.read(state_path), field)
                w = int(state["sources"].get(source, 0))
                kept = keep_indexed(recs, field, w, int(state["next"]), metric is not None)
                w, n = kept.mark, kept.next
                if kept.count:
                    committed = state["size"]
                    try:
                        state["size"] = _append(path, kept.chunks(), self.fsync)
                        state["next"] = n
                        if metric is not None:
                            meta_path = layout.meta_file(path)
                            write_json_atomic(meta_path, metric_meta(read_json(meta_path), metric, n))
                        state["sources"][source] = w
                        commits.commit(state_path, state, self.fsync)
                    except OSError:
                        _cut(path, committed)  # readers see only committed rows, also while the disk is full
                        raise
        return {"received": len(recs), "stored": kept.count, "next": w}

    def settle(self, d: ExperimentDir) -> None:
        """Cut what a crash left past each stream's committed size (and put a metric's row count back), so the
        routes that read the run's files as they are (summary, show) show committed rows only. An append in flight
        holds its stream's lock from writing to committing: waiting for it leaves nothing to cut."""
        streams: list[tuple[str, Path, str | None]] = [(layout.stream_key(layout.LOGS_DIR), d.logs_file(), None)]
        streams += [(layout.stream_key(layout.METRICS, n), p, n) for n, p in d.metric_files()]
        streams += [(layout.stream_key(layout.TRACKS, t), p, None) for t, p in d.topic_files()]
        for key, path, metric in streams:
            size = committed_size(d, key)
            try:
                if size is None or path.stat().st_size <= size:
                    continue
            except OSError:
                continue
            with self.lock(f"{d.prefix}\0{key}"), d.locked(key):
                state = commits.read(d.server_state_path(key, create=False))
                if not is_count(state.get("size")):
                    continue
                _cut(path, state["size"])
                if metric is not None and is_count(state.get("next")):
                    meta_path = layout.meta_file(path)
                    write_json_atomic(meta_path, metric_meta(read_json(meta_path), metric, state["next"]))

    # ---- tracks (byte offsets of the source's journal) -----------------------------------------------------
    def append_tracks(self, prefix: str, topic: str, entries: Any, offset: Any, end: Any, offsets: Any,
                      source: str) -> dict[str, int]:
        self.exp(prefix)
        entries = check_tracks(topic, entries, offset, end, offsets)
        d = self.ensure(prefix)
        path = _inside(d, d.track_file(topic))
        key = layout.stream_key(layout.TRACKS, topic)
        with self.lock(f"{d.prefix}\0{key}"):
            d.private.mkdir(parents=True, exist_ok=True)
            with d.locked(key):
                state_path = d.server_state_path(key)
                state = _recover(path, commits.read(state_path), None)
                kept, new_w = track_keep(entries, offset, end, offsets, int(state["sources"].get(source, 0)))
                keep = [e for _, e in kept]
                committed = state["size"]
                try:
                    if keep:
                        state["size"] = _append(path, _lines(keep), self.fsync)
                        meta_path = layout.meta_file(path)
                        write_json_atomic(meta_path, track_meta(read_json(meta_path), topic, keep))
                    state["sources"][source] = new_w
                    commits.commit(state_path, state, self.fsync)
                except OSError:
                    _cut(path, committed)
                    raise
        return {"received": len(entries), "stored": len(keep), "next": new_w}

    # ---- files --------------------------------------------------------------------------------------------
    def check_file_entry(self, entry: Any) -> dict[str, Any]:
        return check_file_entry(entry)

    def has_file(self, d: ExperimentDir, fid: str) -> bool:
        return any(x.get("id") == fid for x in d.files_index())

    def publish_file(self, d: ExperimentDir, staged: Path, entry: dict[str, Any]) -> bool:
        """Move an uploaded file into place and index it; False when that id was already stored."""
        with self.lock(d.prefix + "\0files"):
            if self.has_file(d, entry["id"]):
                staged.unlink(missing_ok=True)
                return False
            d.publish_files([(staged, entry)])
            staged.unlink(missing_ok=True)
        return True

    def incoming(self) -> Path:
        """A fresh staging path for an upload (``<root>/.ml_dash/incoming``: no experiment can live there)."""
        p = layout.incoming_dir(self.root)
        p.mkdir(parents=True, exist_ok=True)
        return p / f"{new_id()}.{threading.get_ident()}.part"


# ---- helpers ------------------------------------------------------------------------------------------------








def committed_size(d: ExperimentDir, key: str) -> int | None:
    """How large the stream's data file was after its last committed append (None: the server never appended to
    it). Reads stop there: lines past it are an append that failed or was cut off by a crash, never acknowledged.
    The state's line is committed after the data is written, so the data file is never shorter."""
    size = commits.read(d.server_state_path(key, create=False)).get("size")
    return size if is_count(size) else None


def _read_state(path: Path) -> dict[str, Any]:
    st = read_json(path)
    if not isinstance(st, dict) or not isinstance(st.get("sources"), dict):
        st = {"sources": {}}
    return st


def _recover(path: Path, state: commits.State, field: str | None) -> commits.State:
    """Cut lines past the committed size (a crash between append and commit); adopt an unknown file."""
    size, complete = complete_end(path)
    committed = state.get("size")
    if isinstance(committed, int) and committed <= size:
        if committed < size:
            with open(path, "r+b") as f:
                f.truncate(committed)
        return state
    # first append to a file the server has no state for (or one shrunk behind its back): adopt what is there
    if complete < size:
        with open(path, "r+b") as f:
            f.truncate(complete)
    state["size"] = complete
    if field is not None:
        rows, _ = read_jsonl(path)
        idx = [r[field] for r in rows if is_count(r.get(field))]
        state["next"] = max(idx) + 1 if idx else 0
    return state


def _inside(d: ExperimentDir, path: Path) -> Path:
    """``path`` unless a symbolic link leads it out of the root (400: nothing outside is touched)."""
    try:
        return d.inside(path)
    except ValueError as e:
        raise BadRequest(str(e)) from None


def _cut(path: Path, size: int) -> None:
    """Cut a data file back to its committed size after a failed append (a full disk frees the space again)."""
    try:
        with open(path, "r+b") as f:
            if f.seek(0, os.SEEK_END) > size:
                f.truncate(size)
    except OSError:
        pass  # the next append cuts it (see _recover)


CHUNK = 4096  # rows formatted at a time: one orjson pass each, and a large body's text never held whole


def _newline(k: int, line: bytes) -> bytes:
    return line + b"\n"


def _lines(rows: list[dict[str, Any]]) -> Iterator[bytes]:
    """The rows as JSONL, ``CHUNK`` rows at a time (the format a local run writes: `jsonio.join_lines`)."""
    for k in range(0, len(rows), CHUNK):
        yield join_lines(rows[k:k + CHUNK], _newline)


def _append(path: Path, chunks: Iterable[bytes], fsync: bool) -> int:
    """Append the chunks, then one fdatasync (the data and the new size, not the timestamps); the file's new
    size."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for data in chunks:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        if fsync:
            os.fdatasync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)
