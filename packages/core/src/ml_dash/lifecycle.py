"""Process-level lifecycle: the open-experiment registry, exit hook, excepthook, SIGTERM, fork, stores and hooks."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any

from . import console

if TYPE_CHECKING:
    from .buffer import Buffer
    from .experiment import Experiment

_open: dict[int, Experiment] = {}
_lock = threading.Lock()
_installed = False
_exit_status: str | None = None  # set by excepthook / signal handlers
_prev_excepthook: Any = None
_prev_sigterm: Any = None
_all: weakref.WeakSet[Experiment] = weakref.WeakSet()


def register(exp: Experiment) -> None:
    with _lock:
        _open[id(exp)] = exp
        _all.add(exp)
    _install()


def unregister(exp: Experiment) -> None:
    with _lock:
        _open.pop(id(exp), None)


def open_experiments() -> list[Experiment]:
    with _lock:
        return list(_open.values())


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
    global _exit_status
    if _exit_status is None:
        _exit_status = "CANCELLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        _reason[0] = f"{exc_type.__name__}: {exc}"[:500]
    hook = _prev_excepthook or sys.__excepthook__
    hook(exc_type, exc, tb)


_reason: list[str | None] = [None]


def close_all(status: str, reason: str | None) -> None:
    for exp in open_experiments():
        try:
            exp._close(status, reason)
        except Exception as e:  # never let one experiment stop the others from closing
            console.warn(f"closing {exp.prefix} failed: {type(e).__name__}: {e}")


def _at_exit() -> None:
    status = _exit_status or "COMPLETED"
    close_all(status, _reason[0] if _exit_status else None)


def _on_sigterm(signum: int, frame: Any) -> None:
    global _exit_status
    _exit_status = "CANCELLED"
    _reason[0] = "SIGTERM"
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
    for exp in list(_all):
        buf = exp._buf
        if buf is not None:
            buf.after_fork_in_child()
            exp._replicators = []
            exp._state_lock = threading.RLock()
    _open.clear()  # the parent owns the runs' status; the child only appends records (written through)


# ---- stores and plugin hooks (plugins load lazily, never at `import ml_dash`) -----------------------------------
# None of this runs on the hot path: stores are found when an experiment opens, lifecycle hooks fire on start,
# flush() and close, and ml_dash_store_error on a store's own worker thread.
def open_stores(exp: Experiment, buf: Buffer) -> list[Any]:
    """Find a store for every destination (``dash_url``, ``stores=[...]``) and start one Replicator for each."""
    destinations: list[str] = []
    if exp.dash_url:
        destinations.append(exp.dash_url)
    destinations.extend(exp.store_names)
    if not destinations:
        return []
    from .replicate import Replicator

    stores: list[Any] = []
    try:
        for dest in destinations:
            stores.append(_find_store(exp, dest))
    except ValueError as e:  # bad destination: say so at start, and do not leave the run looking alive
        for made in stores:
            try:
                if made is not None:
                    made.close()
            except Exception:
                pass
        try:
            exp._dir.update_info(status="FAILED", statusReason=str(e)[:500])
        except OSError:
            pass
        raise
    def on_error(store: Any, error: BaseException) -> None:
        hook_store_error(exp, store, error)

    reps = []
    for store in stores:
        if store is None:
            continue
        rep = Replicator(exp._dir, store, exp.config, on_error=on_error)
        buf.listeners.append(rep.notify)
        rep.start()
        reps.append(rep)
    return reps


def _find_store(exp: Experiment, dest: str) -> Any:
    """The first store an ``ml_dash_store`` implementation returns for ``dest``.

    A plugin that raises is reported by name and the next one is asked; ValueError (a destination its owner
    recognises but cannot use) and no taker at all are errors. When only broken plugins were left, the store is
    skipped with a warning: its data stays in the local journal for a later ``ml-dash sync``.
    """
    if not isinstance(dest, str) or not dest:
        raise ValueError(f"a store destination must be a non-empty string, got {dest!r}")
    from .plugins import implementations

    kw = {"destination": dest, "experiment": exp}
    broken = []
    for impl in implementations("ml_dash_store"):
        if impl.wrapper or impl.hookwrapper:
            continue
        try:
            store = impl.function(*[kw[a] for a in impl.argnames])
        except ValueError:
            raise
        except Exception as e:
            broken.append(impl.plugin_name)
            console.warn(f"plugin {impl.plugin_name!r} failed to make a store for {dest!r} and is skipped: "
                         f"{type(e).__name__}: {e}")
            continue
        if store is not None:
            return store
    if broken:
        console.warn(f"no store for {dest!r}: the run goes on without it; its data stays in {exp.folder}")
        return None
    raise ValueError(f"no store handles destination {dest!r}: give an http(s):// URL, a folder path or file:// URL, "
                     "or the name of an installed store plugin (ML_DASH_DISABLE_PLUGINS=1 turns those off)")


def flush_stores(exp: Experiment, reps: list[Any], timeout: float | None) -> bool:
    ok = True
    for rep in reps:
        ok = rep.flush(timeout) and ok
    return ok


def close_stores(exp: Experiment, reps: list[Any], status: str) -> bool:
    ok = True
    for rep in reps:
        try:
            ok = rep.close(status) and ok
        except Exception as e:  # one store must not keep the others (or the run) from closing
            console.warn(f"closing store {getattr(rep.store, 'key', rep)} failed: {type(e).__name__}: {e}")
            ok = False
    return ok


_hook_warned: set[tuple[str, str, str]] = set()


def _call(name: str, **kw: Any) -> None:
    """Call every implementation of lifecycle hook ``name``; one that raises is reported (once) and the others
    still run. Never raises into training."""
    try:
        from .plugins import implementations, manager

        impls = implementations(name)
        if any(i.wrapper or i.hookwrapper for i in impls):  # let pluggy run wrappers; all-or-nothing then
            getattr(manager().hook, name)(**kw)
            return
    except Exception as e:
        _warn_hook(name, "?", e)
        return
    for impl in impls:
        try:
            impl.function(*[kw[a] for a in impl.argnames])
        except Exception as e:
            _warn_hook(name, impl.plugin_name, e)


def _warn_hook(name: str, plugin: str, e: BaseException) -> None:
    key = (name, plugin, type(e).__name__)
    if key not in _hook_warned:
        _hook_warned.add(key)
        console.warn(f"plugin {plugin!r} raised in hook {name} (ignored): {type(e).__name__}: {e}")


_announced: weakref.WeakKeyDictionary[Experiment, weakref.ref[Buffer]] = weakref.WeakKeyDictionary()


def hook_started(exp: Experiment) -> None:
    """Once per opening: ``exp.run.start()`` on a run that is already open announces nothing new."""
    buf = exp._buf
    if buf is not None:
        seen = _announced.get(exp)
        if seen is not None and seen() is buf:
            return
        _announced[exp] = weakref.ref(buf)
    _call("ml_dash_experiment_started", experiment=exp)


def hook_flushed(exp: Experiment, counts: dict[str, int]) -> None:
    _call("ml_dash_experiment_flushed", experiment=exp, counts=counts)


def hook_finished(exp: Experiment, status: str) -> None:
    _call("ml_dash_experiment_finished", experiment=exp, status=status)


def hook_store_error(exp: Experiment, store: Any, error: BaseException) -> None:
    _call("ml_dash_store_error", experiment=exp, store=store, error=error)
