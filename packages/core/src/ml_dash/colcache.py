"""The incremental column cache: a stream file is parsed once, afterwards only the lines appended since.

Stream files are append-only, so the columns of a file are valid for its first ``offset`` bytes as long as the
file is the same file (device and inode), at least that long, and still holds the same bytes just before
``offset`` (the last 64 are kept and compared). A truncated, replaced or rewritten file starts over.

Columns live in memory (per process, least recently used dropped beyond a budget) and on disk, outside the
``.dash`` folder so its layout stays byte-identical: ``$ML_DASH_CACHE_DIR``, else ``$XDG_CACHE_HOME/ml-dash``,
else ``~/.cache/ml-dash``. The disk cache is never required: when it cannot be written the columns stay in
memory. On disk an entry is one file per stream file (``DiskEntry``): blocks of float64 rows, each appended by the
read that parsed them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np

from .columns import BACK, FRONT, MAX_THREADS, Batch, Template, parse, parse_parts, solo
from .columns import _pool as parse_pool
from .config import cache_root

VERSION = 2
TAIL = 64  # bytes before the parsed end that must not change
MEMORY_BUDGET = 512 << 20  # bytes of columns kept in memory across streams
MAX_READ = 16 << 20  # bytes read and parsed at a time (a larger read costs more in page faults than it saves)


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
        self.blocks = 0  # blocks of its disk entry

    def nbytes(self) -> int:
        return self.cap * 8 * len(self.num) + 64 * sum(len(t) for t in self.text.values())

    def reserve(self, need: int, spare: bool = True) -> None:
        if need <= self.cap:
            return
        cap = max(need + need // 4 if spare else need, 1024)  # room for the appends that follow (a quarter more)
        for k, col in self.num.items():
            new = np.empty(cap)
            new[: self.n] = col[: self.n]
            new[self.n :] = np.nan
            self.num[k] = new
        self.cap = cap

    def fit(self) -> None:
        """Drop the room for appends beyond a little (after a large first read; appends grow it again)."""
        cap = self.n + max(1024, self.n // 32)
        if self.cap <= cap:
            return
        for k, col in self.num.items():
            self.num[k] = col[:cap].copy()
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

    __slots__ = ("kind", "n", "num", "text", "skipped", "ints", "ordered", "offset")

    def __init__(self, s: StreamColumns, order: bool = True) -> None:
        self.kind = s.kind
        self.n = s.n
        self.offset = s.offset  # bytes of the file these rows come from (complete lines)
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
        if found is None or not s.n or not order:  # (not asked: no int64 copy of the order field is kept)
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
_mem_sizes: dict[str, int] = {}  # bytes of each entry of ``_mem`` when it was last remembered
_mem_total = 0
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
    global _mem_total
    with _mem_lock:
        _mem[key] = state
        _mem.move_to_end(key)
        size = state.nbytes()  # the sizes as last remembered: no pass over every entry per read
        _mem_total += size - _mem_sizes.get(key, 0)
        _mem_sizes[key] = size
        while len(_mem) > 1 and _mem_total > MEMORY_BUDGET:
            old, _ = _mem.popitem(last=False)
            _mem_total -= _mem_sizes.pop(old, 0)


def _forget(key: str) -> None:
    global _mem_total
    with _mem_lock:
        _mem.pop(key, None)
        _mem_total -= _mem_sizes.pop(key, 0)


def clear_memory() -> None:
    """Forget the columns kept in this process (the disk cache stays, its writes in progress finished)."""
    global _mem_total
    flush()
    with _mem_lock:
        _mem.clear()
        _mem_sizes.clear()
        _mem_total = 0


def read(path: str | os.PathLike[str], kind: str, *, disk: bool = True, limit: int | None = None,
         order: bool = True) -> Snapshot:
    """The columns of the complete lines of a stream file (of its first ``limit`` bytes: the server's committed
    size), parsing only what was appended since the last read. ``order=False``: without ``ints`` and
    ``ordered`` (left empty and True), for a reader that needs neither."""
    p = os.path.abspath(os.fspath(path))
    key = _key(p, kind)
    with _key_lock(key):
        with _mem_lock:
            state = _mem.get(key)
        try:
            fd = os.open(p, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            _forget(key)
            return Snapshot(StreamColumns(kind, p))
        try:
            st = os.fstat(fd)
            if state is not None and not _same_file(state, st):
                state = None
            if state is not None and _unchanged(state, st, limit):
                _remember(key, state)
                return Snapshot(state, order)  # nothing appended: no disk entry to look at
            entry = DiskEntry(key) if disk else None
            if state is None and entry is not None:
                state = entry.load(p, kind, st)
                if state is not None and not _same_file(state, st):
                    state = None
            if state is None:
                state = StreamColumns(kind, p)
            state = _catch_up(state, fd, st, kind, entry, limit)
        finally:
            os.close(fd)
        _remember(key, state)
        return Snapshot(state, order)


def _key(p: str, kind: str) -> str:
    return hashlib.sha1(f"{VERSION}\0{kind}\0{p}".encode()).hexdigest()


SOLO_BELOW = 8 << 20  # ``read_many``: a stream with less than this to parse is parsed whole by one thread


def read_many(paths: Iterable[str | os.PathLike[str]], kind: str, *, disk: bool = True,
              limits: Iterable[int | None] | None = None, order: bool = True) -> list[Snapshot]:
    """``read`` of several stream files (``limits``: one per path, as ``read``'s ``limit``), in their order.
    Streams with little to parse (below ``SOLO_BELOW`` bytes: a cold run of 10,000 rows is 1.6 MB) are read side
    by side, each whole by one of up to ``columns.MAX_THREADS`` threads, so the cores stay busy from one stream to
    the next (no stream's pieces handed between threads, no wait at each stream's end for the slower piece, the
    per-stream work of one beside the parse of another); a larger one is read first, as ``read`` reads it (its
    chunks on every core)."""
    ps = [os.path.abspath(os.fspath(p)) for p in paths]
    lims = [None] * len(ps) if limits is None else list(limits)
    if len(lims) != len(ps):
        raise ValueError(f"limits: one per path, got {len(lims)} for {len(ps)} paths")
    out: list[Snapshot | None] = [None] * len(ps)
    small: list[int] = []
    for i, p in enumerate(ps):
        with _mem_lock:
            state = _mem.get(_key(p, kind))
        try:
            size = os.stat(p).st_size
        except OSError:
            size = 0
        lim = lims[i]
        pending = (size if lim is None else min(size, lim)) - (state.offset if state is not None else 0)
        if pending >= SOLO_BELOW:
            out[i] = read(p, kind, disk=disk, limit=lim, order=order)
        else:
            small.append(i)
    todo = iter(small)
    lock = threading.Lock()

    def work() -> None:
        with solo():
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                out[i] = read(ps[i], kind, disk=disk, limit=lims[i], order=order)

    workers = min(len(small), os.cpu_count() or 1, MAX_THREADS)
    futures = []
    with _writes_after():
        if workers > 1:
            try:
                pool = parse_pool()
                futures = [pool.submit(work) for _ in range(workers - 1)]
            except RuntimeError:  # no new threads (interpreter shutting down): all on this thread
                futures = []
        try:
            work()
        finally:
            for f in futures:
                if not f.cancel():  # started (or done): wait for the stream it took; one still queued takes none
                    f.result()
    return [s if s is not None else Snapshot(StreamColumns(kind, p)) for s, p in zip(out, ps, strict=True)]


def _unchanged(s: StreamColumns, st: os.stat_result, limit: int | None) -> bool:
    """Whether ``_catch_up`` would find nothing to read (its first test, without a disk entry)."""
    size = st.st_size if limit is None else min(st.st_size, limit)
    return s.offset > 0 and size == s.offset and (st.st_mtime_ns == s.mtime_ns or limit is not None)


def _same_file(s: StreamColumns, st: os.stat_result) -> bool:
    if s.offset == 0:
        return True
    return s.dev == st.st_dev and s.ino == st.st_ino and st.st_size >= s.offset


def _catch_up(state: StreamColumns, fd: int, st: os.stat_result, kind: str, entry: DiskEntry | None,
              limit: int | None = None) -> StreamColumns:
    size = st.st_size if limit is None else min(st.st_size, limit)
    if size == state.offset and (st.st_mtime_ns == state.mtime_ns or limit is not None):
        return state  # (bytes below a limit are committed: they never change)
    if state.offset > size:  # parsed past the limit by a reader without one: start over
        state = StreamColumns(kind, state.path)
    start = max(0, state.offset - len(state.tail))
    if state.offset and os.pread(fd, state.offset - start, start) != state.tail:
        state = StreamColumns(kind, state.path)  # rewritten in place: start over
    state.dev, state.ino = st.st_dev, st.st_ino
    saved_n, saved_offset = state.n, state.offset
    with _parsing():
        _parse_into(state, fd, size, kind)
    state.mtime_ns = st.st_mtime_ns
    if saved_n == 0 and state.n > 100_000:
        state.fit()  # a large file read whole: its columns without a quarter of room to spare
    if entry is not None and state.offset != saved_offset:
        entry.save(state, saved_n, saved_offset)
    return state


def _parse_into(state: StreamColumns, fd: int, size: int, kind: str) -> None:
    """Parse the complete lines of the file from ``state.offset`` up to ``size`` into ``state``."""
    saved_offset = state.offset
    while state.offset < size:
        want = min(size - state.offset, MAX_READ)
        buf, lo, hi, pooled = _read(fd, want, state.offset)
        try:
            end = buf.rfind(b"\n", lo, hi) + 1 - lo
            if end <= 0:
                data = _bytes(buf, lo, hi)
                end = 0
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
                if pooled:
                    _give(buf)
                buf, lo, hi, pooled = data, 0, len(data), False
            # the read's complete lines (without copying them), in parts copied straight into the columns
            for part in parse_parts(buf, kind, state.templates, start=lo, end=lo + end):
                state.append(part)
            state.tail = _bytes(buf, lo + end - TAIL, lo + end) if end >= TAIL else \
                (state.tail + _bytes(buf, lo, lo + end))[-TAIL:]
        finally:
            if pooled:
                _give(buf)
        state.offset += end
        if saved_offset == 0 and state.offset == end and state.offset < size:
            # a large file read from its start: room for all its rows (estimated from the first read) at once
            state.reserve(int(state.n * (size / state.offset) * 1.01) + 1024, spare=False)


SMALL_READ = 4 << 20  # reads up to this size go into a reused buffer with room before and after the data
_free: list[bytearray] = []  # reused read buffers (at most two kept, each at most SMALL_READ long)
_free_lock = threading.Lock()


def _read(fd: int, want: int, offset: int) -> tuple[bytes | bytearray, int, int, bool]:
    """Up to ``want`` bytes of the file from ``offset``: (buffer, start, end of the data in it, pooled). A small
    read lands in a reused buffer ``FRONT`` bytes in, so the parser's passes read across the data's edges without
    a padded copy and no fresh pages are faulted in per stream; give a pooled buffer back with ``_give``."""
    if want > SMALL_READ or not hasattr(os, "preadv"):
        data = os.pread(fd, want, offset)
        return data, 0, len(data), False
    need = FRONT + want + BACK
    with _free_lock:
        fits = [i for i, b in enumerate(_free) if len(b) >= need]
        buf = _free.pop(fits[0]) if fits else None
    if buf is None:  # room for this read, rounded up to a power of two (64 KiB at least)
        buf = bytearray(FRONT + BACK + max(1 << 16, 1 << (want - 1).bit_length()))
    try:
        got = os.preadv(fd, [memoryview(buf)[FRONT : FRONT + want]], offset)
    except BaseException:
        _give(buf)
        raise
    return buf, FRONT, FRONT + got, True


def _give(buf: bytes | bytearray) -> None:
    if not isinstance(buf, bytearray):
        return
    with _free_lock:
        _free.append(buf)
        _free.sort(key=len)
        if len(_free) > 2:
            del _free[0]  # the smallest goes


def _bytes(buf: bytes | bytearray, s: int, e: int) -> bytes:
    return buf[s:e] if isinstance(buf, bytes) else bytes(memoryview(buf)[s:e])


_MAGIC = b"MLDCOL2\n"
_END = b"MLDCEND\n"
MAX_BLOCKS = 64  # appended blocks before the entry is rewritten whole


class DiskEntry:
    """The on-disk copy of one stream's columns: one file of blocks, each a JSON header (what the columns cover
    after it: file identity, offset, tail, rows; its numeric field names and text values) then the float64 rows it
    adds per field, then a trailer pointing back at its start. A read appends one block with one write; a torn or
    foreign block ends the entry where the last whole block ends. One file per stream keeps a cold read of many
    small streams to one file created each. Every failure to read or write it is ignored."""

    def __init__(self, key: str) -> None:
        self.file = cache_root() / "columns" / key[:2] / f"{key}.cols"

    @staticmethod
    def _blocks(fd: int, size: int) -> Iterator[tuple[dict[str, Any], int]]:
        """(header, data start) of each whole, consecutive block; only headers and trailers are read."""
        pos, rows, gen, index = 0, 0, None, 0
        while pos + 16 <= size:
            lead = os.pread(fd, 16, pos)
            if len(lead) < 16 or lead[:8] != _MAGIC:
                return
            hl = int.from_bytes(lead[8:16], "little")
            head = json.loads(os.pread(fd, hl, pos + 16))
            data = pos + 16 + hl
            end = data + (head["rows"] - head["rows_from"]) * 8 * len(head["num"])
            trailer = os.pread(fd, 16, end) if end + 16 <= size else b""
            if len(trailer) < 16 or trailer[8:] != _END or int.from_bytes(trailer[:8], "little") != pos:
                return  # torn
            if head["rows_from"] != rows or head["rows"] < rows or (gen is not None and head["gen"] != gen) \
                    or head.get("index") != index:
                return
            gen, rows, index = head["gen"], head["rows"], index + 1
            yield head, data
            pos = end + 16

    def load(self, path: str, kind: str, st: os.stat_result) -> StreamColumns | None:
        _wait(self.file)
        try:
            fd = os.open(self.file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            blocks = list(self._blocks(fd, os.fstat(fd).st_size))
            if not blocks:
                return None
            last = blocks[-1][0]
            if last.get("v") != VERSION or last.get("path") != path or last.get("kind") != kind:
                return None
            if last["dev"] != st.st_dev or last["ino"] != st.st_ino or st.st_size < last["offset"]:
                return None
            s = StreamColumns(kind, path)
            n = int(last["rows"])
            s.reserve(n + max(n // 64, 4096), spare=False)  # (appends grow it by a quarter when they need to)
            covered: dict[str, list[tuple[int, int]]] = {}
            for head, data in blocks:
                rf, rt = head["rows_from"], head["rows"]
                for i, name in enumerate(head["num"]):
                    col = s.num.get(name)
                    if col is None:
                        col = s.num[name] = np.empty(s.cap)
                    if rt > rf:  # straight from the file into the column: no intermediate copy
                        want = (rt - rf) * 8
                        view = memoryview(col[rf:rt]).cast("B")  # type: ignore[arg-type]
                        if os.preadv(fd, [view], data + i * want) != want:
                            return None
                    covered.setdefault(name, []).append((rf, rt))
                for r, name, value in head["text"]:
                    s.text.setdefault(name, {})[r] = value
            for name, spans in covered.items():  # NaN where no block gave the field a value, and past the end
                col, at = s.num[name], 0
                for rf, rt in spans:
                    if rf > at:
                        col[at:rf] = np.nan
                    at = max(at, rt)
                col[at:] = np.nan
            s.n = n
            s.gen = str(last["gen"])
            s.offset = int(last["offset"])
            s.tail = bytes.fromhex(last["tail"])
            s.dev, s.ino = st.st_dev, st.st_ino
            s.skipped = int(last.get("skipped", 0))
            s.blocks = len(blocks)
            return s
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None
        finally:
            os.close(fd)

    @staticmethod
    def _block(s: StreamColumns, start: int, pos: int, index: int) -> list[bytes | memoryview]:
        names = [k for k, col in s.num.items() if start == 0 or not np.isnan(col[start : s.n]).all()]
        head = {"v": VERSION, "path": s.path, "kind": s.kind, "dev": s.dev, "ino": s.ino, "offset": s.offset,
                "tail": s.tail.hex(), "rows_from": start, "rows": s.n, "gen": s.gen, "num": names,
                "text": [[r, k, v] for k, tv in s.text.items() for r, v in tv.items() if r >= start],
                "skipped": s.skipped, "index": index}
        hb = json.dumps(head).encode()
        hb += b" " * (-len(hb) % 8)
        parts: list[bytes | memoryview] = [_MAGIC + len(hb).to_bytes(8, "little") + hb]
        parts += [memoryview(np.ascontiguousarray(s.num[k][start : s.n])).cast("B")  # type: ignore[arg-type]
                  for k in names]  # no copies
        parts.append(pos.to_bytes(8, "little") + _END)
        return parts

    def save(self, s: StreamColumns, old_n: int, old_offset: int) -> None:
        try:
            if old_offset and self._append(s, old_n, old_offset):
                return
            s.gen = secrets.token_hex(6)
            data = self._block(s, 0, 0, 0)  # (views of rows that never change: appends go past them)
            s.blocks = 1
        except (OSError, ValueError, TypeError):
            return
        _in_background(self.file, lambda: self._write_whole(data))

    def _write_whole(self, data: list[bytes | memoryview]) -> None:
        try:
            tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, data, 0)
            finally:
                os.close(fd)
            os.replace(tmp, self.file)
        except (OSError, ValueError, TypeError):
            pass

    def _append(self, s: StreamColumns, old_n: int, old_offset: int) -> bool:
        """Append the rows after ``old_n`` as one block when the file ends where this state's last save did;
        False: write the entry whole instead."""
        if s.blocks >= MAX_BLOCKS:
            return False
        _wait(self.file)
        try:
            fd = os.open(self.file, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            tail = os.pread(fd, 16, size - 16) if size >= 32 else b""
            if tail[8:] != _END:
                return False
            pos = int.from_bytes(tail[:8], "little")
            hl = int.from_bytes(os.pread(fd, 8, pos + 8), "little")
            head = json.loads(os.pread(fd, hl, pos + 16))
            if head.get("gen") != s.gen or head.get("rows") != old_n or head.get("offset") != old_offset:
                # another process saved since: as much or more (keep its file), or an older state (rewrite)
                return bool(head.get("gen") == s.gen and head.get("offset", 0) >= s.offset)
            _write_all(fd, self._block(s, old_n, size, int(head.get("index", 0)) + 1), size)
            s.blocks += 1
            return True
        finally:
            os.close(fd)



# A whole entry (a stream's first read, or a rewrite) is written by one background thread, so that the next read
# (of another stream) starts at once. The thread starts a write when reads have gone quiet (``_until_quiet``), and
# ``read_many`` holds its writes back until it is done (``_writes_after``): on a machine with few cores the writes
# would take CPU, and GIL hand-offs, from the parse. Whoever needs the file first (a read of the same entry, an
# append to it, ``flush``, ``clear_memory``) writes it then if the thread has not started it; the interpreter
# finishes the writes at exit.
WRITE_IDLE = 0.02  # a whole write starts when no read has parsed for this long (seconds) ...
WRITE_WAIT_MAX = 1.0  # ... or this long after it was asked for, whichever comes first
_busy = [0, 0.0]  # reads parsing now; when the last one ended (time.monotonic)
_busy_lock = threading.Lock()


@contextmanager
def _parsing() -> Iterator[None]:
    with _busy_lock:
        _busy[0] += 1
    try:
        yield
    finally:
        with _busy_lock:
            _busy[0] -= 1
            _busy[1] = time.monotonic()


class _Write:
    """A whole write of one cache file, run once: by the writer thread when reads are quiet, or by whoever waits
    for it first. ``before``: a write of the same file already running, which this one follows."""

    __slots__ = ("job", "before", "done", "taken", "asked")

    def __init__(self, job: Callable[[], None], before: _Write | None) -> None:
        self.job = job
        self.before = before
        self.done: Future[None] = Future()
        self.taken = False
        self.asked = time.monotonic()

    def take(self) -> bool:
        with _writes_lock:
            if self.taken:
                return False
            self.taken = True
            return True

    def run(self) -> None:
        try:
            if self.before is not None:
                self.before.wait()
            self.job()
        finally:
            self.before = None
            self.done.set_result(None)

    def wait(self) -> None:
        if self.take():
            self.run()
        else:
            self.done.result()

    def in_background(self) -> None:
        """On the writer thread: once reads are quiet (at most ``WRITE_WAIT_MAX`` after it was asked for)."""
        while not self.taken:
            now = time.monotonic()
            with _busy_lock:
                active, last = _busy
            if now - self.asked >= WRITE_WAIT_MAX or not active and now - last >= WRITE_IDLE:
                break
            time.sleep(WRITE_IDLE)
        if self.take():
            self.run()


_writes: dict[str, _Write] = {}  # cache file -> its whole write, asked for and not done
_writes_lock = threading.Lock()
_writer: list[ThreadPoolExecutor] = []
_held: list[_Write] = []  # asked for within ``_writes_after``: given to the writer thread when it ends
_holders = [0]  # ``_writes_after`` blocks open (in any thread)


def _in_background(file: os.PathLike[str], job: Callable[[], None]) -> None:
    key = os.fspath(file)
    with _writes_lock:
        prev = _writes.get(key)
        if prev is not None and not prev.taken:  # a write of the entry not started yet: this one replaces it
            prev.job = job
            return
        w = _writes[key] = _Write(job, prev)
        held = _holders[0] > 0
        if held:
            _held.append(w)
    w.done.add_done_callback(lambda f: _done(key, w))
    if not held:
        _submit(w)


def _submit(w: _Write) -> None:
    with _writes_lock:
        if not _writer:
            _writer.append(ThreadPoolExecutor(1, thread_name_prefix="ml-dash-cache-write"))
        try:
            _writer[0].submit(w.in_background)
            return
        except RuntimeError:  # no new threads (interpreter shutting down): write it now
            pass
    w.wait()


def _done(key: str, w: _Write) -> None:
    with _writes_lock:
        if _writes.get(key) is w:
            del _writes[key]


@contextmanager
def _writes_after() -> Iterator[None]:
    """Within it (in any thread), whole cache writes are held back; they go to the writer thread when the last
    such block ends."""
    with _writes_lock:
        _holders[0] += 1
    try:
        yield
    finally:
        with _writes_lock:
            _holders[0] -= 1
            held = list(_held) if not _holders[0] else []
            if held:
                _held.clear()
        for w in held:
            _submit(w)


def _wait(file: os.PathLike[str]) -> None:
    with _writes_lock:
        w = _writes.get(os.fspath(file))
    if w is not None:
        w.wait()


def flush() -> None:
    """Finish the disk cache writes this process asked for (those not started yet on this thread, now)."""
    with _writes_lock:
        pending = list(_writes.values())
    for w in pending:
        w.wait()


def _forget_writer() -> None:  # a forked child has none of the parent's threads
    global _writes_lock, _busy_lock
    _writes_lock = threading.Lock()
    _busy_lock = threading.Lock()
    _writer.clear()
    _writes.clear()
    _held.clear()
    _holders[0] = 0
    _busy[0] = 0


os.register_at_fork(after_in_child=_forget_writer)


def _write_all(fd: int, parts: list[bytes | memoryview], pos: int) -> None:
    """Write the parts at ``pos`` with one system call (the columns straight from their arrays); the rest of a
    short write after it."""
    total = sum(len(p) for p in parts)
    done = os.pwritev(fd, parts, pos) if len(parts) <= 1000 else 0  # (IOV_MAX is 1024 on Linux)
    if done < total:
        os.pwrite(fd, b"".join(bytes(p) for p in parts)[done:], pos + done)


class BlockStore(Protocol):
    """Where `read_numbered` keeps the columns of complete, aligned ranges of ``size`` lines (a table beside the
    lines): a reader takes the stored ranges instead of parsing them, and stores the ranges it had to parse."""

    size: int

    def load(self, start: int, stop: int) -> list[tuple[int, Batch]]:
        """The stored ranges from line ``start`` (a multiple of ``size``) up to ``stop``, in order: (first line,
        its columns); it may stop at the first range not stored."""

    def save(self, ranges: list[tuple[int, Batch]]) -> None:
        """Keep these ranges' columns (never raises: the store is a cache)."""


