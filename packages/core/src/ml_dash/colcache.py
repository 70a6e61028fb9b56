"""The incremental column cache: a stream file is parsed once, afterwards only the lines appended since.

Stream files are append-only, so the columns of a file are valid for its first ``offset`` bytes as long as the
file is the same file (device and inode), at least that long, and still holds the same bytes just before
``offset`` (the last 64 are kept and compared). A truncated, replaced or rewritten file starts over.

Columns live in memory (per process, least recently used dropped beyond a budget) and on disk, outside the
``.dash`` folder so its layout stays byte-identical: ``$ML_DASH_CACHE_DIR``, else ``$XDG_CACHE_HOME/ml-dash``,
else ``~/.cache/ml-dash``. The disk cache is never required: when it cannot be written the columns stay in
memory. On disk an entry is a folder per stream file: ``head.json`` (what the columns cover) and one append-only
float64 file per numeric field, plus ``<gen>.text.jsonl`` for the fields that hold strings or lists.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .columns import Batch, Template, parse

VERSION = 1
TAIL = 64  # bytes before the parsed end that must not change
MEMORY_BUDGET = 512 << 20  # bytes of columns kept in memory across streams
MAX_READ = 64 << 20  # bytes read and parsed at a time


def cache_root() -> Path:
    """Where the disk cache lives (it may not exist or be writable)."""
    env = os.environ.get("ML_DASH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ml-dash"


class StreamColumns:
    """Growable columns of one stream file and the part of the file they cover."""

    def __init__(self, kind: str, path: str = "") -> None:
        self.kind = kind
        self.path = path
        self.n = 0
        self.cap = 0
        self.num: dict[str, np.ndarray] = {}  # float64, ``cap`` long; NaN past ``n``
        self.text: dict[str, dict[int, Any]] = {}  # field -> {row: value} for strings, lists, ...
        self.offset = 0  # bytes of the file parsed (complete lines)
        self.tail = b""  # the last TAIL bytes before offset
        self.dev = -1
        self.ino = -1
        self.mtime_ns = -1
        self.skipped = 0  # corrupt lines left out
        self.gen = secrets.token_hex(6)  # names this generation's files on disk
        self.templates: list[Template] = []
        self.derived: dict[str, Any] = {}  # the int64 order field and its order, as far as computed

    def nbytes(self) -> int:
        return self.cap * 8 * len(self.num) + 64 * sum(len(t) for t in self.text.values())

    def reserve(self, need: int) -> None:
        if need <= self.cap:
            return
        cap = max(need + need // 4, self.cap * 2, 1024)  # room for the appends that follow
        for k, col in self.num.items():
            new = np.full(cap, np.nan)
            new[: self.n] = col[: self.n]
            self.num[k] = new
        self.cap = cap

    def append(self, b: Batch) -> None:
        n = self.n
        self.reserve(n + b.n)
        for k, v in b.num.items():
            col = self.num.get(k)
            if col is None:
                col = self.num[k] = np.full(self.cap, np.nan)
            col[n : n + b.n] = v
        for k, tv in b.text.items():
            dst = self.text.setdefault(k, {})
            for r, val in tv.items():
                dst[n + r] = val
        self.n = n + b.n
        self.skipped += b.skipped


ORDER_FIELD = {"metrics": "index", "tracks": "timestamp", "logs": "sequenceNumber"}


class Snapshot:
    """What a read returns: ``n`` rows; read-only float64 views per numeric field; text fields as dicts;
    ``ints``: the order field (a metric's ``index``, a log's ``sequenceNumber``) as int64 when every row has one;
    ``ordered``: whether that field never decreases (kept up to date incrementally, so a read stays O(appended))."""

    __slots__ = ("kind", "n", "num", "text", "skipped", "ints", "ordered")

    def __init__(self, s: StreamColumns) -> None:
        self.kind = s.kind
        self.n = s.n
        self.num: dict[str, np.ndarray] = {}
        for k, col in s.num.items():
            v = col[: s.n]
            v.flags.writeable = False
            self.num[k] = v
        self.text = {k: dict(v) for k, v in s.text.items()}
        self.skipped = s.skipped
        self.ints: dict[str, np.ndarray] = {}
        self.ordered = True
        key = ORDER_FIELD[s.kind]
        found = s.num.get(key)
        if found is None or not s.n:
            return
        col = found
        d = s.derived
        if d.get("field") is not col or d["n"] > s.n:  # a new column array: start over
            d.clear()
            d.update(field=col, n=0, ints=np.empty(0, dtype=np.int64), whole=True, ordered=True)
        done = d["n"]
        if done < s.n:
            new = col[done : s.n]
            whole = d["whole"] and not bool(np.isnan(new).any())
            ordered = d["ordered"] and bool((new[1:] >= new[:-1]).all()) and (done == 0 or col[done] >= col[done - 1])
            if whole and s.kind != "tracks":
                ints = d["ints"]
                if len(ints) < s.n:
                    grown = np.empty(max(s.n + s.n // 4, 1024), dtype=np.int64)
                    grown[:done] = ints[:done]
                    ints = grown
                ints[done : s.n] = new
                d["ints"] = ints
            d.update(n=s.n, whole=whole, ordered=ordered)
        self.ordered = d["ordered"]
        if d["whole"] and s.kind != "tracks":
            v = d["ints"][: s.n]
            v.flags.writeable = False
            self.ints[key] = v


_mem: OrderedDict[str, StreamColumns] = OrderedDict()
_mem_lock = threading.Lock()
_key_locks: dict[str, threading.Lock] = {}


def _reset_in_child() -> None:
    global _mem_lock
    _mem_lock = threading.Lock()
    _key_locks.clear()


os.register_at_fork(after_in_child=_reset_in_child)


def _key_lock(key: str) -> threading.Lock:
    with _mem_lock:
        lk = _key_locks.get(key)
        if lk is None:
            lk = _key_locks[key] = threading.Lock()
        return lk


def _remember(key: str, state: StreamColumns) -> None:
    with _mem_lock:
        _mem[key] = state
        _mem.move_to_end(key)
        total = sum(s.nbytes() for s in _mem.values())
        while len(_mem) > 1 and total > MEMORY_BUDGET:
            _, old = _mem.popitem(last=False)
            total -= old.nbytes()


def clear_memory() -> None:
    """Forget the columns kept in this process (the disk cache stays)."""
    with _mem_lock:
        _mem.clear()


def read(path: str | os.PathLike[str], kind: str, *, disk: bool = True) -> Snapshot:
    """The columns of the complete lines of a stream file, parsing only what was appended since the last read."""
    p = os.path.abspath(os.fspath(path))
    key = hashlib.sha1(f"{VERSION}\0{kind}\0{p}".encode()).hexdigest()
    with _key_lock(key):
        with _mem_lock:
            state = _mem.get(key)
        try:
            fd = os.open(p, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            with _mem_lock:
                _mem.pop(key, None)
            return Snapshot(StreamColumns(kind, p))
        try:
            st = os.fstat(fd)
            entry = DiskEntry(key) if disk else None
            if state is not None and not _same_file(state, st):
                state = None
            if state is None and entry is not None:
                state = entry.load(p, kind, st)
                if state is not None and not _same_file(state, st):
                    state = None
            if state is None:
                state = StreamColumns(kind, p)
            state = _catch_up(state, fd, st, kind, entry)
        finally:
            os.close(fd)
        _remember(key, state)
        return Snapshot(state)


def _same_file(s: StreamColumns, st: os.stat_result) -> bool:
    if s.offset == 0:
        return True
    return s.dev == st.st_dev and s.ino == st.st_ino and st.st_size >= s.offset


def _catch_up(state: StreamColumns, fd: int, st: os.stat_result, kind: str, entry: DiskEntry | None) -> StreamColumns:
    if st.st_size == state.offset and st.st_mtime_ns == state.mtime_ns:
        return state
    start = max(0, state.offset - len(state.tail))
    if state.offset and os.pread(fd, state.offset - start, start) != state.tail:
        state = StreamColumns(kind, state.path)  # rewritten in place: start over
    state.dev, state.ino = st.st_dev, st.st_ino
    saved_n, saved_offset = state.n, state.offset
    size = st.st_size
    while state.offset < size:
        want = min(size - state.offset, MAX_READ)
        data = os.pread(fd, want, state.offset)
        end = data.rfind(b"\n") + 1
        if end == 0:
            if want < size - state.offset:  # one line longer than MAX_READ: read up to its end
                nl = -1
                more = data
                while nl < 0 and state.offset + len(more) < size:
                    chunk = os.pread(fd, MAX_READ, state.offset + len(more))
                    if not chunk:
                        break
                    nl = chunk.find(b"\n")
                    more += chunk if nl < 0 else chunk[: nl + 1]
                data, end = more, (len(more) if nl >= 0 else 0)
            if end == 0:
                break  # only a torn last line: it waits for the next read
        state.append(parse(data[:end], kind, state.templates))
        state.tail = (state.tail + data[:end])[-TAIL:]
        state.offset += end
    state.mtime_ns = st.st_mtime_ns
    if entry is not None and state.offset != saved_offset:
        entry.save(state, saved_n, saved_offset)
    return state


class DiskEntry:
    """The on-disk copy of one stream's columns. Every failure to read or write it is ignored."""

    def __init__(self, key: str) -> None:
        self.dir = cache_root() / "columns" / key[:2] / key

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _head(self) -> dict[str, Any] | None:
        try:
            head = json.loads((self.dir / "head.json").read_bytes())
        except (OSError, ValueError):
            return None
        return head if isinstance(head, dict) and head.get("v") == VERSION else None

    def load(self, path: str, kind: str, st: os.stat_result) -> StreamColumns | None:
        if not (self.dir / "head.json").exists():
            return None
        try:
            with self._locked():
                head = self._head()
                if head is None or head.get("path") != path or head.get("kind") != kind:
                    return None
                if head["dev"] != st.st_dev or head["ino"] != st.st_ino or st.st_size < head["offset"]:
                    return None
                s = StreamColumns(kind, path)
                n = int(head["rows"])
                s.gen = str(head["gen"])
                s.reserve(max(n + max(n // 4, 4096), 1024))
                for i, name in enumerate(head["num"]):
                    col = np.full(s.cap, np.nan)
                    with open(self.dir / f"{s.gen}.{i}.f64", "rb") as f:
                        got = f.readinto(memoryview(col[:n]).cast("B"))  # type: ignore[arg-type]
                    if got != n * 8:
                        return None
                    s.num[name] = col
                if head["text"]:
                    for line in (self.dir / f"{s.gen}.text.jsonl").read_bytes().splitlines():
                        r, name, value = json.loads(line)
                        if r < n:
                            s.text.setdefault(name, {})[r] = value
                s.n = n
                s.offset = int(head["offset"])
                s.tail = bytes.fromhex(head["tail"])
                s.dev, s.ino = st.st_dev, st.st_ino
                s.skipped = int(head.get("skipped", 0))
                return s
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, s: StreamColumns, old_n: int, old_offset: int) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with self._locked():
                head = self._head()
                fresh = head is None or head.get("gen") != s.gen or head.get("rows") != old_n \
                    or head.get("offset") != old_offset
                if fresh and head is not None and head.get("gen") == s.gen and head.get("offset", 0) >= s.offset:
                    return  # another process already saved as much
                if fresh:
                    s.gen = secrets.token_hex(6)
                    names = list(s.num)
                    start = 0
                else:
                    assert head is not None
                    names = list(head["num"]) + [k for k in s.num if k not in head["num"]]
                    start = old_n
                known = set(head["num"]) if not fresh and head is not None else set()
                for i, name in enumerate(names):
                    col = s.num[name]
                    with open(self.dir / f"{s.gen}.{i}.f64", "ab" if name in known else "wb") as out:
                        out.write(col[start if name in known else 0 : s.n].tobytes())
                text_lines = [json.dumps([r, k, v]) + "\n" for k, tv in s.text.items() for r, v in tv.items()
                              if r >= start]
                if text_lines or fresh:
                    with open(self.dir / f"{s.gen}.text.jsonl", "a" if not fresh else "w") as tf:
                        tf.writelines(text_lines)
                new_head = {"v": VERSION, "path": s.path, "kind": s.kind, "dev": s.dev, "ino": s.ino,
                            "offset": s.offset, "tail": s.tail.hex(), "rows": s.n, "gen": s.gen, "num": names,
                            "text": sorted(s.text), "skipped": s.skipped}
                tmp = self.dir / f".head.{os.getpid()}.{threading.get_ident()}.tmp"
                tmp.write_text(json.dumps(new_head))
                os.replace(tmp, self.dir / "head.json")
                if fresh:
                    for old in self.dir.iterdir():
                        if old.name.endswith((".f64", ".text.jsonl")) and not old.name.startswith(s.gen + "."):
                            old.unlink(missing_ok=True)
        except (OSError, ValueError, TypeError):
            pass



def read_numbered(key: str, kind: str, total: int, fetch: Callable[[int, int], bytes], *,
                  page: int = 200_000) -> Snapshot:
    """The columns of a stream kept elsewhere as numbered lines that are only ever appended (a database table:
    line ``i`` never changes once it exists). ``total``: how many lines there are now; ``fetch(start, stop)``: the
    lines ``start..stop-1`` as bytes, each ending with a newline. Kept in memory under ``key`` (with the other
    streams' columns), so a read after an append fetches and parses only the new lines."""
    k = "numbered\0" + key
    with _key_lock(k):
        with _mem_lock:
            state = _mem.get(k)
        if state is None or state.offset > total:  # never seen, or the stream was dropped and started over
            state = StreamColumns(kind)
        while state.offset < total:  # ``offset`` counts lines here
            stop = min(total, state.offset + page)
            data = fetch(state.offset, stop)
            b = parse(data, kind, state.templates)
            if b.n + b.skipped != stop - state.offset:
                raise ValueError(f"expected {stop - state.offset} {kind} lines from line {state.offset}, "
                                 f"got {b.n + b.skipped}")
            state.append(b)
            state.offset = stop
        _remember(k, state)
        return Snapshot(state)
