"""What the viewer reads: runs, their summaries, metric columns, tracks, logs and files, all read-only.

The viewer's routes (``app.py``, ``live.py``, ``export.py``) read only through the `Source` methods below, keyed
by run prefix and stream name. `Root` implements them over a `.dash` folder (under ``ml-dash serve``, reading each
stream only up to the server's committed size); ``ml-dash serve --database`` gives the viewer another
implementation over its storage engine (``ml_dash.server.viewsource``).

Every name that arrives in a URL is checked and resolved inside the root (symlinks included) before any file is
opened; a name that does not resolve to a run is a `NotFound`, a malformed one a `BadName`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .. import layout
from ..jsonio import read_json
from ..names import check_prefix
from ..reader import effective_status
from ..ring import folder_of, split_items, unrecovered
from .tail import complete_size, last_lines, read_from

MAX_MESSAGE = 10_000  # characters of one log message sent to the page; longer ones are cut with a note
PREVIEW_BYTES = 16 * 1024 * 1024  # a stream this large, not read yet, gets a sampled preview first
PREVIEW_WAIT = 0.3  # seconds the exact read may take before the preview is sent instead
PREVIEW_LINES = 4000
PREVIEW_WINDOWS = 1000  # byte windows the preview reads (PREVIEW_LINES / PREVIEW_WINDOWS consecutive rows each)
PREVIEW_WINDOW = 4096  # bytes per window (more for rows this long)
PREVIEW_WINDOW_MAX = 1 << 20


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
    stamp: tuple[int, ...] = ()  # the file's identity and change time when read, and the rows a spill ring added


@dataclass
class Logs:
    seq: list[int] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    level: list[str] = field(default_factory=list)
    message: list[str] = field(default_factory=list)
    offset: int = 0
    invalid: int = 0
    ino: int | None = None
    _times: dict[str, float] = field(default_factory=dict, repr=False)  # timestamp text -> seconds (rows share them)
    _levels: dict[Any, str] = field(default_factory=dict, repr=False)
    _blob: tuple[int, str, str, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Append log rows, a column at a time (a million rows share a few timestamps and levels)."""
        n0 = len(self.seq)
        sn: list[Any] = [r.get("sequenceNumber") for r in rows]
        if not all(type(x) is int for x in sn):
            sn = [int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else n0 + k
                  for k, x in enumerate(sn)]
        self.seq.extend(sn)
        times = self._times
        if len(times) > 100_000:
            times.clear()
        tt = [r.get("timestamp") for r in rows]
        for t in set(x for x in tt if isinstance(x, str)).difference(times):
            p = parse_time(t)
            times[t] = p if p is not None else math.nan
        self.ts.extend([times.get(t, math.nan) if isinstance(t, str) else math.nan for t in tt])
        levels = self._levels
        lv = [r.get("level") for r in rows]
        for x in set(x for x in lv if isinstance(x, str)).difference(levels):
            levels[x] = x.lower()
        self.level.extend([levels[x] if isinstance(x, str) else "info" for x in lv])
        msg: list[Any] = [r.get("message") for r in rows]
        if not all(type(m) is str for m in msg):
            msg = [m if isinstance(m, str) else str(m) for m in msg]
        self.message.extend(msg)

    def blob(self) -> tuple[str, np.ndarray, str, np.ndarray]:
        """Every message on one line of one text (newlines inside a message read as spaces) and where each line
        starts, and the same in lower case: a search runs once over the text instead of once per line."""
        n = len(self.message)
        if self._blob is None or self._blob[0] != n:
            def starts_of(parts: list[str]) -> np.ndarray:
                lens = np.fromiter((len(m) + 1 for m in parts), dtype=np.int64, count=len(parts))
                return np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(parts) else np.zeros(0, dtype=np.int64)

            msgs = [m.replace("\n", " ") if "\n" in m else m for m in self.message]
            text = "\n".join(msgs)
            starts = starts_of(msgs)
            lower = text.lower()
            lstarts = starts if len(lower) == len(text) else starts_of([m.lower() for m in msgs])
            self._blob = (n, text, lower, starts, lstarts)
        return self._blob[1], self._blob[3], self._blob[2], self._blob[4]


