"""A Replicator feeds one store from the local journal, on its own thread, remembering how far it got.

It reads only complete lines of the journal files, in batches of the configured sizes, every ``flush_interval``
or as soon as a batch is waiting, retries a failing store with exponential backoff and jitter, sets aside
batches the store refuses for good (``PermanentError``), and records its progress in a cursor file so that a
later ``ml-dash sync`` (or a re-opened run) delivers the rest exactly once.

Streams are independent: a batch that keeps failing (the store answers an error for that request only) is
retried with its own backoff while every other stream, the parameters, the status and the files keep flowing.
Only a failure of the whole store (unreachable, timed out, authentication refused: an exception with a true
``store_wide`` or ``fatal`` attribute) stops the pass and backs off the replicator as a whole.
"""

from __future__ import annotations

import functools
import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from . import console
from .config import BufferConfig
from .jsonio import read_json, write_json_atomic
from .layout import ExperimentDir
from .ring import recover
from .stores.base import PermanentError, Store

MAX_BACKOFF = 30.0
URGENT_BACKOFF = 1.0  # while someone waits in flush()/close(): retry at least this often
MAX_RETRY_AFTER = 300.0
READ_CHUNK = 4 * 1024 * 1024  # journal bytes read per step: a long outage's backlog is streamed, not slurped
HEARTBEAT_EVERY = 10.0  # forward the run's heartbeat to the store this often


class _StreamsFailing(Exception):
    """Some streams failed in this pass (the others went out); each backs off on its own."""


@dataclass
class _Stuck:
    failures: int
    since: float
    delay: float
    floor: float  # the store's Retry-After
    error: str


