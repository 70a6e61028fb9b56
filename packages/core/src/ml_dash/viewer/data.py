"""What the viewer reads from a `.dash` root: runs, their summaries, metric columns and logs, all read-only.

Every name that arrives in a URL is checked and resolved inside the root (symlinks included) before any file is
opened; a name that does not resolve to a run is a `NotFound`, a malformed one a `BadName`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import layout
from ..jsonio import read_json
from ..names import check_prefix, metric_segments, split_path
from ..reader import effective_status
from ..ring import folder_of, split_items, unrecovered
from .tail import complete_size, read_from

MAX_MESSAGE = 10_000  # characters of one log message sent to the page; longer ones are cut with a note
PREVIEW_BYTES = 16 * 1024 * 1024  # a stream this large, not read yet, gets a sampled preview first
PREVIEW_WAIT = 0.3  # seconds the exact read may take before the preview is sent instead
PREVIEW_LINES = 4000


class NotFound(Exception):
    pass


class BadName(Exception):
    pass


def parse_time(s: Any) -> float | None:
    if not isinstance(s, str):
        return None
    try:
        return _dt.datetime.fromisoformat(s.rstrip("Z")).replace(tzinfo=_dt.timezone.utc).timestamp()
    except ValueError:
        return None


def _num(v: Any) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return math.nan


@dataclass
class Columns:
    """Float64 columns of one metric stream: ``index``, ``_ts`` and every numeric field (NaN where a row lacks
    it or holds something that is not a number), as the core's column cache gives them."""

    cols: dict[str, np.ndarray] = field(default_factory=dict)
    rows: int = 0
    offset: int = 0
    invalid: int = 0
    non_numeric: set[str] = field(default_factory=set)
    ino: int | None = None
    missing: bool = True