def log_row(logs: Logs, i: int) -> dict[str, Any]:
    msg = logs.message[i]
    row: dict[str, Any] = {"seq": logs.seq[i], "ts": logs.ts[i] if logs.ts[i] == logs.ts[i] else None,
                           "level": logs.level[i], "message": msg[:MAX_MESSAGE]}
    if len(msg) > MAX_MESSAGE:
        row["truncated"] = len(msg)
    return row


def view_summary(prefix: str, info: Any, params: Any) -> dict[str, Any]:
    """The runs table's row of one run, from its experiment.json and parameters.json."""
    info = info if isinstance(info, dict) else {}
    pdata = params.get("data") if isinstance(params, dict) else None
    start, end = (parse_time(t) for t in layout.run_span(info))
    tags = info.get("tags") if isinstance(info.get("tags"), list) else []
    return {"prefix": prefix, "status": effective_status(info) or "UNKNOWN", "start": start, "end": end,
            "duration": (end - start) if start and end else None, "tags": [str(t) for t in tags],
            "description": info.get("description") if isinstance(info.get("description"), str) else None,
            "statusReason": info.get("statusReason") if isinstance(info.get("statusReason"), str) else None,
            "params": {str(k): v for k, v in pdata.items()} if isinstance(pdata, dict) else {}}


def listing_summary(s: dict[str, Any]) -> dict[str, Any]:
    """The runs table's row from a `runs.summary` (what a server's engine lists), its status already effective."""
    start, end = parse_time(s.get("start")), parse_time(s.get("end"))
    return {"prefix": s["prefix"], "status": s["status"], "start": start, "end": end,
            "duration": (end - start) if start and end else None, "tags": list(s.get("tags") or []),
            "description": s.get("description"), "statusReason": s.get("statusReason"),
            "params": {str(k): v for k, v in (s.get("params") or {}).items()}}


@dataclass
class NewRows:
    """New rows of a metric stream or of the logs since a subscription's offset (as stored: metric rows with
    ``index`` and ``data``, log records), the offset after them, lines that did not parse, and whether the
    stream was replaced (start over)."""

    rows: list[dict[str, Any]]
    offset: int
    invalid: int = 0
    reset: bool = False


class Source(Protocol):
    """The viewer's data access. Offsets are opaque to the page: it gets them from ``stream_columns`` /
    ``run_logs`` and hands them back to ``tail`` (a `.dash` folder: byte offsets; a database: row counts)."""

    label: str  # what the runs page shows as the place the runs come from

    def summaries(self) -> list[dict[str, Any]]: ...
    def summary(self, prefix: str) -> dict[str, Any]: ...  # NotFound / BadName
    def stream_names(self, prefix: str) -> list[str]: ...
    def stream_columns(self, prefix: str, stream: str) -> Columns: ...
    async def stream_columns_or_preview(self, prefix: str, stream: str,
                                        wait: float | None = None) -> tuple[Columns, bool]: ...
    def topic_list(self, prefix: str) -> list[str]: ...
    def track_rows(self, prefix: str, topic: str) -> tuple[list[dict[str, Any]], int]: ...  # merged, invalid
    def run_logs(self, prefix: str) -> Logs: ...
    def file_list(self, prefix: str) -> list[dict[str, Any]]: ...
    def file_content(self, prefix: str, fid: str) -> tuple[dict[str, Any], Path | Iterator[bytes]]: ...
    def tail(self, prefix: str, kind: str, name: str, offset: int, memo: dict[str, Any], limit: int) -> NewRows | None:
        """New rows since ``offset`` (kind: metrics or logs; ``memo``: this subscription's own state between
        calls; ``limit``: about how many bytes to answer at most), None when there is nothing new."""
    def status_changed(self, prefix: str, memo: dict[str, Any]) -> bool:
        """Whether the run's status may have changed since the last call with this ``memo``."""


