"""Process-level concerns: the registry of open runs, the exit hook, the excepthook, SIGTERM and fork.

Runs are called only through `OpenRun`, so this module knows nothing of experiments, buffers or stores. Installed
on the first registration, never at ``import ml_dash``.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import weakref
from typing import Any, Protocol

from . import console


class OpenRun(Protocol):
    """What the process needs from an open run."""

    @property
    def prefix(self) -> str: ...

    def close_for_exit(self, status: str, reason: str | None) -> None:
        """Close the run with this status (the interpreter is exiting, or SIGTERM arrived)."""

    def after_fork_in_child(self) -> None:
        """In a forked child: drop the parent's pending data and threads; keep writing through."""


_open: dict[int, OpenRun] = {}  # closed at exit
_known: weakref.WeakSet[Any] = weakref.WeakSet()  # every run registered in this process: reset in a forked child
_lock = threading.Lock()
_installed = False
_exit_status: str | None = None  # set by the excepthook / the SIGTERM handler
_exit_reason: str | None = None
_prev_excepthook: Any = None
_prev_sigterm: Any = None


def register(run: OpenRun) -> None:
    with _lock:
        _open[id(run)] = run
        _known.add(run)
    _install()


def unregister(run: OpenRun) -> None:
    with _lock:
        _open.pop(id(run), None)


def open_runs() -> list[OpenRun]:
    with _lock:
        return list(_open.values())


def close_all(status: str, reason: str | None) -> None:
    for run in open_runs():
        try:
            run.close_for_exit(status, reason)
        except Exception as e:  # never let one run stop the others from closing
            console.warn(f"closing {getattr(run, 'prefix', run)} failed: {type(e).__name__}: {e}")


def _install() -> None:
    global _installed, _prev_excepthook, _prev_sigterm
    if _installed:
        return
    _installed = True
    atexit.register(_at_exit)
    _prev_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    if threading.current_thread() is threading.main_thread():
        try:
            prev = signal.getsignal(signal.SIGTERM)
            if prev is not signal.SIG_IGN:
                _prev_sigterm = prev
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # not the main thread of the main interpreter
            pass
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
    global _exit_status, _exit_reason
    if _exit_status is None:
        _exit_status = "CANCELLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        _exit_reason = f"{exc_type.__name__}: {exc}"[:500]
    hook = _prev_excepthook or sys.__excepthook__
    hook(exc_type, exc, tb)


def _at_exit() -> None:
    close_all(_exit_status or "COMPLETED", _exit_reason if _exit_status else None)


def _on_sigterm(signum: int, frame: Any) -> None:
    global _exit_status, _exit_reason
    _exit_status = "CANCELLED"
    _exit_reason = "SIGTERM"
    close_all("CANCELLED", "SIGTERM")
    prev = _prev_sigterm
    if callable(prev):
        prev(signum, frame)
        return
    # behave as if we had never been there: the default action ends the process with SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _after_fork_in_child() -> None:
    """A forked child must not write its parent's pending data, nor close its parent's runs at exit."""
    global _lock
    _lock = threading.Lock()
    for run in list(_known):
        run.after_fork_in_child()
    _open.clear()  # the parent owns the runs' status; the child only appends records (written through)
