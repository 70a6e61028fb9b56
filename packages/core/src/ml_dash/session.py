"""One open run's engine: the buffer that writes the `.dash` files, and one replicator per other store.

`Experiment` opens a `Session` when the run starts and closes it when the run ends; in between the training
thread appends to ``session.buffer``'s queues directly (the hot path never goes through here). Plugins are
imported only when a run has other stores or plugin hooks fire, never at ``import ml_dash``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import console
from .buffer import Buffer
from .config import BufferConfig
from .jsonio import now_iso
from .layout import ExperimentDir
from .ring import recover

MARKS = {"COMPLETED": "✓ Experiment completed", "FAILED": "✗ Experiment failed",
         "CANCELLED": "⚠ Experiment cancelled"}


@dataclass
class CloseReport:
    """How a run ended: its status, the reason recorded with it (with what could not be saved, if anything), and
    whether everything was written and delivered."""

    status: str
    reason: str | None
    ok: bool
    unsaved: dict[str, int]


class Session:
    """Opens the run's files and buffer (``__init__``), then its stores (`start`); `flush`; `close`.

    ``owner`` is the object plugins see as ``experiment`` (in ``ml_dash_store`` and ``ml_dash_store_error``).
    """

    def __init__(self, jdir: ExperimentDir, config: BufferConfig, *, owner: Any, description: str | None = None,
                 tags: list[str] | None = None, metadata: dict[str, Any] | None = None) -> None:
        self.jdir = jdir
        self.config = config
        self.owner = owner
        jdir.open_info(description, tags, metadata)
        self.buffer = Buffer(jdir, config)
        recover(jdir)  # records a killed process left in its spill ring
        for staged, entry in jdir.recover_staged():
            self.buffer.files.append((staged, entry))
        self.replicators: list[Any] = []

    def start(self, destinations: list[str]) -> None:
        """Find a store for every destination, start one Replicator for each, then the buffer's worker.

        ValueError (a destination nobody can use) is raised before anything starts, and the run is marked FAILED
        on disk so that it does not look alive."""
        if destinations:
            self.replicators = self._open_stores(destinations)
        self.buffer.start()

    def _open_stores(self, destinations: list[str]) -> list[Any]:
        from .plugins import call_hook, find_store
        from .replicate import Replicator

        stores: list[Any] = []
        try:
            for dest in destinations:
                stores.append(find_store(dest, self.owner))
        except ValueError as e:  # bad destination: say so at start, and do not leave the run looking alive
            for made in stores:
                try:
                    if made is not None:
                        made.close()
                except Exception:
                    pass
            try:
                self.jdir.update_info(status="FAILED", statusReason=str(e)[:500])
            except OSError:
                pass
            raise

        def on_error(store: Any, error: BaseException) -> None:
            call_hook("ml_dash_store_error", experiment=self.owner, store=store, error=error)

        reps = []
        for store in stores:
            if store is None:
                continue
            rep = Replicator(self.jdir, store, self.config, on_error=on_error)
            self.buffer.listeners.append(rep.notify)
            rep.start()
            reps.append(rep)
        return reps

    def after_fork_in_child(self) -> None:
        """The parent's stores and pending data stay the parent's; the child writes through to the files."""
        self.buffer.after_fork_in_child()
        self.replicators = []

    # ---- flush ---------------------------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Everything accepted so far written and fsync'd, and delivered to the other stores. False (with a
        warning saying what is pending and where it is safe) when that did not finish within ``timeout``."""
        buf = self.buffer
        local_ok = buf.flush(timeout)
        stores_ok = True
        for rep in self.replicators:
            stores_ok = rep.flush(timeout) and stores_ok
        prefix = self.jdir.prefix
        if not local_ok:
            console.warn(f"flush of {prefix} did not finish: {buf.pending():,} record(s) not yet written "
                         f"(last error: {buf.last_error()}); they are kept in memory and retried")
        elif not stores_ok:
            console.warn(f"flush of {prefix}: everything is written and safe in {self.jdir.path}, but delivery "
                         "to other stores is not finished; it continues in the background")
        return local_ok and stores_ok

    # ---- close ---------------------------------------------------------------------------------------------------
    def close(self, status: str, reason: str | None) -> CloseReport:
        """Write and deliver what is left (never waiting on a stalled store longer than ``close_timeout``), record
        the status, close the stores, and print the end-of-run report (docs: console output)."""
        buf = self.buffer
        quiet = bool(self.config.quiet)
        a = buf.accepted
        recorded = sum(a.values()) > 0
        if recorded:
            console.say("[ML-Dash] Flushing buffered data...", quiet)
            console.say(f"[ML-Dash]   - {a['logs']} log(s), {a['metrics']} metric(s), {a['tracks']} track(s), "
                        f"{a['files']} file(s)", quiet)
        if not self.replicators:  # a remote store prints its own upload lines
            def announce(n: int) -> None:
                console.say(f"[ML-Dash]   Uploading {n} file(s)...", quiet)

            n_files, published = buf.publish_staged_files(announce)
            for k, entry in enumerate(published, 1):
                console.say(f"[ML-Dash]   [{k}/{n_files}] Uploaded {entry['filename']}", quiet)
        ok = buf.flush(None)
        ok = buf.stop() and ok
        unsaved = buf.unsaved()
        if unsaved:
            what = ", ".join(f"{n} {k}" for k, n in unsaved.items())
            note = f"not saved: {what} (last error: {buf.last_error()})"
            reason = f"{reason}; {note}" if reason else note
        try:  # the status goes into the files before the stores' last pass, so they deliver it too
            self.jdir.update_info(status=status, statusReason=reason, heartbeatAt=now_iso(),
                                  endedAt=now_iso(), unsaved=unsaved or None)
        except OSError as e:
            console.warn(f"could not record status {status} of {self.jdir.prefix} ({e})")
            ok = False
        stores_ok = self._close_stores(status)
        lost = buf.lost_count()
        if recorded or not ok:
            if ok and stores_ok and not lost:
                console.say("[ML-Dash] ✓ All data flushed successfully", quiet)
            else:
                parts = []
                # accepted minus written: the worker, still retrying past close_timeout, may hold some in hand
                unwritten = max(buf.pending(), sum(max(0, a[k] - buf.written[k] - buf.lost[k])
                                                   for k in ("logs", "metrics", "tracks")))
                if unwritten:
                    parts.append(f"{unwritten:,} record(s) could not be written to {self.jdir.path}"
                                 f" (last error: {buf.last_error()})")
                if buf.kept_path is not None:
                    parts.append(f"those the spill ring held are kept in {buf.kept_path}, and the run's next open "
                                 "or read writes them into it")
                if lost:
                    parts.append(f"lost while the disk was failing: {buf.lost_text()}")
                if not stores_ok:
                    parts.append("some data is not yet delivered to other stores; it is safe in "
                                 f"{self.jdir.path} and `ml-dash sync` delivers it later")
                if not parts:
                    parts.append(f"writing to {self.jdir.path} did not finish within close_timeout "
                                 f"(last error: {buf.last_error()})")
                console.say("[ML-Dash] ⚠ Not everything was flushed: " + "; ".join(parts), quiet and ok)
        if recorded:
            console.say(f"{MARKS.get(status, f'Experiment {status.lower()}')}: {self.jdir.name}", quiet)
        self.jdir.close()
        return CloseReport(status, reason, ok and stores_ok and not lost, unsaved)

    def _close_stores(self, status: str) -> bool:
        ok = True
        for rep in self.replicators:
            try:
                ok = rep.close(status) and ok
            except Exception as e:  # one store must not keep the others (or the run) from closing
                console.warn(f"closing store {getattr(rep.store, 'key', rep)} failed: {type(e).__name__}: {e}")
                ok = False
        return ok