def read_numbered(key: str, kind: str, total: int, fetch: Callable[[int, int], bytes], *,
                  page: int = 200_000, blocks: BlockStore | None = None) -> Snapshot:
    """The columns of a stream kept elsewhere as numbered lines that are only ever appended (a database table:
    line ``i`` never changes once it exists). ``total``: how many lines there are now; ``fetch(start, stop)``: the
    lines ``start..stop-1`` as bytes, each ending with a newline. Kept in memory under ``key`` (with the other
    streams' columns), so a read after an append fetches and parses only the new lines. The next range is fetched
    while the current one is parsed. With ``blocks``, complete ranges of ``blocks.size`` lines come from there
    when stored, and the ones parsed here are stored for the next reader (in this process or another)."""
    k = "numbered\0" + key
    with _key_lock(k):
        with _mem_lock:
            state = _mem.get(k)
        if state is None or state.offset > total:  # never seen, or the stream was dropped and started over
            state = StreamColumns(kind)
        ranges: list[tuple[int, int, Batch | None]] = []  # (start, stop, stored columns or None: parse)
        size = blocks.size if blocks is not None else 0
        if blocks is None:
            ranges = [(s, min(total, s + page), None) for s in range(state.offset, total, page)]
        else:
            whole = total // size * size
            at = -(-state.offset // size) * size  # the end of a range this process read before it was complete
            if state.offset < at:
                ranges.append((state.offset, min(at, total), None))
            at = max(at, state.offset)
            stored = dict(blocks.load(at, whole)) if at < whole else {}
            ranges += [(s, s + size, stored.get(s)) for s in range(at, whole, size)]
            if max(at, whole) < total:
                ranges.append((max(at, whole), total, None))
        if not ranges:
            _remember(k, state)
            return Snapshot(state)
        state.reserve(state.n + total - state.offset)
        parsed: list[tuple[int, Batch]] = []
        for start, stop, data in _fetched(ranges, fetch):
            if isinstance(data, Batch):
                state.append(data)
                state.offset = stop
                continue
            b = _append_lines(state, data, kind, start, stop)
            if size and stop - start == size and start % size == 0:
                parsed.append((start, b))
        _remember(k, state)
        if parsed and blocks is not None:
            blocks.save(parsed)
        return Snapshot(state)


def _fetched(ranges: list[tuple[int, int, Batch | None]], fetch: Callable[[int, int], bytes]
             ) -> Iterator[tuple[int, int, Batch | bytes]]:
    """The ranges in order, each with its stored columns or its fetched lines; the next lines to fetch are
    fetched on a thread while the caller parses the current ones."""
    todo = [(s, e) for s, e, b in ranges if b is None]
    if len(todo) <= 1:
        for s, e, b in ranges:
            yield s, e, b if b is not None else fetch(s, e)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="ml-dash-fetch") as pool:
        ahead = pool.submit(fetch, *todo[0])
        i = 0
        for s, e, b in ranges:
            if b is not None:
                yield s, e, b
                continue
            data = ahead.result()
            i += 1
            if i < len(todo):
                ahead = pool.submit(fetch, *todo[i])
            yield s, e, data


def _append_lines(state: StreamColumns, data: bytes, kind: str, start: int, stop: int) -> Batch:
    b = parse(data, kind, state.templates)
    if b.n + b.skipped != stop - start:
        raise ValueError(f"expected {stop - start} {kind} lines from line {start}, got {b.n + b.skipped}")
    state.append(b)
    state.offset = stop
    return b
