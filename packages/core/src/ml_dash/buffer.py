"""The background buffer: queues filled by the training thread, one worker thread that writes the journal.

``from ml_dash.buffer import BufferConfig`` is the public part; `Buffer` is the engine behind an Experiment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import cycle, groupby, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

from . import console
from .config import BufferConfig
from .jsonio import dumpb, iso
from .layout import EXPERIMENT_JSON, META, STAGED_SOURCE, ExperimentDir, unstage
from .ring import (
    LOG,
    METRIC_NONE,
    SPILL_EVERY,
    TRACK,
    Ring,
    encode_group,
    folder_of,
    journal_items,
    line_head,
    split_items,
)
from .values import Deferred, resolve_row

__all__ = ["BufferConfig", "Buffer"]

HEARTBEAT_EVERY = 5.0
FSYNC_EVERY = 1.0
SLICE_BYTES = 32 << 10  # ring bytes the worker turns into journal lines per slice (~500 rows, ~0.2 ms of GIL)
SLICE_ITEMS = 1_000  # queued records per kind written per slice
# far behind (the ring more than a quarter full, or records queued in memory), slices grow: each slice costs a few
# system calls, and each of those hands the GIL to a busy training thread for a whole switch interval; but a
# slice holds the GIL throughout, so it stays well under a millisecond (a stall of the training loop otherwise)
SLICE_BYTES_BEHIND = 128 << 10
SLICE_ITEMS_BEHIND = 2_000
WAKE_BYTES = 1 << 20  # the training thread wakes the worker each time this much more is in the ring
MAX_SLICES = 64  # slices in one pass of the worker
YIELD_S = 0.0003  # between slices the worker sleeps this long, so the training thread takes the GIL back
BUSY_S = 0.001  # getting the GIL back took longer than this: the training thread is running pure Python flat out
DEFER_MAX = 0.2  # then the worker leaves the ring alone up to write_interval, and never longer than this


_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", None)  # Linux


def _waits() -> int:
    """How often this thread has blocked so far (its voluntary context switches; the call keeps the GIL). It
    grows when a system call or a wait for the GIL let another thread run; 0 where it cannot be read."""
    if _RUSAGE_THREAD is None:
        return 0
    return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw


class PartialWrite(Exception):
    """Some streams of a batch were written; ``items`` (in order) were not, because of ``error``."""

    def __init__(self, items: list[Any], error: BaseException) -> None:
        super().__init__(str(error))
        self.items = items
        self.error = error


class _FlushWaiter:
    """One flush() call waiting for the worker; the worker sets ``ok`` (everything written) before ``done``."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class Buffer:
    """Pending records of one experiment and the worker that writes them to its `.dash` folder.

    The worker's states (``state()`` names the current one):

    ============  ==========================================================  =====================================
    state         what the worker does                                        entered by / left by
    ============  ==========================================================  =====================================
    ``idle``      not started: nothing written in the background              ``Buffer()`` / ``start()``
    ``running``   every ``write_interval`` (or at once on `kick`/`wake`/a     ``start()`` / ``stop()``
                  flush waiter) takes what the training thread spilled into
                  the ring and the queues and writes it, in slices that let
                  the training thread run (no pauses while someone waits);
                  every ``flush_interval`` and for flush waiters also
                  publishes files and fsyncs; heartbeat every
                  ``HEARTBEAT_EVERY``
    ``stopping``  writes until nothing is pending, then exits                 ``stop()`` / the thread ends
    ``stopped``   the thread has ended after writing everything               ``stop()`` returned True
    ``direct``    no thread: each producer call writes through (buffering     ``buffer_enabled=False``, or a forked
                  disabled, or a forked child, whose parent owns the worker)   child (``after_fork_in_child``)
    ============  ==========================================================  =====================================

    A write failure never changes the state: the records are kept (``_retry``) and retried on the next pass.
    The producer side is not a state: the training thread appends to the tail of the stream (`tail_for`) and,
    every `SPILL_EVERY` records of all streams together (when ``next(ticks)`` is true), `spill` moves the tails
    into the ring (or onto the queues); `kick` wakes the worker early.
    """

    def __init__(self, jdir: ExperimentDir, config: BufferConfig) -> None:
        self.jdir = jdir
        self.config = config
        self.logs: deque[tuple[float, str, str, Any]] = deque()
        self.metrics: deque[tuple[str | None, dict[str, Any]]] = deque()
        self.tracks: deque[tuple[str, dict[str, Any]]] = deque()
        self.params: deque[dict[str, Any]] = deque()
        self.files: deque[tuple[Path, dict[str, Any]]] = deque()
        # records whose write failed, kept in order per kind and retried (bounded by max_pending_items)
        self._retry: dict[str, list[Any]] = {"logs": [], "metrics": [], "tracks": [], "params": []}
        self.taken = {"logs": 0, "metrics": 0, "tracks": 0, "files": 0}  # popped off the queues so far
        self.written = {"logs": 0, "metrics": 0, "tracks": 0, "files": 0}
        self.lost = {"logs": 0, "metrics": 0, "tracks": 0, "files": 0}
        # records the ring still held, never handed to the writer, when it was closed (the store kept failing
        # until close_timeout): its file stays, and the run's next open or read writes them (`ring.recover`)
        self.kept: dict[str, int] = {}
        self.kept_path: Path | None = None
        self.sync_mode = not config.buffer_enabled
        # per stream, keyed (ring code, name): the training thread appends records (metric rows and track
        # entries as dicts, log lines as (ts, level, message[, metadata])); every `SPILL_EVERY` records in all
        # (``next(ticks)`` is true) each tail goes into the ring as one line (or, when there is no ring or it is
        # full, onto the queues above, which then take every record until the worker empties them: so
        # everything still in the ring is older than everything queued)
        self.tails: dict[tuple[int, str], list[Any]] = {}
        # the same tails, in a list `spill` walks, each with its ring line's head (`ring.line_head`)
        self._tail_list: list[tuple[int, str, list[Any], bytes]] = []
        self.log_tail = self.tail_for(LOG, "")
        self.ticks: Any = repeat(True) if self.sync_mode else cycle([False] * (SPILL_EVERY - 1) + [True])
        jdir.defer_meta = not self.sync_mode  # the worker rewrites metadata.json once per pass
        self.ring: Ring | None = None
        self._ring_lock = threading.Lock()
        self._wake_at = WAKE_BYTES
        self._ring_ranges: list[tuple[int, int]] = []  # taken from the ring, not yet all in the journal
        self._hurry = False
        self._busy_since: float | None = None
        self._waits_seen = 0  # `_waits()` at the worker's last look
        self._woken_at = 0.0
        # a producer wakes the worker early when a queue holds `trigger` records (besides every write_interval)
        self._step = max(1, min(1_000, config.max_pending_items // 4))
        self.trigger = 1 if self.sync_mode else self._step
        self._wake = threading.Event()
        self._io_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._stop = False
        self._flush_waiters: list[_FlushWaiter] = []
        self._published_log: list[dict[str, Any]] | None = None  # collects published entries while close waits
        self._pool: ThreadPoolExecutor | None = None
        self._publishing: list[tuple[Future[Path], Path, dict[str, Any]]] = []
        self._last_fsync = 0.0
        self._last_heartbeat = time.monotonic()
        self._last_flush = time.monotonic()
        self._error: str | None = None
        self._warned: set[str] = set()
        self._warned_pressure = False
        self.progress = 0  # bumps on every successful write: close waits while this moves
        self.listeners: list[Callable[[], None]] = []  # replicators: told after each write

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.sync_mode or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop = False
        if self.ring is None:
            try:
                self.ring = Ring(folder_of(self.jdir.private))
            except (OSError, ValueError) as e:  # no room or no shared mappings here: records wait in memory
                self._note_error("spill ring", e)
        self._thread = threading.Thread(target=self._run, name=f"ml-dash-writer[{self.jdir.prefix}]", daemon=True)
        self._thread.start()

    def after_fork_in_child(self) -> None:
        """A forked child: forget the parent's pending data and worker; write through from now on."""
        for q in (self.logs, self.metrics, self.tracks, self.params, self.files):
            q.clear()
        for v in self._retry.values():
            v.clear()
        for t in list(self.tails.values()):
            t.clear()
        if self.ring is not None:
            self.ring.forget()
            self.ring = None
        self._ring_lock = threading.Lock()
        self._ring_ranges = []
        self.ticks = repeat(True)
        self.jdir.defer_meta = False
        self._io_lock = threading.RLock()
        self._wake = threading.Event()
        self._thread = None
        self._pool = None
        self._publishing = []
        self._flush_waiters = []
        self.sync_mode = True
        self.trigger = 1
        self.listeners = []
        self.jdir.after_fork()
        self._pid = os.getpid()
        for k in self.taken:
            self.taken[k] = self.written[k] = 0

    @property
    def accepted(self) -> dict[str, int]:
        """Records accepted so far, by kind (counted off the hot path: taken off the queues plus still queued,
        in the tail or in the ring)."""
        self.spill()
        ring = {"metrics": 0, "tracks": 0, "logs": 0}
        with self._ring_lock:
            if self.ring is not None:
                m, t, g = split_items(self.ring.peek())
                ring = {"metrics": len(m), "tracks": len(t), "logs": len(g)}
        return {"logs": self.taken["logs"] + len(self.logs) + ring["logs"],
                "metrics": self.taken["metrics"] + len(self.metrics) + ring["metrics"],
                "tracks": self.taken["tracks"] + len(self.tracks) + ring["tracks"], "files": self.taken["files"]}

    def unsaved(self) -> dict[str, int]:
        """Records that are not in the journal (still queued, failed and kept for retry, or dropped), by kind."""
        out = {}
        for kind, q in (("logs", self.logs), ("metrics", self.metrics), ("tracks", self.tracks)):
            n = len(q) + len(self._retry[kind]) + self.lost[kind] + self.kept.get(kind, 0)
            if n:
                out[kind] = n
        files = len(self.files) + len(self._publishing) + self.lost["files"]
        if files:
            out["files"] = files
        if self._retry["params"] or self.params:
            out["params"] = len(self._retry["params"]) + len(self.params)
        return out

    def pending(self) -> int:
        """Records held in memory, plus one while the ring holds records the worker has not taken yet."""
        ring = self.ring
        return (len(self.logs) + len(self.metrics) + len(self.tracks) + len(self.params) + len(self.files)
                + sum(len(v) for v in self._retry.values()) + len(self._publishing)
                + sum(len(t) for t in list(self.tails.values()))
                + (1 if ring is not None and ring.backlog() else 0))

    # ---- the spill (training thread, every `SPILL_EVERY` records; the worker spills what is left) --------------
    def tail_for(self, code: int, name: str) -> list[Any]:
        """The tail of one stream (the producer keeps a reference to it and appends to it)."""
        t = self.tails.get((code, name))
        if t is None:
            t = self.tails.setdefault((code, name), [])
            if not any(x[2] is t for x in self._tail_list):
                # appended, never rebuilt: `spill` may be walking it
                self._tail_list.append((code, name, t, line_head(code, name)))
        return t

    def spill(self, wait: bool = True) -> None:
        """Move every stream's tail into the ring (memory the kernel keeps if the process dies), one line per
        stream, else onto the queues. ``wait=False`` (the training thread's tick): when the worker holds the ring
        for a moment, leave the tails for the next tick rather than wait (waiting for a lock hands the GIL to
        the worker, and getting it back can take the rest of the worker's slice)."""
        lock = self._ring_lock
        if not lock.acquire(wait or self.sync_mode):
            return
        wake = False
        try:
            ring = self.ring
            for code, name, t, head in self._tail_list:
                if not t:
                    continue
                n = len(t)
                items = t[:n]
                del t[:n]  # not clear(): another producer thread may have appended meanwhile
                # the common case inline (this runs every `SPILL_EVERY` calls on the training thread: each
                # function call and attribute lookup here is a measurable part of a row's cost)
                if ring is not None and not (self.metrics or self.logs or self.tracks):
                    line = encode_group(code, name, items, head)
                    if line is not None:
                        m = ring.maps[ring.cur]
                        try:
                            m.write(line)
                        except ValueError:  # this half is full: the next one, if the writer freed it
                            if not ring.put(line):
                                wake |= self._queue(code, name, items)
                                continue
                            m = ring.maps[ring.cur]
                        pos = m.tell()
                        if pos >= self._wake_at or pos < self._wake_at - WAKE_BYTES:
                            self._wake_at = pos + WAKE_BYTES
                            self._woken_at = time.perf_counter()
                            self._wake.set()  # a hint: the worker decides when to run (see `_yield`)
                        continue
                # no ring, ring full, or a device value: queued in memory, in order
                wake |= self._queue(code, name, items)
        finally:
            lock.release()
        if wake:
            self.kick()

    def _queue(self, code: int, name: str, items: list[Any]) -> bool:
        """Under ``_ring_lock``: one stream's records onto the queues. True when the queues reached the size that
        wakes the worker."""
        if code == LOG:
            self.logs.extend((p[0], p[1], p[2], p[3] if len(p) > 3 else None) for p in items)
            q: deque[Any] = self.logs
        elif code == TRACK:
            self.tracks.extend((name, e) for e in items)
            q = self.tracks
        else:
            key = None if code == METRIC_NONE else name
            self.metrics.extend((key, d) for d in items)
            q = self.metrics
        return len(q) >= self.trigger

    def state(self) -> str:
        """The worker's state, as in the table of the class docstring."""
        if self.sync_mode:
            return "direct"
        t = self._thread
        if t is None or not t.is_alive():
            return "stopped" if self._stop else "idle"
        return "stopping" if self._stop else "running"

    # ---- producer side (called from the training loop) ------------------------------------------------------
    def kick(self) -> None:
        """Called by a producer when a queue reached the trigger size."""
        if self.sync_mode:
            self.drain(final=False)
            return
        self._wake.set()
        if threading.current_thread() is self._thread:
            return  # the writer's own spill (`_drain_slice`): it is at work, and must not wait for itself
        time.sleep(0)  # let the writer take the GIL now rather than after the next switch interval (5 ms)
        limit = self.config.max_pending_items
        n = self.pending()
        if n >= limit:
            self._backpressure(limit)
        self.trigger = n + self._step  # no further wake-up calls until another step of records arrived

    def _backpressure(self, limit: int) -> None:
        if not self._warned_pressure:
            self._warned_pressure = True
            console.warn(f"{self.pending():,} records are waiting to be written for {self.jdir.prefix} "
                         f"(limit max_pending_items={limit:,}); slowing the training loop until they are written")
        deadline = time.monotonic() + self.config.close_timeout
        last = self.progress
        while self.pending() >= limit:
            self._wake.set()
            time.sleep(0.001)
            if self.progress != last:
                last = self.progress
                deadline = time.monotonic() + self.config.close_timeout
            elif self._thread is None or not self._thread.is_alive() or \
                    (time.monotonic() > deadline and self._error is not None):
                # shed only while writes are failing (or the worker is gone); a slow but healthy disk only
                # slows the producer, it never loses records
                self._shed(limit)
                return

    def _shed(self, limit: int) -> None:
        """Last resort while the disk is failing and memory is full: drop the newest, counted and reported."""
        with self._io_lock:
            for kind, q in (("metrics", self.metrics), ("logs", self.logs), ("tracks", self.tracks)):
                while self.pending() >= limit and q:
                    q.pop()
                    self.lost[kind] += 1
                    self.taken[kind] += 1
        console.warn(f"could not write to {self.jdir.path} for {self.config.close_timeout:.0f}s and "
                     f"{limit:,} records are held in memory: dropping new records "
                     f"(lost so far: {self.lost_text()}); last error: {self._error}")

    # ---- what the end-of-run report needs ------------------------------------------------------------------
    def last_error(self) -> str | None:
        """The last write error, while writes are failing (None once a write succeeds again)."""
        return self._error

    def lost_count(self) -> int:
        """Records dropped because the disk kept failing while memory was full (never on a healthy disk)."""
        return sum(self.lost.values())

    def lost_text(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in self.lost.items() if n) or "none"

    def wake(self) -> None:
        """Have the worker write soon (a producer that does not wait for the trigger size)."""
        if self.sync_mode:
            self.kick()
        else:
            self._wake.set()

    def publish_staged_files(self, announce: Callable[[int], None]) -> tuple[int, list[dict[str, Any]]]:
        """Publish every staged file now. ``announce(n)`` is called first when there are ``n`` > 0 to publish;
        returns ``n`` and the entries published meanwhile (by this call or the worker), in order."""
        with self._io_lock:
            self._published_log = []
            n = len(self.files) + len(self._publishing)
        try:
            if not n:
                return 0, []
            announce(n)
            self.wait_files(None)
            return n, self._published_log[:n]
        finally:
            self._published_log = None

    # ---- worker ------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        cfg = self.config
        ring = self.ring
        if ring is not None:
            try:
                ring.populate()
            except ValueError:  # the run closed meanwhile (its ring is unmapped)
                pass
            except Exception as e:  # pragma: no cover - a slower first lap is all this costs
                self._note_error("spill ring", e)
        while True:
            self._wake.wait(cfg.write_interval)
            self._wake.clear()
            if os.getpid() != self._pid:  # pragma: no cover - forked child copies never run this thread
                return
            try:
                stop = self._stop
                waiters, self._flush_waiters = self._flush_waiters, []
                now = time.monotonic()
                due = bool(waiters) or stop or now - self._last_flush >= cfg.flush_interval \
                    or len(self.files) >= cfg.file_batch_size
                self.trigger = self._step
                self._hurry = bool(waiters) or stop  # someone waits for this pass: no pauses between slices
                self.drain(final=due, fsync=due)
                if due:
                    self._last_flush = now
                if waiters:
                    self.wait_files(None)
                    self.drain(final=True, fsync=True)
                    ok = not any(self._retry.values()) and not self.files
                    for w in waiters:
                        w.ok = ok
                        w.done.set()
                if now - self._last_heartbeat >= HEARTBEAT_EVERY and not stop:
                    self._last_heartbeat = now
                    try:
                        self.jdir.update_info(heartbeatAt=iso(time.time()))
                    except OSError as e:
                        self._note_error(EXPERIMENT_JSON, e)
                if stop and self.pending() == 0:
                    return
            except Exception as e:  # the worker must never die
                self._note_error("worker", e)
                time.sleep(0.05)

    def _note_error(self, what: str, e: BaseException) -> None:
        msg = f"{type(e).__name__}: {e}"
        self._error = msg
        key = f"{what}:{type(e).__name__}:{getattr(e, 'errno', '')}"
        if key not in self._warned:
            self._warned.add(key)
            console.warn(f"could not write {what} of {self.jdir.prefix} ({msg}); keeping the data in memory "
                         f"and retrying (pending: {self.pending():,})")

    def drain(self, final: bool = False, fsync: bool = False) -> None:
        """Write everything queued so far. ``final`` also publishes files; ``fsync`` makes it durable. The work
        goes in slices; between slices the worker thread lets the training thread run."""
        wrote = False
        slices = 0
        if self._woken_at and threading.current_thread() is self._thread and not self._hurry:
            self._back_off(time.perf_counter() - self._woken_at)  # how long the wake-up waited for the GIL
        self._woken_at = 0.0
        while True:
            if slices:
                self._yield()
            slices += 1
            more, w = self._drain_slice()
            wrote |= w
            if not more:
                break
            if slices >= MAX_SLICES and not self._hurry and threading.current_thread() is self._thread:
                self._wake.set()  # the rest in the next pass, after the heartbeat, fsync and files got a turn
                break
        with self._io_lock:
            if wrote:
                try:
                    self.jdir.write_metas()
                except OSError as e:
                    self._note_error(META, e)
            self._drain_kind("params", self.params, self._write_params)
            if final or self.sync_mode:
                self._start_files()
            self._finish_files(block=self.sync_mode)
            now = time.monotonic()
            if fsync or self.sync_mode or (wrote and now - self._last_fsync >= FSYNC_EVERY):
                try:
                    self.jdir.fsync()
                    self._last_fsync = now
                except OSError as e:
                    self._note_error("fsync", e)
        if wrote:
            for listener in self.listeners:
                listener()

    def _has_work(self) -> bool:
        ring = self.ring
        return bool(self.metrics or self.tracks or self.logs or any(list(self.tails.values()))
                    or (ring is not None and ring.backlog()))

    def _yield(self) -> None:
        """Between slices: let the training thread run. When it is busy (it kept the GIL until the interpreter's
        switch interval took it away), leave the ring to itself for a while: what is in the ring is already safe
        from a kill, and every slice the worker runs now is a stall of the training loop. It waits at most
        write_interval (and DEFER_MAX) in all, and not once the ring is more than half full, records queue in
        memory or someone waits on a flush."""
        if self._hurry or self.sync_mode or threading.current_thread() is not self._thread:
            return
        ring = self.ring
        if (ring is not None and ring.backlog() >= ring.half // 4) or self.metrics or self.logs or self.tracks:
            return  # far behind (or spilling into memory): keep going; the switch interval shares the GIL
        if self._busy_since is not None and _RUSAGE_THREAD is not None:
            waits = _waits()
            if waits != self._waits_seen:
                # the slice's write let the busy training thread run, and this thread came back in through the
                # interpreter's switch interval: each such return is a stall of one call, so use this one for
                # the next slice rather than sleep and cost the loop another (one entry per slice, not three)
                self._waits_seen = waits
                return
        t = time.perf_counter()
        time.sleep(YIELD_S)
        self._back_off(time.perf_counter() - t - YIELD_S)
        self._waits_seen = _waits()

    def _back_off(self, late: float) -> None:
        if late < BUSY_S:
            self._busy_since = None
            return
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        ring = self.ring
        limit = min(self.config.write_interval, DEFER_MAX)
        # one wait, not a poll: each wake-up takes the GIL from the busy training thread (a stall of one call).
        # What ends it early sets `_wake`: a flush, stop, records queued in memory, or each WAKE_BYTES of ring
        while ring is not None and ring.backlog() < ring.half and not self._flush_waiters and not self._stop \
                and not (self.metrics or self.logs or self.tracks):
            left = limit - (time.monotonic() - self._busy_since)
            if left <= 0:
                break
            self._wake.clear()
            if self._flush_waiters or self._stop:  # (set just before the clear)
                break
            self._wake.wait(left)

    def _drain_slice(self) -> tuple[bool, bool]:
        """One slice: a piece of the ring (or, once the ring is all taken, of the queues) into the journal.
        Returns (more to do, wrote something)."""
        self.spill()
        with self._io_lock:
            ring = self.ring
            fresh: dict[str, list[Any]] = {"metrics": [], "tracks": [], "logs": []}
            more = False
            if any(self._retry[k] for k in fresh):  # failing writes: retry them alone; the rest waits
                wrote = False
                wrote |= self._drain_kind("logs", [], self.jdir.append_logs)
                wrote |= self._drain_kind("metrics", [], self._write_metrics)
                wrote |= self._drain_kind("tracks", [], self._write_tracks)
                return not any(self._retry[k] for k in fresh) and self._has_work(), wrote
            with self._ring_lock:
                backlog = ring.backlog() if ring is not None else 0
                # far behind, or the training thread busy (each slice is a stall of one call: fewer, larger)
                behind = backlog >= (ring.half // 4 if ring is not None else 0) or self._busy_since is not None or \
                    len(self.metrics) + len(self.tracks) + len(self.logs) > SLICE_ITEMS
                if ring is not None and backlog:
                    chunk, ranges = ring.take(SLICE_BYTES_BEHIND if behind else SLICE_BYTES)
                    self._ring_ranges.extend(ranges)
                    more = bool(ring.backlog() or self.metrics or self.tracks or self.logs)
                else:
                    chunk = b""
                    for kind, q in (("metrics", self.metrics), ("tracks", self.tracks), ("logs", self.logs)):
                        n = min(len(q), SLICE_ITEMS_BEHIND if behind else SLICE_ITEMS)
                        fresh[kind] = [q.popleft() for _ in range(n)]
                        more |= bool(q)
            runs: list[tuple[str | None, list[bytes]]] = []
            track_runs: list[tuple[str, list[dict[str, Any]]]] = []
            if chunk:  # metric rows come as runs of journal-ready pieces, track entries as runs of parsed entries
                runs, track_runs, fresh["logs"] = journal_items(chunk)  # (see `ring.journal_items`)
            wrote = False
            wrote |= self._drain_kind("logs", fresh["logs"], self.jdir.append_logs)
            if runs:
                self.taken["metrics"] += _count_runs(runs)
                wrote |= self._write_kind("metrics", runs, self._write_metric_runs, _count_runs, _rows_of_runs)
            wrote |= self._drain_kind("metrics", fresh["metrics"], self._write_metrics)
            if track_runs:
                self.taken["tracks"] += _count_runs(track_runs)
                wrote |= self._write_kind("tracks", track_runs, self._write_track_runs, _count_runs, _rows_of_runs)
            wrote |= self._drain_kind("tracks", fresh["tracks"], self._write_tracks)
            if ring is not None and self._ring_ranges and not any(self._retry[k] for k in fresh):
                with self._ring_lock:
                    done = ring.commit(self._ring_ranges)
                    self._ring_ranges = []
                if done is not None:
                    try:
                        ring.zero(done)
                    except OSError as e:
                        self._note_error("spill ring", e)
                    else:
                        with self._ring_lock:
                            ring.free(done)
            return more, wrote

    def _drain_kind(self, kind: str, fresh: Any, write: Callable[[list[Any]], None]) -> bool:
        """Write the records waiting for retry, then ``fresh`` (a list, or for params the queue to empty). While
        a retry keeps failing, what came after it waits (the queue stays where max_pending_items bounds it)."""
        wrote = False
        retry = self._retry[kind]
        if retry:
            self._retry[kind] = []
            wrote = self._write_kind(kind, retry, write)
            if self._retry[kind]:
                return wrote
        if isinstance(fresh, deque):
            fresh = [fresh.popleft() for _ in range(len(fresh))]
        if not fresh:
            return wrote
        if kind != "params":
            self.taken[kind] += len(fresh)
        return self._write_kind(kind, fresh, write) or wrote

    def _write_kind(self, kind: str, items: list[Any], write: Callable[[list[Any]], None],
                    count: Callable[[list[Any]], int] = len,
                    rows_of: Callable[[list[Any]], list[Any]] | None = None) -> bool:
        """Write ``items``; on failure keep the records (``rows_of(items)``, one per record) for retry. ``count``
        gives the number of records in ``items``."""
        try:
            write(items)
        except PartialWrite as e:  # some streams were written, others failed: retry only the failed ones
            self._retry[kind] = e.items
            done = count(items) - len(e.items)
            self.written[kind] += done
            self._note_error(kind if kind != "metrics" else "metric rows", e.error)
            if done:
                self.progress += 1
            return done > 0
        except Exception as e:  # I/O, bad data, or a bug: the records are kept and retried, never dropped
            self._retry[kind] = items if rows_of is None else rows_of(items)
            self._note_error(kind if kind != "metrics" else "metric rows", e)
            return False
        if kind != "params":
            self.written[kind] += count(items)
        if self._error is not None and kind != "params":
            console.warn(f"writing {self.jdir.prefix} works again; {len(items)} delayed {kind} record(s) written")
            self._error = None
            self._warned.clear()
        self.progress += 1
        return True

    def _write_params(self, items: list[dict[str, Any]]) -> None:
        merged: dict[str, Any] = {}
        for d in items:
            resolve_row(d)  # device values in params are read here, on the worker thread
            merged.update(d)
        self.jdir.set_params(merged)

    def _write_metric_runs(self, runs: list[tuple[str | None, list[bytes]]]) -> None:
        """Metric rows from the ring: one run of pieces per stream (see `ring.journal_items`)."""
        _append_groups(runs, self.jdir.append_metric_pieces)

    def _write_metrics(self, items: list[tuple[str | None, Any]]) -> None:
        """Metric rows, each a dict (queued in memory) or the bytes of its JSON less the braces (from the ring),
        appended per stream in order; a stream that fails does not stop the others (PartialWrite)."""
        groups: dict[str | None, list[Any]] = {}
        for key, run in groupby(items, _key):
            g = groups.get(key)
            if g is None:
                groups[key] = g = []
            g.extend(map(_row, run))

        def append(key: str | None, rows: list[Any]) -> None:
            if set(map(type, rows)) != {bytes}:
                rows = [r if type(r) is bytes else _piece(r) for r in rows]
            self.jdir.append_metric_pieces(key, rows)

        _append_groups(groups.items(), append)

    def _write_tracks(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        _write_streams(items, self.jdir.append_tracks, True)

    def _write_track_runs(self, runs: list[tuple[str, list[dict[str, Any]]]]) -> None:
        """Track entries from the ring (parsed JSON: no device values), one run per ring line, appended per topic
        in order; a topic that fails does not stop the others (PartialWrite)."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for topic, entries in runs:
            g = groups.get(topic)
            if g is None:
                groups[topic] = list(entries)
            else:
                g.extend(entries)
        _append_groups(groups.items(), self.jdir.append_tracks)

    # ---- files ------------------------------------------------------------------------------------------------
    def _start_files(self) -> None:
        if not self.files:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.file_upload_workers, thread_name_prefix="ml-dash-files")
        while self.files:
            staged, entry = self.files.popleft()
            fut: Future[Path]
            try:
                fut = self._pool.submit(_prepare_file, staged, entry)
            except RuntimeError:  # at interpreter exit the pool refuses new work: do it here
                fut = Future()
                try:
                    fut.set_result(_prepare_file(staged, entry))
                except Exception as e:
                    fut.set_exception(e)
            self._publishing.append((fut, staged, entry))

    def _finish_files(self, block: bool = False) -> list[dict[str, Any]]:
        if not self._publishing:
            return []
        if block:
            ready = list(self._publishing)
        else:  # the finished prefix only: the index lists files in the order they were given
            ready = []
            for x in self._publishing:
                if not x[0].done():
                    break
                ready.append(x)
        if not ready:
            return []
        items: list[tuple[Path, dict[str, Any]]] = []
        failed: list[tuple[Path, dict[str, Any]]] = []
        for fut, staged, entry in ready:
            try:
                items.append((fut.result(), entry))
            except Exception as e:
                failed.append((staged, entry))
                self._note_error(f"file {entry['filename']}", e)
        try:
            published = self.jdir.publish_files(items)
        except OSError as e:
            self._note_error("files index", e)
            return []
        ids = {id(x) for x in ready}
        self._publishing = [x for x in self._publishing if id(x) not in ids]
        for staged, entry in failed:  # retried at the next flush
            self.files.append((staged, entry))
        for staged, _ in items:
            unstage(staged)
        self.written["files"] += len(published)
        if self._published_log is not None:
            self._published_log.extend(published)
        if published:
            self.progress += 1
        return published

    def wait_files(self, report: Callable[[dict[str, Any]], None] | None) -> None:
        """Publish all staged files now, calling ``report`` for each as it lands."""
        with self._io_lock:
            self._start_files()
            pending = list(self._publishing)
        for fut, _, _entry in pending:
            try:
                fut.result(timeout=self.config.close_timeout or None)
            except Exception:
                pass
        with self._io_lock:
            published = self._finish_files(block=True)
        if report:
            for e in published:
                report(e)

    # ---- flush / close ------------------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Write, publish and fsync everything accepted before the call. False if it timed out."""
        if self.sync_mode or self._thread is None or not self._thread.is_alive() or threading.current_thread() is self._thread:
            self.drain(final=True)
            self.wait_files(None)
            self.drain(final=True, fsync=True)
            return not any(self._retry.values()) and not self.files
        waiter = _FlushWaiter()
        self._flush_waiters.append(waiter)
        self._wake.set()
        return self._wait_progress(waiter.done.wait, timeout) and waiter.ok

    def _wait_progress(self, wait: Callable[[float], bool], timeout: float | None) -> bool:
        limit = self.config.close_timeout if timeout is None else timeout
        last = self.progress
        stalled_since = time.monotonic()
        while True:
            if wait(0.1):
                return True
            if self.progress != last and timeout is None:
                last = self.progress
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since >= limit:
                return False

    def _close_ring(self) -> None:
        """Unmap the ring; its file goes once everything in it is in the journal, else the next open or read of
        the run turns it into the journal."""
        with self._ring_lock:
            ring, self.ring = self.ring, None
        if ring is not None:
            left = ring.unconsumed()
            if left:
                try:
                    metrics, tracks, logs = split_items(ring.peek())
                except Exception:  # noqa: BLE001 - counting for the report only; the file stays either way
                    metrics, tracks, logs = [], [], []
                counts = {"metrics": len(metrics), "tracks": len(tracks), "logs": len(logs)}
                self.kept = {k: n for k, n in counts.items() if n}
                self.kept_path = ring.path
            ring.close(remove=not left)

    def stop(self) -> bool:
        """Stop the worker after it wrote everything; False if the store made no progress for close_timeout."""
        t = self._thread
        if t is None or not t.is_alive():
            self.drain(final=True)
            self.wait_files(None)
            self.drain(final=True, fsync=True)
            ok = self.pending() == 0
        else:
            self._stop = True
            self._wake.set()

            def joined(s: float) -> bool:
                t.join(s)
                return not t.is_alive()

            ok = self._wait_progress(joined, None)
            if ok:
                self._thread = None
        if self._pool is not None and ok:
            self._pool.shutdown(wait=False)
            self._pool = None
        self._close_ring()
        return ok and self.pending() == 0


def _write_streams(items: list[tuple[Any, dict[str, Any]]], append: Callable[[Any, list[dict[str, Any]]], None],
                   device_values: bool) -> None:
    """Group (stream, row) items by stream, keeping order, and append each group; a stream that fails does not
    stop the others, and only its rows are handed back (PartialWrite) for retry."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for key, row in items:
        g = groups.get(key)
        if g is None:
            groups[key] = g = []
        g.append(row)
    if device_values:
        for rows in groups.values():
            for row in rows:
                for v in row.values():
                    if type(v) is Deferred:  # device values are converted here, on the worker thread
                        resolve_row(row)
                        break
    _append_groups(groups.items(), append)


def _append_groups(groups: Iterable[tuple[Any, list[Any]]], append: Callable[[Any, list[Any]], None]) -> None:
    """Append each (stream, rows) group in order; a stream that fails does not stop the others, and only its rows
    are handed back (PartialWrite) for retry."""
    failed: list[tuple[Any, Any]] = []
    error: BaseException | None = None
    for key, rows in groups:
        try:
            append(key, rows)
        except (OSError, ValueError, TypeError) as e:
            # without its traceback: the traceback's frames hold this frame, which holds ``error`` (a cycle that
            # only the cyclic collector frees, late: each failed attempt's rows and formatted text stayed in
            # memory until it ran, hundreds of MiB while a disk kept failing)
            error = e.with_traceback(None)
            failed.extend(zip(repeat(key), rows))
    if error is not None:
        raise PartialWrite(failed, error)


_key = itemgetter(0)
_row = itemgetter(1)


def _count_runs(runs: list[tuple[Any, list[Any]]]) -> int:
    return sum(len(p) for _, p in runs)


def _rows_of_runs(runs: list[tuple[Any, list[Any]]]) -> list[tuple[Any, Any]]:
    return [(key, p) for key, pieces in runs for p in pieces]


def _piece(row: dict[str, Any]) -> bytes:
    """A metric row as `ExperimentDir.append_metric_pieces` takes it (device values read here, on the worker)."""
    for v in row.values():
        if type(v) is Deferred:
            resolve_row(row)
            break
    return dumpb(row)[1:-1]


def _prepare_file(staged: Path, entry: dict[str, Any]) -> Path:
    """Pool task: make sure the staged content is there (copy large sources now), checksum it."""
    content = staged
    if not content.exists():
        src = entry.pop(STAGED_SOURCE, None)
        if src is None:
            raise FileNotFoundError(f"staged content of {entry['filename']} is missing")
        tmp = content.with_name(content.name + ".part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, content)
    entry.pop(STAGED_SOURCE, None)
    h = hashlib.sha256()
    size = 0
    with open(content, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    entry["checksum"] = h.hexdigest()
    entry["sizeBytes"] = size
    return content