class Root:
    """A `.dash` folder as the viewer sees it, with per-file caches that read only what was appended.

    ``committed(prefix, kind, name)``: where the stream's committed rows end in its file (bytes; None: no limit);
    ``ml-dash serve`` passes its folder engine's, so lines an append wrote but never acknowledged (a crash
    between writing and committing) are never shown. `ml-dash view` on a plain folder has none."""

    def __init__(self, root: str | os.PathLike[str],
                 committed: Callable[[str, str, str | None], int | None] | None = None) -> None:
        self.root = Path(root)
        self._committed = committed
        self.label = str(self.root)
        self.real = Path(os.path.realpath(self.root))
        self._cols: dict[Path, Columns] = {}
        self._logs: dict[Path, Logs] = {}
        self._summ: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._dirs: dict[str, tuple[int, bool, list[str]]] = {}  # folder -> (mtime, holds a run, sub-folders)
        self._lock = threading.Lock()
        self._exact: set[Path] = set()  # streams read in full at least once by this process
        self._pending: dict[Path, Any] = {}  # streams whose first full read is under way
        self._previews: dict[Path, Columns] = {}  # their sampled previews meanwhile
        self._rings: dict[Path, RingRows] = {}  # per run folder: what dead writers left in their spill rings
        self._prefetched: set[str] = set()  # runs whose streams a page request started reading
        self._prefetching: dict[str, Any] = {}  # run -> the future done when its prefetch has ended
        self._local = threading.local()  # the run folders resolved by the current request (`batch`)

    def end(self, prefix: str, kind: str, name: str | None = None) -> int | None:
        """Where the stream's rows to show end in its file (None: at its last complete line)."""
        return self._committed(prefix, kind, name) if self._committed is not None else None

    # ---- names ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Within it (one request's work, on one thread) each run's folder is resolved and checked once."""
        self._local.dirs = {}
        try:
            yield
        finally:
            self._local.dirs = None

    def run_dir(self, prefix: str) -> Path:
        memo = getattr(self._local, "dirs", None)
        if memo is not None and prefix in memo:
            known: Path = memo[prefix]
            return known
        real = self._run_dir(prefix)
        if memo is not None:
            memo[prefix] = real
        return real

    def _run_dir(self, prefix: str) -> Path:
        try:
            segs = check_prefix(prefix)
        except (ValueError, TypeError) as e:
            raise BadName(str(e)) from None
        path = self.real.joinpath(*segs)
        real = Path(os.path.realpath(path))
        if real != self.real and self.real not in real.parents:
            raise NotFound(f"no run {prefix!r} under this root")
        if not layout.info_file(real).is_file():
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
            parts = layout.metric_parts(name)
        except (ValueError, TypeError) as e:
            raise BadName(str(e)) from None
        return self.inside(run, *parts)

    # ---- runs ----------------------------------------------------------------------------------------------
    def prefixes(self) -> list[str]:
        """Every run under the root (a folder holding experiment.json, at least two levels down). A folder whose
        modification time is unchanged since the last walk is not listed again: its entries are the same."""
        out: list[str] = []
        seen: set[str] = set()

        def walk(d: str, rel: str, depth: int) -> None:
            try:
                mtime = os.stat(d).st_mtime_ns
            except OSError:
                return
            seen.add(d)
            cached = self._dirs.get(d)
            if cached is None or cached[0] != mtime:
                got = layout.scan_folder(d, rel)
                if got is None:
                    return
                cached = self._dirs[d] = (mtime, *got)
            if cached[1]:
                out.append(rel)  # and go on: runs may nest under a run's prefix (layout.list_runs's rule)
            if depth > 32:
                return
            for name in cached[2]:
                walk(d + os.sep + name, f"{rel}/{name}" if rel else name, depth + 1)

        walk(str(self.real), "", 0)
        for gone in [d for d in self._dirs if d not in seen]:
            del self._dirs[gone]
        return sorted(out)

    def summary(self, prefix: str, run: Path | str | None = None, folder_mtime: int | None = None) -> dict[str, Any]:
        """Status, times, tags and params of a run; re-read only when its files changed. ``run``: the folder,
        when the caller found it by walking the root (so it is known to be inside), and ``folder_mtime`` its
        modification time then: unchanged, a run that is not RUNNING is taken as unchanged without looking at its
        files (the SDK replaces them by renaming, which changes the folder's time)."""
        cached = self._summ.get(prefix)
        if (folder_mtime is not None and cached and cached[1].get("folder") == folder_mtime
                and cached[1]["info"].get("status") != "RUNNING"):
            return dict(cached[1]["summary"], status=effective_status(cached[1]["info"]) or "UNKNOWN")
        run = self.run_dir(prefix) if run is None else run
        base = str(run) + os.sep
        key = []
        for f in (layout.EXPERIMENT_JSON, layout.PARAMETERS_JSON):
            try:
                st = os.stat(base + f)
                key.append((st.st_mtime_ns, st.st_size))
            except OSError:
                key.append((0, 0))
        if cached and cached[0] == tuple(key):
            info, s = cached[1]["info"], cached[1]["summary"]
            cached[1]["folder"] = folder_mtime
            return dict(s, status=effective_status(info) or "UNKNOWN")  # a heartbeat ages without a write
        info = read_json(Path(base + layout.EXPERIMENT_JSON))
        info = info if isinstance(info, dict) else {}
        s = view_summary(prefix, info, read_json(Path(base + layout.PARAMETERS_JSON)))
        self._summ[prefix] = (tuple(key), {"info": {k: info.get(k) for k in layout.STATUS_KEYS}, "summary": s,
                                           "folder": folder_mtime})
        return dict(s)

    def summaries(self) -> list[dict[str, Any]]:
        """Every run's summary (the folders found by walking the root, which never follows a symlink)."""
        out = []
        for p in self.prefixes():
            d = os.path.join(self.real, *p.split("/"))
            try:
                out.append(self.summary(p, d, self._dirs[d][0] if d in self._dirs else None))
            except OSError:
                continue
        return out

    def streams(self, run: Path) -> list[str]:
        """The run's metric streams: those with a file, and those only a killed writer's spill ring holds."""
        base = layout.metrics_dir(run)
        names = set(_data_folders(str(base), ""))
        rr = self._rings.get(run)
        names.update(str(p.parent.relative_to(base)).replace(os.sep, "/") for p in (rr.metrics if rr is not None else {})
                     if base in p.parents)
        return sorted(names)

    def topics(self, run: Path) -> dict[str, Path]:
        return dict(layout.topic_folders(layout.tracks_dir(run)))

    def files(self, run: Path) -> list[dict[str, Any]]:
        entries = layout.index_entries(read_json(layout.files_index_file(run)))
        out = []
        for e in entries:
            if not e.get("deletedAt") and isinstance(e.get("id"), (str, int)):
                out.append(e)
        return out

    def file_path(self, run: Path, entry: dict[str, Any]) -> Path:
        try:
            parts = layout.file_parts(entry)
        except (ValueError, TypeError, KeyError):
            raise NotFound("the file index names a path outside the run") from None
        return self.inside(run, *parts)

    # ---- spill rings of killed writers ---------------------------------------------------------------------
    def _scan_ring(self, run: Path) -> None:
        """Read the rows dead processes left in the run's spill rings (read-only: `ml_dash.load`, the next open
        of the run or `ml-dash sync` write them into the journal), re-read only when a ring changed, or after a
        second while a ring's process may have died since."""
        private = layout.private_dir(run)
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
                    return run.joinpath(*layout.metric_parts(name))
                if kind == "tracks":
                    return layout.data_file(topics[name]) if name in topics else None
                return layout.logs_file(run)
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
    def columns(self, path: Path, end: int | None = None) -> Columns:
        """The stream's columns through the core's incremental column cache (only appended lines are parsed),
        of its first ``end`` bytes when given.

        ``offset`` is where the rows returned end in the file: a live stream started there neither repeats nor
        skips a row."""
        from .. import colcache

        try:
            st = os.stat(path)
            stamp: tuple[int, ...] = (st.st_dev, st.st_ino, st.st_mtime_ns)
        except OSError:
            stamp = ()
        snap = colcache.read(path, "metrics", limit=end, order=False)
        offset = snap.offset  # where its rows end: a live stream started there repeats none and skips none
        cols = dict(snap.num)
        if "index" not in cols:  # (not setdefault: that would build both arrays on every call)
            cols["index"] = np.arange(snap.n, dtype=np.float64)
        if "_ts" not in cols:
            cols["_ts"] = np.full(snap.n, np.nan)
        c = Columns(cols=cols, rows=snap.n, offset=offset, invalid=snap.skipped,
                    non_numeric=set(snap.text), missing=not stamp, stamp=stamp)
        self._exact.add(path)
        extra = self.ring_metrics(path)
        return _with_rows(c, extra) if extra else c

    def _large_unread(self, path: Path) -> bool:
        """A stream whose first full read takes long enough that the page gets a sampled preview meanwhile."""
        if path in self._exact:
            return False
        try:
            return os.path.getsize(path) >= PREVIEW_BYTES
        except OSError:
            return False

    def _start_exact(self, path: Path, end: int | None) -> Any:
        """The background task of the stream's first full read (started here unless one is under way)."""
        import asyncio

        from starlette.concurrency import run_in_threadpool

        task = self._pending.get(path)
        if task is None:
            task = self._pending[path] = asyncio.ensure_future(run_in_threadpool(self.columns, path, end))
            def done(_t: Any) -> None:
                self._exact.add(path)
                self._pending.pop(path, None)
                self._previews.pop(path, None)
                release_memory()

            task.add_done_callback(done)
        return task

    async def columns_or_preview(self, path: Path, end: int | None = None,
                                 wait: float | None = None) -> tuple[Columns, bool]:
        """The exact columns, or, while a large stream's first read is under way, a preview sampled at even byte
        offsets (``True``: approximate). ``wait``: seconds to wait for the exact read first (None: up to
        ``PREVIEW_WAIT`` the first time, not at all once a preview was answered)."""
        import asyncio

        from starlette.concurrency import run_in_threadpool

        if not self._large_unread(path):
            return await run_in_threadpool(self.columns, path, end), False
        task = self._start_exact(path, end)
        pre = self._previews.get(path)
        if wait is None:
            wait = 0.0 if pre is not None else PREVIEW_WAIT
        try:
            if task.done() or wait > 0:
                return await asyncio.wait_for(asyncio.shield(task), wait), False
        except asyncio.TimeoutError:
            pass
        if task.done():  # (finished meanwhile)
            return task.result(), False
        pre = self._previews.get(path)
        if pre is None:  # one preview per stream while its exact read goes on (the run page and its charts)
            pre = self._previews[path] = await run_in_threadpool(preview_columns, path, PREVIEW_LINES, end)
        return pre, True

    def probe(self, prefix: str, stream: str) -> tuple[tuple[Any, ...], bool]:
        """Without reading the stream: what identifies its rows to show now (file identity, change time, size,
        committed end, rows from a spill ring), and whether its first full read is still to come and long."""
        path = self.metric_path(self.run_dir(prefix), stream)
        try:
            st = os.stat(path)
            stamp: tuple[Any, ...] = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            return (), False
        return (*stamp, self.end(prefix, "metrics", stream), len(self.ring_metrics(path))), self._large_unread(path)

    async def prefetch(self, prefixes: Sequence[str]) -> None:
        """Start reading the metric streams of runs whose page was just asked for: the page's own requests for
        them come after its scripts have loaded, and find the columns read or their first read under way."""
        from starlette.concurrency import run_in_threadpool

        def find() -> list[tuple[Path, int | None, bool]]:
            out = []
            for p in prefixes:
                if p in self._prefetched:  # a head start once per run: later its pages read what was appended
                    continue
                if len(self._prefetched) > 100_000:
                    self._prefetched.clear()
                self._prefetched.add(p)
                try:
                    run = self.run_dir(p)
                    for name in self.streams(run):
                        path = self.metric_path(run, name)
                        out.append((path, self.end(p, "metrics", name), self._large_unread(path)))
                except (NotFound, BadName, OSError, ValueError):
                    continue
            return out

        import asyncio

        done = asyncio.get_running_loop().create_future()
        mine = [p for p in prefixes if p not in self._prefetched and p not in self._prefetching]
        for p in mine:
            self._prefetching[p] = done
        try:
            found = await run_in_threadpool(find)
            for path, end, large in found:
                if large:
                    self._start_exact(path, end)
            for path, end, large in found:
                if large and path not in self._previews and path in self._pending:
                    self._previews[path] = await run_in_threadpool(preview_columns, path, PREVIEW_LINES, end)
            small = [(path, end) for path, end, large in found if not large and path not in self._exact]
            if small:
                def read_small() -> None:
                    from .. import colcache

                    # side by side, each stream whole on one of the cores; then the columns are found parsed
                    colcache.read_many([p for p, _ in small], "metrics", limits=[e for _, e in small], order=False)
                    for path, end in small:
                        self.columns(path, end)

                await run_in_threadpool(read_small)
                if len(small) > 10:
                    release_memory()  # (parse buffers of two threads at once: hand the free pages back)
        except Exception:  # noqa: BLE001 - a head start only: the page's own requests report what fails
            pass
        finally:
            for p in mine:
                self._prefetching.pop(p, None)
            done.set_result(None)

    async def settle(self, prefixes: Sequence[str]) -> None:
        """Wait for the prefetch of these runs, if one is under way: the page's request then finds their columns
        read, instead of parsing the same files on a second thread at once (two threads' parse buffers stay in
        the process, one heap arena each)."""
        import asyncio

        waits = {id(f): f for f in (self._prefetching.get(p) for p in prefixes) if f is not None}
        if waits:
            await asyncio.gather(*(asyncio.shield(f) for f in waits.values()))

    def logs(self, run: Path, end: int | None = None) -> Logs:
        path = layout.logs_file(run)
        with self._lock:
            lg = self._logs.get(path)
            if lg is None:
                lg = self._logs[path] = Logs()
            while True:
                tail, ino = read_from(path, lg.offset, lg.ino, end=end)
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


    def logs_tail(self, prefix: str, count: int) -> dict[str, Any] | None:
        """The last ``count`` lines of a run's logs, read from the end of the file, while its logs have not been
        read whole (None once they have: `run_logs` answers from memory). The line count is of the file's complete
        lines; ``invalid`` counts the lines of this answer that are not JSON objects."""
        run = self.run_dir(prefix)
        path = layout.logs_file(run)
        rr = self._rings.get(run)
        if self._logs.get(path) is not None or (rr is not None and rr.logs):
            return None
        t, total = last_lines(path, count, self.end(prefix, "logs"))
        lg = Logs()
        lg.add(t.rows)
        rows = [log_row(lg, i) for i in range(len(lg.message))]
        return {"total": total, "matched": total, "start": max(0, total - len(rows)), "rows": rows,
                "offset": t.offset, "invalid": t.invalid}

    def logs_meta(self, prefix: str) -> dict[str, Any]:
        """A run's log line count, where a live reader of them starts, and the lines that are not JSON objects
        (known once the logs were read whole; before, the count is of the file's complete lines)."""
        run = self.run_dir(prefix)
        if self._logs.get(layout.logs_file(run)) is None:
            t, total = last_lines(layout.logs_file(run), 0, self.end(prefix, "logs"))
            return {"total": total, "offset": t.offset, "invalid": 0}
        lg = self.logs(run, self.end(prefix, "logs"))
        return {"total": len(lg.message), "offset": lg.offset, "invalid": lg.invalid}

    # ---- the `Source` methods: by run prefix and stream name ------------------------------------------------
    def stream_names(self, prefix: str) -> list[str]:
        return self.streams(self.run_dir(prefix))

    def stream_columns(self, prefix: str, stream: str) -> Columns:
        return self.columns(self.metric_path(self.run_dir(prefix), stream), self.end(prefix, "metrics", stream))

    async def stream_columns_or_preview(self, prefix: str, stream: str,
                                        wait: float | None = None) -> tuple[Columns, bool]:
        path = self.metric_path(self.run_dir(prefix), stream)
        return await self.columns_or_preview(path, self.end(prefix, "metrics", stream), wait)

    def topic_list(self, prefix: str) -> list[str]:
        return self.topic_names(self.run_dir(prefix))

    def track_rows(self, prefix: str, topic: str) -> tuple[list[dict[str, Any]], int]:
        from ..reader import merge_tracks

        run = self.run_dir(prefix)
        folder = self.topics(run).get(topic)
        ring = self.ring_tracks(run, topic)
        if folder is None and not ring:
            raise NotFound(f"no track topic {topic!r} in run {prefix!r}")
        tail = read_from(self.inside(run, *layout.track_parts(folder.name)), 0,
                         end=self.end(prefix, "tracks", topic))[0] if folder is not None else None
        return merge_tracks((tail.rows if tail is not None else []) + ring), tail.invalid if tail is not None else 0

    def run_logs(self, prefix: str) -> Logs:
        return self.logs(self.run_dir(prefix), self.end(prefix, "logs"))

    def file_list(self, prefix: str) -> list[dict[str, Any]]:
        return self.files(self.run_dir(prefix))

    def file_content(self, prefix: str, fid: str) -> tuple[dict[str, Any], Path | Iterator[bytes]]:
        run = self.run_dir(prefix)
        for e in self.files(run):
            if str(e.get("id")) == fid:
                path = self.file_path(run, e)
                if not path.is_file():
                    raise NotFound(f"file {e.get('filename')!r} is in the index but not on disk")
                return e, path
        raise NotFound(f"no file with id {fid!r} in run {prefix!r}")

    def tail(self, prefix: str, kind: str, name: str, offset: int, memo: dict[str, Any], limit: int) -> NewRows | None:
        try:
            run = self.run_dir(prefix)
            path = self.metric_path(run, name) if kind == "metrics" else layout.logs_file(run)
            size = os.stat(path).st_size
        except (NotFound, BadName, OSError):
            return None
        end = self.end(prefix, kind, name if kind == "metrics" else None)
        if min(size, end if end is not None else size) <= offset and "ino" in memo:
            return None
        t, memo["ino"] = read_from(path, offset, memo.get("ino"), limit, end)
        return NewRows(t.rows, t.offset, t.invalid, t.reset)

    def status_changed(self, prefix: str, memo: dict[str, Any]) -> bool:
        try:
            m = os.stat(layout.info_file(self.run_dir(prefix))).st_mtime
        except (NotFound, BadName, OSError):
            return True  # gone: the status to show is DELETED
        if m == memo.get("mtime") and time.monotonic() % 5 > 0.1:  # re-check the heartbeat age now and then
            return False
        memo["mtime"] = m
        return True


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


