"""The PostgreSQL engine's column blocks: the columns of each complete range of `BLOCK` rows of a stream, parsed
once and kept in the database (``stream_blocks``), so that a read of a long stream, by any server process and
after a restart, fetches a few binary values instead of copying out and parsing every row.

A stream's rows are numbered gap-free and never change once stored, so a block, once complete, never changes
either: appends only add blocks, and a block is never invalidated. A block is the `columns.Batch` that parsing its
rows gives (the same parser as a `.dash` file, so the same columns as the folder engine), written as a JSON header
(rows, skipped lines, the numeric field names, the other values by row) then one little-endian float64 array per
numeric field. Blocks are written by the read that parsed them and, when an append completes a block, by a
background thread of the process that appended (`Builder`), so a first read finds them. Rows past the last
complete block are parsed at each read (in memory, only the new ones). ``VERSION`` is part of the key: a
server that parses differently neither reads nor overwrites another version's blocks.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np

from ..colcache import VERSION as COLUMNS_VERSION
from ..columns import Batch, parse

BLOCK = 8192  # rows per block
VERSION = COLUMNS_VERSION * 100 + 1  # the parser's version and this format's; changes with BLOCK too

_LOAD = ("SELECT first, data FROM stream_blocks WHERE stream_id = %s AND version = %s AND first >= %s AND first < %s "
         "ORDER BY first")
_SAVE = ("INSERT INTO stream_blocks (stream_id, version, first, data) VALUES (%s, %s, %s, %s) "
         "ON CONFLICT DO NOTHING")


def pack_batch(b: Batch) -> bytes:
    """One block's columns as bytes (`unpack_batch` reads them back exactly: every float64 bit, and the other
    values through JSON, which keeps NaN, infinities, big integers and lone surrogates)."""
    names = list(b.num)
    text = [[f, [[r, v] for r, v in tv.items()]] for f, tv in b.text.items()]
    head = json.dumps({"n": b.n, "skipped": b.skipped, "num": names, "text": text}, allow_nan=True,
                      separators=(",", ":")).encode()
    arrays = []
    for f in names:
        a = np.ascontiguousarray(b.num[f], dtype="<f8")
        if len(a) != b.n:
            raise ValueError(f"column {f!r} holds {len(a)} values for {b.n} rows")
        arrays.append(a.tobytes())
    return len(head).to_bytes(4, "little") + head + b"".join(arrays)


def unpack_batch(data: bytes) -> Batch:
    hl = int.from_bytes(data[:4], "little")
    head = json.loads(data[4 : 4 + hl])
    n = int(head["n"])
    pos = 4 + hl
    num = {}
    for f in head["num"]:
        num[f] = np.frombuffer(data, dtype="<f8", count=n, offset=pos)
        pos += 8 * n
    if pos != len(data):
        raise ValueError(f"a column block of {len(data)} bytes, {pos} expected")
    text = {f: {int(r): v for r, v in pairs} for f, pairs in head["text"]}
    return Batch(n, num, text, int(head["skipped"]))


class StreamBlocks:
    """The stored blocks of one stream (a `colcache.BlockStore`), over a `pgread.Reads`."""

    size = BLOCK

    def __init__(self, reads: Any, sid: int) -> None:
        self.reads = reads
        self.sid = sid

    def load(self, start: int, stop: int) -> list[tuple[int, Batch]]:
        with self.reads.pg._tx(binary=True) as cur:
            rows = cur.execute(_LOAD, (self.sid, VERSION, start, stop)).fetchall()
        out = []
        for first, data in rows:
            try:
                out.append((int(first), unpack_batch(bytes(data))))
            except (ValueError, KeyError, TypeError):
                continue  # unreadable: parsed again (and not overwritten: the next version's key differs)
        return out

    def save(self, ranges: list[tuple[int, Batch]]) -> None:
        save(self.reads.pg, self.sid, ranges)


def save(pg: Any, sid: int, ranges: list[tuple[int, Batch]]) -> None:
    """Store blocks (a block another process stored meanwhile is kept: it holds the same columns). Never raises:
    the blocks are a cache, and a failed write leaves the rows to be parsed again."""
    try:
        with pg._tx(binary=True) as cur:
            cur.executemany(_SAVE, [(sid, VERSION, first, pack_batch(b)) for first, b in ranges])
    except Exception:  # noqa: BLE001  (a lost connection, a stream deleted meanwhile: nothing to keep)
        pass


def build(reads: Any, sid: int, kind: str, stop: threading.Event | None = None) -> int:
    """Parse and store the complete blocks of stream ``sid`` that are not stored yet, one transaction each (a
    process stopped midway keeps the ones done). The number built."""
    with reads.pg._tx() as cur:
        row = cur.execute("SELECT next FROM streams WHERE id = %s", (sid,)).fetchone()
        if row is None:
            return 0
        have = {int(r[0]) for r in cur.execute("SELECT first FROM stream_blocks WHERE stream_id = %s AND version = %s",
                                               (sid, VERSION)).fetchall()}
    templates: list[Any] = []
    built = 0
    for first in range(0, int(row[0]) // BLOCK * BLOCK, BLOCK):
        if first in have:
            continue
        if stop is not None and stop.is_set():
            break
        b = parse(reads.lines(sid, first, first + BLOCK), kind, templates)
        if b.n + b.skipped != BLOCK:
            raise ValueError(f"expected {BLOCK} {kind} lines from line {first} of stream {sid}, got {b.n + b.skipped}")
        save(reads.pg, sid, [(first, b)])
        built += 1
    return built


class Builder:
    """One thread per process that builds the blocks appends have just completed, off the request's path (a
    request that completes a block returns as soon as its rows are committed)."""

    def __init__(self, reads: Any) -> None:
        self.reads = reads
        self._due: dict[int, str] = {}
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = False

    def due(self, sid: int, kind: str) -> None:
        with self._cv:
            if self._stop.is_set():
                return
            self._due[sid] = kind
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ml-dash-blocks", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._due and not self._stop.is_set():
                    self._cv.wait()
                if self._stop.is_set():
                    return
                sid, kind = self._due.popitem()
                self._busy = True
            try:
                build(self.reads, sid, kind, self._stop)
            except Exception:  # noqa: BLE001  (the database went away: a later append or read builds them)
                pass
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is due or being built (tests, benches); False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._due and not self._busy, timeout)

    def close(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stop.set()
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