class Replicator:
    def __init__(self, jdir: ExperimentDir, store: Store, config: BufferConfig,
                 on_error: Callable[[Store, BaseException], None] | None = None) -> None:
        self.jdir = jdir
        self.store = store
        self.config = config
        self.on_error = on_error
        key = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(getattr(store, "key", "store")))
        self.cursor_path = jdir.cursor_path(key)
        self.quarantine_dir = jdir.quarantine_dir(key)
        cur = read_json(self.cursor_path)
        self.cursor: dict[str, Any] = cur if isinstance(cur, dict) else {}
        self.cursor.setdefault("offsets", {})
        self.cursor.setdefault("files", [])
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._new = 0
        self._clean = threading.Event()  # set when a pass found nothing left to send
        self._opened = False
        self._failures = 0
        self.error: str | None = None
        self._warned: set[str] = set()
        self.sent = {"logs": 0, "metrics": 0, "tracks": 0, "files": 0}
        self.progress = 0
        self._lock = threading.Lock()
        self._urgent = 0  # callers waiting in flush(): back off briefly
        self._fatal = 0  # failures a retry cannot fix (authentication): bumped per failed pass
        self._last_exc: BaseException | None = None
        self._beat_sent = 0.0
        self._beat: Any = None
        self.verbose = False  # print "[k/N] Uploaded <name>" per file (close, ml-dash sync)
        self._final_status: str | None = None  # the status close() was given, not yet in experiment.json
        self._final_sent: str | None = None
        self._stuck: dict[str, _Stuck] = {}  # streams whose last batch failed: retried on their own schedule
        self._store_closed = False  # close gave up and closed the store: a send still in flight fails quietly

    # ---- threading -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"ml-dash-store[{self.cursor_path.stem}]", daemon=True)
        self._thread.start()

    def notify(self, count: int = 1) -> None:
        self._new += count
        self._clean.clear()
        if self._new >= min(self.config.log_batch_size, self.config.metric_batch_size, self.config.track_batch_size):
            self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.config.flush_interval)
            self._wake.clear()
            if self._stop:
                break
            self._new = 0
            self.sync_once()

    def flush(self, timeout: float | None = None, report: bool = True) -> bool:
        """Wait until everything in the journal now is delivered; False after ``timeout`` without progress
        (or at once after an authentication failure), saying how much is pending and that it is safe on disk."""
        self._clean.clear()
        self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            return self.sync_once()
        limit = self.config.close_timeout if timeout is None else timeout
        last = self.progress
        since = time.monotonic()
        fatal = self._fatal
        self._urgent += 1
        try:
            while not self._clean.wait(0.1):
                self._wake.set()
                if self.progress != last:
                    last, since = self.progress, time.monotonic()
                elif time.monotonic() - since >= limit or self._fatal != fatal:
                    if report:
                        console.say(f"[ML-Dash]   {self.describe_pending()} not yet delivered to {self.key} "
                                    f"(last error: {self.error or 'no progress'}){self.describe_held_back()}; "
                                    "safe on disk in "
                                    f"{self.jdir.path}; delivery goes on in the background", bool(self.config.quiet))
                    return False
            return True
        finally:
            self._urgent -= 1

    @property
    def key(self) -> str:
        return str(getattr(self.store, "key", "store"))

    def close(self, status: str | None = None) -> bool:
        """Deliver what is left (the final status too) and close the store, never waiting on a stuck store for
        more than ``close_timeout`` seconds without progress."""
        self.verbose = True
        ok = self.flush(None, report=False)
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.config.close_timeout)
        result = [False]

        def final() -> None:
            # the experiment records its final status only after closing its stores: the last pass sends it
            self._final_status = status
            deadline = time.monotonic() + float(self.config.get("close_timeout"))
            delay = 0.1
            fatal = self._fatal
            while ok and not result[0]:
                result[0] = self.sync_once()  # what is left, and the final status; retried while time remains
                if result[0] or self._fatal != fatal or time.monotonic() + delay >= deadline:
                    break
                time.sleep(delay)
                delay = min(1.0, delay * 2)
            self._store_closed = True
            try:
                self.store.close()
            except Exception as e:
                self._fail("close", e)

        t = threading.Thread(target=final, name=f"ml-dash-store-close[{self.cursor_path.stem}]", daemon=True)
        t.start()
        t.join(self.config.close_timeout)
        ok = ok and result[0] and not t.is_alive()
        if not ok:
            console.say(f"[ML-Dash]   {self.describe_pending()} not delivered to {getattr(self.store, 'key', 'store')}"
                        f" (last error: {self.error or 'no progress'}){self.describe_held_back()}; "
                        f"safe in {self.jdir.path}; "
                        f"run `ml-dash sync {self.jdir.root}` to deliver it")
        return ok

    # ---- one pass ------------------------------------------------------------------------------------------------
    def sync_once(self) -> bool:
        """Send everything the journal holds now. True when nothing is left; False if the store failed."""
        with self._lock:
            before = self.progress
            try:
                self._pass()
            except PermanentError as e:  # refused open: report, do not spin
                self._fail("experiment", e)
                return False
            except _StreamsFailing:  # the rest went out; the failing streams back off on their own
                if self.progress != before:
                    self._failures = 0
                return False
            except Exception as e:
                self._fail("batch", e)
                if getattr(e, "fatal", False):
                    self._fatal += 1
                if self.progress != before:  # a flaky store that still moves: keep the backoff short
                    self._failures = 0
                self._backoff(e)
                return False
            self._failures = 0
            if self.error is not None:
                console.warn(f"{getattr(self.store, 'key', 'store')} works again; delivery resumed")
                self.error = None
                self._warned.clear()
            self._clean.set()
            return True

    def _fail(self, what: str, e: BaseException) -> None:
        if self._store_closed and what != "close":
            return  # a send that outlived close(): its rows are in the close's "not delivered" line, for sync
        self.error = f"{type(e).__name__}: {e}"
        k = f"{what}:{type(e).__name__}"
        if k not in self._warned:
            self._warned.add(k)
            then = ("it is set aside, not retried" if isinstance(e, PermanentError)
                    else "it is retried")
            console.warn(f"delivery to {getattr(self.store, 'key', 'store')} failed ({self.error}); "
                         f"the data stays in {self.jdir.path} and {then}")
        if self.on_error is not None:
            try:
                self.on_error(self.store, e)
            except Exception:
                pass

    def _backoff(self, e: BaseException | None = None) -> None:
        """Exponential backoff with jitter; at least the server's Retry-After; short while a flush waits."""
        self._failures += 1
        delay = min(MAX_BACKOFF, 0.2 * 2 ** min(self._failures - 1, 8)) * (0.5 + random.random() / 2)
        retry_after = getattr(e, "retry_after", None)
        floor = min(float(retry_after), MAX_RETRY_AFTER) if isinstance(retry_after, (int, float)) else 0.0
        total, urgent = max(delay, floor), max(URGENT_BACKOFF, floor)
        start = time.monotonic()
        while not self._stop:
            waited = time.monotonic() - start
            if waited >= total or (self._urgent and waited >= urgent):
                break
            time.sleep(0.05)

    def _save(self) -> None:
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.cursor_path, self.cursor)
        self.progress += 1

    def _pass(self) -> None:
        jdir = self.jdir
        info = jdir.read_info()
        if info is None:
            return
        if not self._opened:
            self.store.open(info)
            self._opened = True
        params = jdir.read_params()
        if params is not None and params.get("version") != self.cursor.get("params_version"):
            def send_params() -> None:
                try:
                    self.store.write_params(dict(params.get("data") or {}))
                except PermanentError as e:
                    self._fail("parameters refused", e)  # not retried: the next version is sent as usual
                self.cursor["params_version"] = params.get("version")
                self._save()
            self._guarded("parameters", send_params)
        self._stream(jdir.rel(jdir.logs_file()), self.config.log_batch_size,
                     lambda recs, *_: self.store.write_logs(recs), "logs")
        for name, data in jdir.metric_files():
            self._stream(jdir.rel(data), self.config.metric_batch_size,
                         lambda recs, *_, n=name: self.store.write_metrics(n, recs), "metrics")
        for topic, data in jdir.topic_files():
            self._stream(jdir.rel(data), self.config.track_batch_size,
                         functools.partial(self._send_tracks, topic), "tracks")
        self._guarded("files", self._files)
        self._guarded("status", lambda: self._send_status(info))
        if self._stuck:
            raise _StreamsFailing(self.describe_stuck())

    def _send_status(self, info: dict[str, Any]) -> None:
        status = (info.get("status"), info.get("statusReason"))
        try:
            if list(status) != self.cursor.get("status"):
                self.store.set_status(info)
                self.cursor["status"] = list(status)
                self._save()
                self._beat = info.get("heartbeatAt")
            final = self._final_status
            if final is not None and final != info.get("status") and final != self._final_sent:
                self.store.set_status({**info, "status": final})
                self._final_sent = final
            elif info.get("heartbeatAt") != self._beat and time.monotonic() - self._beat_sent >= HEARTBEAT_EVERY:
                self.store.set_status(info)  # keep the store's copy of a live run from looking crashed
                self._beat, self._beat_sent = info.get("heartbeatAt"), time.monotonic()
        except PermanentError as e:
            self._fail("status refused", e)
            self.cursor["status"] = list(status)
            self._final_sent = self._final_status

    # ---- one stream's failures --------------------------------------------------------------------------------
    def _due(self, key: str) -> bool:
        st = self._stuck.get(key)
        if st is None:
            return True
        waited = time.monotonic() - st.since
        return waited >= st.delay or (self._urgent > 0 and waited >= max(URGENT_BACKOFF, st.floor))

    def _guarded(self, key: str, fn: Callable[[], None]) -> None:
        """Run one stream's step; a failure of that stream alone is recorded and backed off, not raised."""
        if not self._due(key):
            return
        try:
            fn()
        except Exception as e:
            if getattr(e, "store_wide", False) or getattr(e, "fatal", False) or isinstance(e, PermanentError):
                raise
            self._stream_failed(key, e)
        else:
            self._stuck.pop(key, None)

    def _stream_failed(self, key: str, e: BaseException) -> None:
        st = self._stuck.get(key)
        failures = st.failures + 1 if st is not None else 1
        delay = min(MAX_BACKOFF, 0.2 * 2 ** min(failures - 1, 8)) * (0.5 + random.random() / 2)
        retry_after = getattr(e, "retry_after", None)
        floor = min(float(retry_after), MAX_RETRY_AFTER) if isinstance(retry_after, (int, float)) else 0.0
        self._stuck[key] = _Stuck(failures, time.monotonic(), max(delay, floor), floor, f"{type(e).__name__}: {e}")
        self._fail(f"stream {key}", e)

    def next_retry(self) -> float:
        """Seconds until the earliest failing stream is due again (0 when none is failing)."""
        now = time.monotonic()
        return max(0.0, min((st.since + st.delay - now for st in self._stuck.values()), default=0.0))

    def describe_stuck(self) -> str:
        """The streams held back by a failing batch, each with its last error ('' when none)."""
        return "; ".join(f"{k} ({st.failures} failed attempt(s), last error: {st.error})"
                         for k, st in sorted(self._stuck.items()))

    def _send_tracks(self, topic: str, recs: list[dict[str, Any]], off: int, offs: list[int], end: int) -> None:
        if getattr(self.store, "track_offsets", False):  # per-entry positions: exact dedup of overlapping batches
            self.store.write_tracks(topic, recs, off, offsets=offs, end=end)  # type: ignore[call-arg]
        else:
            self.store.write_tracks(topic, recs, off)

    def _stream(self, rel: str, batch: int, send: Callable[[list[dict[str, Any]], int, list[int], int], None],
                kind: str) -> None:
        """Send the complete lines after the cursor in batches: send(records, offset, offsets, end)."""
        self._guarded(rel, lambda: self._stream_batches(rel, batch, send, kind))

    def _stream_batches(self, rel: str, batch: int, send: Callable[[list[dict[str, Any]], int, list[int], int], None],
                        kind: str) -> None:
        file = self.jdir.path / rel
        offsets = self.cursor["offsets"]
        off = int(offsets.get(rel, 0))
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            return
        while off < size and not (self._stop and self._thread is threading.current_thread()):
            with open(file, "rb") as f:
                f.seek(off)
                raw = f.read(min(size - off, READ_CHUNK))
            end = raw.rfind(b"\n")
            if end < 0:
                if len(raw) < READ_CHUNK:
                    return  # only a line still being written
                with open(file, "rb") as f:  # one line longer than READ_CHUNK
                    f.seek(off)
                    raw = f.readline()
                end = len(raw) - 1
                if not raw.endswith(b"\n"):
                    return
            lines = raw[: end + 1].split(b"\n")[:-1]
            pos = off
            for i in range(0, len(lines), batch):
                chunk = lines[i : i + batch]
                recs: list[dict[str, Any]] = []
                starts: list[int] = []
                p = pos
                for line in chunk:
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        obj = None
                    if isinstance(obj, dict):
                        recs.append(obj)
                        starts.append(p)
                    p += len(line) + 1
                if recs:
                    try:
                        send(recs, pos, starts, p)
                    except PermanentError as e:
                        self._quarantine(rel, pos, chunk, e)
                    self.sent[kind] += len(recs)
                pos = p
                offsets[rel] = pos
                self._save()
            off = pos

    def _quarantine(self, rel: str, pos: int, chunk: list[bytes], e: BaseException) -> None:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        name = rel.replace("/", "__") + f".{pos}.jsonl"
        with open(self.quarantine_dir / name, "wb") as f:
            f.write(b"\n".join(chunk) + b"\n")
        self._fail("batch refused", e)
        console.warn(f"{getattr(self.store, 'key', 'store')} refused a batch of {rel} ({e}); "
                     f"set aside in {self.quarantine_dir / name}")

    def _files(self) -> None:
        entries = self.jdir.files_index()
        if not entries:
            return
        done = set(self.cursor["files"])
        todo = [e for e in entries if e.get("id") not in done]
        if not todo:
            return
        n = len(todo)
        workers = min(n, int(self.config.get("file_upload_workers"))) if getattr(self.store, "parallel_files", False) else 1
        if self.verbose:
            where = getattr(self.store, "url", None) or self.key
            console.say(f"[ML-Dash]   Uploading {n} file(s) to {where}...", bool(self.config.quiet))

        def one(e: dict[str, Any]) -> None:
            try:
                p = self.jdir.file_path(e)
            except (KeyError, ValueError, TypeError) as err:
                raise PermanentError(f"invalid files index entry ({err})") from None
            self.store.write_file(e, str(p))

        failed: BaseException | None = None
        k = 0
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix=f"ml-dash-upload[{self.key}]") as pool:
            futures = {pool.submit(one, e): e for e in todo}
            for fut in as_completed(futures):
                e = futures[fut]
                try:
                    fut.result()
                except PermanentError as err:
                    self._fail(f"file {e.get('filename')}", err)
                except Exception as err:  # retried with the next pass
                    failed = failed or err
                    continue
                self.cursor["files"].append(e.get("id"))
                self.sent["files"] += 1
                self._save()
                k += 1
                if self.verbose:
                    console.say(f"[ML-Dash]   [{k}/{n}] Uploaded {e.get('filename')}", bool(self.config.quiet))
        if failed is not None:
            raise failed

    def pending(self) -> dict[str, int]:
        """Records (complete journal lines) and files this store has not received yet, by kind."""
        jdir = self.jdir
        offsets = self.cursor["offsets"]
        out = {"logs": 0, "metrics": 0, "tracks": 0, "files": 0}
        for kind, data in jdir.stream_files():
            off = int(offsets.get(jdir.rel(data), 0))
            try:
                with open(data, "rb") as f:
                    f.seek(off)
                    while True:
                        block = f.read(1 << 20)
                        if not block:
                            break
                        out[kind] += block.count(b"\n")
            except OSError:
                continue
        done = set(self.cursor["files"])
        out["files"] = sum(1 for e in jdir.files_index() if e.get("id") not in done)
        return out

    def describe_pending(self) -> str:
        """How much of the journal this store has not received yet, in words."""
        p = self.pending()
        return (f"{p['logs']:,} log(s), {p['metrics']:,} metric row(s), {p['tracks']:,} track entr(ies), "
                f"{p['files']:,} file(s)")

    def describe_held_back(self) -> str:
        """'' or '; held back by failing batches: <stream> (...)', for the end-of-run and sync lines."""
        stuck = self.describe_stuck()
        return f"; held back by failing batches (every other stream was delivered): {stuck}" if stuck else ""


def sync_dir(jdir: ExperimentDir, store: Store, config: BufferConfig | None = None, *, verbose: bool = False,
             attempts: int = 1) -> Replicator:
    """Deliver one experiment folder to ``store`` now (``ml-dash sync``); ``attempts`` passes at most, with
    backoff between them. ``rep.error`` is None when everything was delivered."""
    recover(jdir)  # rows a killed writer left in its spill ring go into the journal first
    rep = Replicator(jdir, store, config or BufferConfig())
    rep.verbose = verbose
    for attempt in range(max(1, attempts)):
        if rep.sync_once():
            break
        if rep._fatal:
            break
        if rep._stuck and attempt + 1 < attempts:  # only some streams failed: wait until the first is due
            time.sleep(min(MAX_BACKOFF, rep.next_retry()))
    return rep