def _data_folders(folder: str, rel: str) -> Iterator[str]:
    """The folders under ``folder`` (relative names, "/"-separated) that hold a stream's data file; symlinked
    folders are not entered (os.scandir: a tenth of pathlib's rglob time on a run with one stream)."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return
    for e in entries:
        if e.name == layout.DATA and rel and not e.is_dir():
            yield rel
        elif e.is_dir(follow_symlinks=False):
            yield from _data_folders(e.path, f"{rel}/{e.name}" if rel else e.name)


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
                   non_numeric=c.non_numeric | set(b.text), ino=c.ino, missing=False, stamp=c.stamp + (m,))


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


def release_memory() -> None:
    """Hand the heap's free pages back to the system after the first read of a large stream (its parse buffers
    are freed, but glibc keeps them, one arena per thread of the pool, which would show as ~50 MB of resident
    memory per 1M-row stream). A no-op where the C library has no ``malloc_trim``."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def preview_columns(path: Path, lines: int = PREVIEW_LINES, end: int | None = None) -> Columns:
    """Columns of about ``lines`` rows read in evenly spaced byte windows of the file (of its first ``end``
    bytes, when given), a few consecutive rows from each: a fast, approximate first look that reads a few MB at
    most, whatever the file's size."""
    from ..columns import parse

    offset = complete_size(path)  # taken first: never past the rows sampled
    size = os.path.getsize(path)
    if end is not None:
        offset, size = min(offset, end), min(size, end)
    windows = max(1, min(PREVIEW_WINDOWS, lines))
    per = max(1, lines // windows)
    picked: list[bytes] = []
    last = -1  # where the last line taken ends: windows never take a line twice
    fd = os.open(path, os.O_RDONLY)
    try:
        for k in range(windows):
            at = k * size // windows
            if at < last:
                continue
            start = max(0, at - 1)  # from the byte before: a window starting on a line's first byte keeps it
            want = PREVIEW_WINDOW
            while True:  # wide rows: the window grows until it holds ``per`` lines (or reaches the end)
                buf = os.pread(fd, min(want, size - start), start)
                first = 0 if start == 0 else buf.find(b"\n") + 1
                got = buf[first:].split(b"\n")[:-1][:per] if first or not start else []  # complete lines only
                if len(got) >= per or start + len(buf) >= size or want >= PREVIEW_WINDOW_MAX:
                    break
                want *= 4
            if got:
                chunk = b"\n".join(got) + b"\n"
                picked.append(chunk)
                last = start + first + len(chunk)
    finally:
        os.close(fd)
    b = parse(b"".join(picked), "metrics")
    cols = dict(b.num)
    cols.setdefault("index", np.arange(b.n, dtype=np.float64))
    cols.setdefault("_ts", np.full(b.n, np.nan))
    return Columns(cols=cols, rows=b.n, offset=offset, invalid=0, non_numeric=set(b.text), missing=False)


def search_logs(logs: Logs, level: str | None, query: str | None, regex: bool) -> Sequence[int]:
    """Indices of the log lines matching a level set (comma-separated) and a substring or regex (either case)."""
    idx: Sequence[int] = range(len(logs.message))
    if query:
        # either case: a pattern whose meaning survives lower-casing runs case-sensitively over the lower-cased
        # text (the regex engine's fast literal scan); one with escapes like \S or \x41 gets re.IGNORECASE
        if not regex:
            pattern, flags = re.escape(query.lower()), re.MULTILINE
        elif re.search(r"\\[A-Zxu]", query):
            pattern, flags = query, re.IGNORECASE | re.MULTILINE
        else:
            pattern, flags = query.lower(), re.MULTILINE
        try:
            rx = re.compile(pattern, flags)
        except re.error as e:
            raise BadName(f"invalid regular expression: {e}") from None
        text, starts, lower, lstarts = logs.blob()
        if not regex:  # where the pieces between occurrences end: no object per occurrence
            q = query.lower()
            ends = np.cumsum(np.fromiter(map(len, lower.split(q)), dtype=np.int64)[:-1] + len(q))
            hits = ends - len(q)
            starts = lstarts
        elif flags & re.IGNORECASE:
            hits = np.fromiter((m.start() for m in rx.finditer(text)), dtype=np.int64)
        else:
            hits = np.fromiter((m.start() for m in rx.finditer(lower)), dtype=np.int64)
            starts = lstarts
        lines = np.searchsorted(starts, hits, "right") - 1  # hits are in order: so are their lines
        if len(lines) > 1:
            lines = lines[np.concatenate([[True], lines[1:] != lines[:-1]])]
        idx = lines.tolist()
    levels = {x for x in (level or "").lower().split(",") if x}
    if levels:
        lv = logs.level
        idx = [i for i in idx if lv[i] in levels]
    return idx