@dataclass
class Logs:
    seq: list[int] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    level: list[str] = field(default_factory=list)
    message: list[str] = field(default_factory=list)
    offset: int = 0
    invalid: int = 0
    ino: int | None = None

    def add(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self.seq.append(int(_num(r.get("sequenceNumber", len(self.seq))) if isinstance(
                r.get("sequenceNumber"), (int, float)) else len(self.seq)))
            t = parse_time(r.get("timestamp"))
            self.ts.append(t if t is not None else math.nan)
            lv = r.get("level")
            self.level.append(str(lv).lower() if isinstance(lv, str) else "info")
            msg = r.get("message")
            self.message.append(msg if isinstance(msg, str) else str(msg))


def log_row(logs: Logs, i: int) -> dict[str, Any]:
    msg = logs.message[i]
    row: dict[str, Any] = {"seq": logs.seq[i], "ts": logs.ts[i] if logs.ts[i] == logs.ts[i] else None,
                           "level": logs.level[i], "message": msg[:MAX_MESSAGE]}
    if len(msg) > MAX_MESSAGE:
        row["truncated"] = len(msg)
    return row


class Root:
    """A `.dash` folder as the viewer sees it, with per-file caches that read only what was appended."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.real = Path(os.path.realpath(self.root))
        self._cols: dict[Path, Columns] = {}
        self._logs: dict[Path, Logs] = {}
        self._summ: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._exact: set[Path] = set()  # streams read in full at least once by this process
        self._pending: dict[Path, Any] = {}  # streams whose first full read is under way
        self._rings: dict[Path, RingRows] = {}  # per run folder: what dead writers left in their spill rings

    # ---- names ---------------------------------------------------------------------------------------------
    def run_dir(self, prefix: str) -> Path:
        try:
            segs = check_prefix(prefix)
        except (ValueError, TypeError) as e:
            raise BadName(str(e)) from None
        path = self.real.joinpath(*segs)
        real = Path(os.path.realpath(path))
        if real != self.real and self.real not in real.parents:
            raise NotFound(f"no run {prefix!r} under this root")
        if not (real / "experiment.json").is_file():
            raise NotFound(f"no run {prefix!r} under this root (it may have been deleted)")
        self._scan_ring(real)  # rows a killed writer left in its spill ring: shown, not written
        return real

    def inside(self, base: Path, *parts: str) -> Path:
        """``base/parts`` resolved, refused unless it stays inside ``base`` (which is inside the root)."""
        path = Path(os.path.realpath(base.joinpath(*parts)))
        if base not in path.parents:
            raise NotFound("no such file in this run")
        return path

    def metric_path(self, run: Path, name: str) -> Path:
        try:
            segs = split_path(name, "metric name")
        except (ValueError, TypeError) as e:
            raise BadName(str(e)) from None
        return self.inside(run, "metrics", *segs, "data.jsonl")

    # ---- runs ----------------------------------------------------------------------------------------------
    def prefixes(self) -> list[str]:
        out: list[str] = []

        def walk(d: str, rel: str, depth: int) -> None:
            try:
                entries = list(os.scandir(d))
            except OSError:
                return
            names = {e.name for e in entries}
            if rel and "experiment.json" in names and "/" in rel:
                out.append(rel)
                return
            if depth > 12:
                return
            for e in entries:
                if e.name == ".ml_dash" or e.name.startswith(".ml-dash"):
                    continue
                try:
                    if e.is_dir(follow_symlinks=False):
                        walk(e.path, f"{rel}/{e.name}" if rel else e.name, depth + 1)
                except OSError:
                    continue

        walk(str(self.real), "", 0)
        return sorted(out)

    def summary(self, prefix: str, run: Path | None = None) -> dict[str, Any]:
        """Status, times, tags and params of a run; re-read only when its files changed. ``run``: the folder,
        when the caller found it by walking the root (so it is known to be inside)."""
        run = self.run_dir(prefix) if run is None else run
        key = []
        for f in ("experiment.json", "parameters.json"):
            try:
                key.append(os.stat(run / f).st_mtime_ns)
            except OSError:
                key.append(0)
        cached = self._summ.get(prefix)
        if cached and cached[0] == tuple(key):
            info, s = cached[1]["info"], cached[1]["summary"]
            return dict(s, status=effective_status(info) or "UNKNOWN")  # a heartbeat ages without a write
        info = read_json(run / "experiment.json")
        info = info if isinstance(info, dict) else {}
        status = effective_status(info) or "UNKNOWN"
        params = read_json(run / "parameters.json")
        pdata = params.get("data") if isinstance(params, dict) else None
        start = parse_time(info.get("created_at"))
        end = parse_time(info.get("endedAt")) or parse_time(info.get("heartbeatAt")) or parse_time(
            info.get("updated_at"))
        tags = info.get("tags") if isinstance(info.get("tags"), list) else []
        s = {"prefix": prefix, "status": status, "start": start, "end": end,
             "duration": (end - start) if start and end else None, "tags": [str(t) for t in tags],
             "description": info.get("description") if isinstance(info.get("description"), str) else None,
             "statusReason": info.get("statusReason") if isinstance(info.get("statusReason"), str) else None,
             "params": {str(k): v for k, v in pdata.items()} if isinstance(pdata, dict) else {}}
        self._summ[prefix] = (tuple(key), {"info": {k: info.get(k) for k in ("status", "heartbeatAt",
                                                                              "updated_at")}, "summary": s})
        return dict(s)

    def summaries(self) -> list[dict[str, Any]]:
        """Every run's summary (the folders found by walking the root, which never follows a symlink)."""
        out = []
        for p in self.prefixes():
            try:
                out.append(self.summary(p, self.real.joinpath(*p.split("/"))))
            except OSError:
                continue
        return out

    def streams(self, run: Path) -> list[str]:
        """The run's metric streams: those with a file, and those only a killed writer's spill ring holds."""
        base = run / "metrics"
        files = list(base.rglob(layout.DATA)) if base.is_dir() else []
        rr = self._rings.get(run)
        files += [p for p in (rr.metrics if rr is not None else {}) if base in p.parents]
        return sorted({str(p.parent.relative_to(base)).replace(os.sep, "/") for p in files})

    def topics(self, run: Path) -> dict[str, Path]:
        base = run / "tracks"
        out: dict[str, Path] = {}
        for folder in sorted(base.iterdir()) if base.is_dir() else []:
            meta = read_json(folder / "metadata.json")
            if isinstance(meta, dict) and isinstance(meta.get("topic"), str):
                out[meta["topic"]] = folder
        return out

    def files(self, run: Path) -> list[dict[str, Any]]:
        idx = read_json(run / "files" / ".files_metadata.json")
        entries = idx.get("files") if isinstance(idx, dict) else None
        out = []
        for e in entries or []:
            if isinstance(e, dict) and not e.get("deletedAt") and isinstance(e.get("id"), (str, int)):
                out.append(e)
        return out

    def file_path(self, run: Path, entry: dict[str, Any]) -> Path:
        segs = [p for p in str(entry.get("path", "/")).split("/") if p]
        try:
            split_path("/".join(segs + [str(entry["id"]), str(entry["filename"])]), "file path")
        except (ValueError, TypeError, KeyError):
            raise NotFound("the file index names a path outside the run") from None
        return self.inside(run, "files", *segs, str(entry["id"]), str(entry["filename"]))

    # ---- spill rings of killed writers ---------------------------------------------------------------------
    def _scan_ring(self, run: Path) -> None:
        """Read the rows dead processes left in the run's spill rings (read-only: `ml_dash.load`, the next open
        of the run or `ml-dash sync` write them into the journal), re-read only when a ring changed, or after a
        second while a ring's process may have died since."""
        private = run / layout.PRIVATE
        folder = folder_of(private)
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(".ring"))
        except OSError:
            names = []
        if not names:
            self._rings.pop(run, None)
            return
        key = []
        for n in names:
            try:
                st = os.stat(folder / n)
            except OSError:
                continue
            key.append((n, st.st_mtime_ns, st.st_size))
        old = self._rings.get(run)
        now = time.monotonic()
        if old is not None and old.key == tuple(key) and (not old.busy or now - old.at < 1.0):
            return
        topics = self.topics(run)

        def path_of(kind: str, name: str | None) -> Path | None:
            try:
                if kind == "metrics":
                    return run.joinpath("metrics", *metric_segments(name), layout.DATA)
                if kind == "tracks":
                    return topics[name] / layout.DATA if name in topics else None
                return run.joinpath(*layout.LOGS.split("/"))
            except (ValueError, TypeError):
                return None

        items, busy = unrecovered(private, path_of)
        rr = RingRows(tuple(key), busy, now)
        metrics, tracks, logs = split_items(items)
        for name, data in metrics:
            p = path_of("metrics", name)
            if p is not None and isinstance(data, dict):
                rr.metrics.setdefault(p, []).append(data)
        for topic, entry in tracks:
            if isinstance(entry, dict):
                rr.tracks.setdefault(topic, []).append(entry)
        rr.logs = logs
        self._rings[run] = rr

    def ring_metrics(self, path: Path) -> list[dict[str, Any]]:
        """Rows of the metric stream ``path`` that a killed writer left in its spill ring (not in the file)."""
        for rr in self._rings.values():
            rows = rr.metrics.get(path)
            if rows:
                return rows
        return []

    def topic_names(self, run: Path) -> list[str]:
        """The run's track topics: those with a folder, and those only a killed writer's spill ring holds."""
        rr = self._rings.get(run)
        return sorted(set(self.topics(run)) | set(rr.tracks if rr is not None else ()))

    def ring_tracks(self, run: Path, topic: str) -> list[dict[str, Any]]:
        rr = self._rings.get(run)
        return rr.tracks.get(topic, []) if rr is not None else []

    # ---- columns and logs ----------------------------------------------------------------------------------
    def columns(self, path: Path) -> Columns:
        """The stream's columns through the core's incremental column cache (only appended lines are parsed).

        ``offset`` is taken before the read, so it never lies past the rows returned: a live stream started
        there may repeat a few rows, which the page drops by index, and never skips one."""
        from .. import colcache

        offset = complete_size(path)
        snap = colcache.read(path, "metrics")
        cols = dict(snap.num)
        cols.setdefault("index", np.arange(snap.n, dtype=np.float64))
        cols.setdefault("_ts", np.full(snap.n, np.nan))
        c = Columns(cols=cols, rows=snap.n, offset=offset, invalid=snap.skipped,
                    non_numeric=set(snap.text), missing=not path.exists())
        extra = self.ring_metrics(path)
        return _with_rows(c, extra) if extra else c

    async def columns_or_preview(self, path: Path) -> tuple[Columns, bool]:
        """The exact columns, or, when a large stream's first read takes longer than ``PREVIEW_WAIT``, a preview
        sampled at even byte offsets (``True``: approximate) while the exact read goes on in the background."""
        import asyncio

        from starlette.concurrency import run_in_threadpool

        try:
            small = os.path.getsize(path) < PREVIEW_BYTES
        except OSError:
            small = True
        if small or path in self._exact:
            return await run_in_threadpool(self.columns, path), False
        task = self._pending.get(path)
        if task is None:
            task = self._pending[path] = asyncio.ensure_future(run_in_threadpool(self.columns, path))
            task.add_done_callback(lambda _t: (self._exact.add(path), self._pending.pop(path, None)))
        try:
            return await asyncio.wait_for(asyncio.shield(task), PREVIEW_WAIT), False
        except asyncio.TimeoutError:
            return await run_in_threadpool(preview_columns, path), True

    def logs(self, run: Path) -> Logs:
        path = run / "logs" / "logs.jsonl"
        with self._lock:
            lg = self._logs.get(path)
            if lg is None:
                lg = self._logs[path] = Logs()
            while True:
                tail, ino = read_from(path, lg.offset, lg.ino)
                if tail.reset:
                    lg = self._logs[path] = Logs()
                lg.ino = ino
                lg.invalid += tail.invalid
                lg.add(tail.rows)
                moved = tail.offset != lg.offset
                lg.offset = tail.offset
                if not moved or tail.missing:
                    break
        rr = self._rings.get(run)
        return _with_logs(lg, rr.logs) if rr is not None and rr.logs else lg


