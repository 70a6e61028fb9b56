"""A Replicator feeds one store from the local journal, on its own thread, remembering how far it got.

It reads only complete lines of the journal files, in batches of the configured sizes, every ``flush_interval``
or as soon as a batch is waiting, retries a failing store with exponential backoff and jitter, sets aside
batches the store refuses for good (``PermanentError``), and records its progress in a cursor file so that a
later ``ml-dash sync`` (or a re-opened run) delivers the rest exactly once.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import console
from .config import BufferConfig
from .journal import ExperimentDir, read_json, write_json_atomic
from .stores.base import PermanentError, Store

MAX_BACKOFF = 30.0


class Replicator:
    def __init__(self, jdir: ExperimentDir, store: Store, config: BufferConfig,
                 on_error: Callable[[Store, BaseException], None] | None = None) -> None:
        self.jdir = jdir
        self.store = store
        self.config = config
        self.on_error = on_error
        key = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(getattr(store, "key", "store")))
        self.cursor_path = jdir.private / "cursors" / f"{key}.json"
        self.quarantine_dir = jdir.private / "quarantine" / key
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

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything in the journal now is delivered; False after ``timeout`` without progress."""
        self._clean.clear()
        self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            return self.sync_once()
        limit = self.config.close_timeout if timeout is None else timeout
        last = self.progress
        since = time.monotonic()
        while not self._clean.wait(0.1):
            self._wake.set()
            if self.progress != last:
                last, since = self.progress, time.monotonic()
            elif time.monotonic() - since >= limit:
                return False
        return True

    def close(self, status: str | None = None) -> bool:
        ok = self.flush(None)
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.config.close_timeout)
        if ok:
            ok = self.sync_once()  # the final status
        try:
            self.store.close()
        except Exception as e:
            self._fail("close", e)
        if not ok:
            console.say(f"[ML-Dash]   {self.describe_pending()} not delivered to {getattr(self.store, 'key', 'store')}"
                        f" (last error: {self.error}); safe in {self.jdir.path}; run `ml-dash sync` to deliver it")
        return ok

    # ---- one pass ------------------------------------------------------------------------------------------------
    def sync_once(self) -> bool:
        """Send everything the journal holds now. True when nothing is left; False if the store failed."""
        with self._lock:
            try:
                self._pass()
            except PermanentError as e:  # refused open/params/status: report, do not spin
                self._fail("experiment", e)
                return False
            except Exception as e:
                self._fail("batch", e)
                self._backoff()
                return False
            self._failures = 0
            if self.error is not None:
                console.warn(f"{getattr(self.store, 'key', 'store')} works again; delivery resumed")
                self.error = None
                self._warned.clear()
            self._clean.set()
            return True

    def _fail(self, what: str, e: BaseException) -> None:
        self.error = f"{type(e).__name__}: {e}"
        k = f"{what}:{type(e).__name__}"
        if k not in self._warned:
            self._warned.add(k)
            console.warn(f"delivery to {getattr(self.store, 'key', 'store')} failed ({self.error}); "
                         f"data stays in {self.jdir.path} and is retried")
        if self.on_error is not None:
            try:
                self.on_error(self.store, e)
            except Exception:
                pass

    def _backoff(self) -> None:
        self._failures += 1
        delay = min(MAX_BACKOFF, 0.25 * 2 ** min(self._failures, 8)) * (0.5 + random.random() / 2)
        end = time.monotonic() + delay
        while time.monotonic() < end and not self._stop:
            time.sleep(min(0.05, delay))

    def _save(self) -> None:
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.cursor_path, self.cursor)
        self.progress += 1

    def _pass(self) -> None:
        path = self.jdir.path
        info = read_json(path / "experiment.json")
        if not isinstance(info, dict):
            return
        if not self._opened:
            self.store.open(info)
            self._opened = True
        params = read_json(path / "parameters.json")
        if isinstance(params, dict) and params.get("version") != self.cursor.get("params_version"):
            self.store.write_params(dict(params.get("data") or {}))
            self.cursor["params_version"] = params.get("version")
            self._save()
        self._stream("logs/logs.jsonl", self.config.log_batch_size, lambda recs, off: self.store.write_logs(recs), "logs")
        metrics = path / "metrics"
        if metrics.is_dir():
            for data in sorted(metrics.rglob("data.jsonl")):
                name = str(data.parent.relative_to(metrics)).replace(os.sep, "/")
                self._stream(str(data.relative_to(path)), self.config.metric_batch_size,
                             lambda recs, off, n=name: self.store.write_metrics(n, recs), "metrics")
        tracks = path / "tracks"
        if tracks.is_dir():
            for folder in sorted(tracks.iterdir()):
                meta = read_json(folder / "metadata.json")
                if not isinstance(meta, dict) or not isinstance(meta.get("topic"), str):
                    continue
                topic = meta["topic"]
                self._stream(str((folder / "data.jsonl").relative_to(path)), self.config.track_batch_size,
                             lambda recs, off, t=topic: self.store.write_tracks(t, recs, off), "tracks")
        self._files()
        status = (info.get("status"), info.get("statusReason"))
        if list(status) != self.cursor.get("status"):
            self.store.set_status(info)
            self.cursor["status"] = list(status)
            self._save()

    def _stream(self, rel: str, batch: int, send: Callable[[list[dict[str, Any]], int], None], kind: str) -> None:
        file = self.jdir.path / rel
        offsets = self.cursor["offsets"]
        off = int(offsets.get(rel, 0))
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            return
        if size <= off:
            return
        with open(file, "rb") as f:
            f.seek(off)
            raw = f.read(size - off)
        end = raw.rfind(b"\n")
        if end < 0:
            return
        lines = raw[: end + 1].split(b"\n")[:-1]
        pos = off
        i = 0
        while i < len(lines):
            chunk = lines[i : i + batch]
            recs = []
            for line in chunk:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    recs.append(obj)
            nbytes = sum(len(x) + 1 for x in chunk)
            if recs:
                try:
                    send(recs, pos)
                except PermanentError as e:
                    self._quarantine(rel, pos, chunk, e)
                self.sent[kind] += len(recs)
            pos += nbytes
            i += batch
            offsets[rel] = pos
            self._save()

    def _quarantine(self, rel: str, pos: int, chunk: list[bytes], e: BaseException) -> None:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        name = rel.replace("/", "__") + f".{pos}.jsonl"
        with open(self.quarantine_dir / name, "wb") as f:
            f.write(b"\n".join(chunk) + b"\n")
        self._fail("batch refused", e)
        console.warn(f"{getattr(self.store, 'key', 'store')} refused a batch of {rel} ({e}); "
                     f"set aside in {self.quarantine_dir / name}")

    def _files(self) -> None:
        idx = read_json(self.jdir.path / "files" / ".files_metadata.json")
        entries = idx.get("files") if isinstance(idx, dict) else None
        if not entries:
            return
        done = set(self.cursor["files"])
        for e in entries:
            if not isinstance(e, dict) or e.get("id") in done:
                continue
            p = self.jdir.file_path(e)
            try:
                self.store.write_file(e, str(p))
            except PermanentError as err:
                self._fail(f"file {e.get('filename')}", err)
            self.cursor["files"].append(e.get("id"))
            done.add(e.get("id"))
            self.sent["files"] += 1
            self._save()

    def describe_pending(self) -> str:
        path = self.jdir.path
        pending = 0
        for rel, off in list(self.cursor["offsets"].items()):
            try:
                pending += max(0, (path / rel).stat().st_size - int(off))
            except OSError:
                pass
        return f"{pending:,} byte(s) of records"


def sync_dir(jdir: ExperimentDir, store: Store, config: BufferConfig | None = None) -> Replicator:
    """Deliver one experiment folder to ``store`` now (``ml-dash sync``)."""
    rep = Replicator(jdir, store, config or BufferConfig())
    rep.sync_once()
    return rep


_ = Path