@dataclass
class RingRows:
    """What the spill rings of a run's dead writers hold, by stream: metric rows by journal file, track entries
    by topic, log records ``(ts, level, message, metadata)``."""

    key: tuple[Any, ...]
    busy: int
    at: float
    metrics: dict[Path, list[dict[str, Any]]] = field(default_factory=dict)
    tracks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    logs: list[Any] = field(default_factory=list)


def _with_rows(c: Columns, rows: list[dict[str, Any]]) -> Columns:
    """``c`` with metric rows appended (numbered on from its last row, as recovery will number them)."""
    import json

    from ..columns import parse_general

    start = int(_last_index(c)) + 1
    lines = b"".join(json.dumps({"index": start + k, "data": d}, default=str).encode() + b"\n"
                     for k, d in enumerate(rows))
    b = parse_general(lines, "metrics")
    n, m = c.rows, b.n
    cols = {}
    for k in set(c.cols) | set(b.num):
        a = c.cols.get(k)
        e = b.num.get(k)
        cols[k] = np.concatenate([a[:n] if a is not None else np.full(n, np.nan),
                                  e[:m] if e is not None else np.full(m, np.nan)])
    return Columns(cols=cols, rows=n + m, offset=c.offset, invalid=c.invalid,
                   non_numeric=c.non_numeric | set(b.text), ino=c.ino, missing=False)


def _last_index(c: Columns) -> float:
    idx = c.cols.get("index")
    if idx is None or not c.rows:
        return -1.0
    fin = idx[: c.rows][np.isfinite(idx[: c.rows])]
    return float(fin[-1]) if len(fin) else float(c.rows - 1)


def _with_logs(lg: Logs, recs: list[Any]) -> Logs:
    """A copy of ``lg`` with log records from a spill ring appended."""
    out = Logs(seq=list(lg.seq), ts=list(lg.ts), level=list(lg.level), message=list(lg.message), offset=lg.offset,
               invalid=lg.invalid, ino=lg.ino)
    for ts, level, message, _meta in recs:
        out.seq.append(out.seq[-1] + 1 if out.seq else 0)
        out.ts.append(float(ts) if isinstance(ts, (int, float)) else math.nan)
        out.level.append(str(level).lower())
        out.message.append(message if isinstance(message, str) else str(message))
    return out


def preview_columns(path: Path, lines: int = PREVIEW_LINES) -> Columns:
    """Columns of ``lines`` rows read at evenly spaced byte offsets: a fast, approximate first look."""
    from ..columns import parse_general

    offset = complete_size(path)  # taken first: never past the rows sampled
    size = os.path.getsize(path)
    picked: list[bytes] = []
    with open(path, "rb") as f:
        for k in range(lines):
            f.seek(k * size // lines)
            if k:
                f.readline()  # the rest of the line the offset fell into
            line = f.readline()
            if line.endswith(b"\n") and (not picked or picked[-1] != line):
                picked.append(line)
    b = parse_general(b"".join(picked), "metrics")
    cols = dict(b.num)
    cols.setdefault("index", np.arange(b.n, dtype=np.float64))
    cols.setdefault("_ts", np.full(b.n, np.nan))
    return Columns(cols=cols, rows=b.n, offset=offset, invalid=0, non_numeric=set(b.text), missing=False)


def search_logs(logs: Logs, level: str | None, query: str | None, regex: bool) -> list[int]:
    """Indices of the log lines matching a level set (comma-separated) and a substring or regex."""
    idx = range(len(logs.message))
    levels = {x for x in (level or "").lower().split(",") if x}
    if levels:
        idx = [i for i in idx if logs.level[i] in levels]  # type: ignore[assignment]
    if query:
        if regex:
            try:
                rx = re.compile(query, re.IGNORECASE)
            except re.error as e:
                raise BadName(f"invalid regular expression: {e}") from None
            idx = [i for i in idx if rx.search(logs.message[i])]  # type: ignore[assignment]
        else:
            q = query.lower()
            idx = [i for i in idx if q in logs.message[i].lower()]  # type: ignore[assignment]
    return list(idx)
