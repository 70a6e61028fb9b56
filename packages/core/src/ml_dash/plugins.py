"""Plugins (pluggy): the manager, lazy discovery from the ``ml_dash`` entry-point group, in-code registration.

Nothing here runs at ``import ml_dash``: the manager is built on first use (the first experiment that starts,
or an explicit `register`). The hooks themselves (`HookSpecs`, `hookimpl`) are in `ml_dash.hookspecs`; they are
re-exported here for plugins written against this module. See docs/plugins.md.
"""

from __future__ import annotations

import inspect
import os
import threading
from typing import Any

import pluggy

from . import console
from .config import env_flag
from .hookspecs import ENTRY_POINT_GROUP, HOOK_NAMES, HOOK_PREFIX, PROJECT, HookSpecs, hookimpl, hookspec

__all__ = ["HOOK_NAMES", "HookSpecs", "PluginManager", "call_hook", "find_store", "hookimpl", "hookspec",
           "implementations", "manager", "register", "unregister"]

DISABLE_ENV = "ML_DASH_DISABLE_PLUGINS"


class PluginManager(pluggy.PluginManager):
    """Takes every ``ml_dash_*`` function of a plugin as a hook implementation, marked or not, so that a
    misspelt hook is reported instead of silently ignored."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(HOOK_PREFIX):
            try:
                attr = inspect.getattr_static(plugin, name)
            except AttributeError:
                return None
            if inspect.isroutine(attr) and not inspect.isclass(attr):
                return {}  # pluggy fills in the defaults
        return opts


_manager: PluginManager | None = None
_lock = threading.Lock()


def disabled() -> bool:
    """True when ``ML_DASH_DISABLE_PLUGINS`` turns entry-point discovery off (built-ins and in-code plugins stay)."""
    try:
        return env_flag(DISABLE_ENV)
    except ValueError as e:  # a typo in the environment must not stop training
        console.warn(f"{e}; plugins stay enabled")
        return False


def manager() -> PluginManager:
    """The process's plugin manager, built (and entry points loaded) on first call."""
    global _manager
    pm = _manager
    if pm is not None:
        return pm
    with _lock:
        if _manager is None:
            pm = PluginManager(PROJECT)
            pm.add_hookspecs(HookSpecs)
            from .stores import builtin

            pm.register(builtin, name="ml_dash.builtin")
            if not disabled():
                _load_entry_points(pm)
            _manager = pm
        return _manager


def _load_entry_points(pm: PluginManager) -> None:
    from importlib.metadata import entry_points

    try:
        eps = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as e:  # a broken installation must not stop training
        console.warn(f"could not list the {ENTRY_POINT_GROUP!r} plugins: {type(e).__name__}: {e}")
        return
    for ep in eps:
        dist = getattr(getattr(ep, "dist", None), "name", None)
        what = f"plugin {ep.name!r} ({ep.value}" + (f", from {dist}" if dist else "") + ")"
        if pm.has_plugin(ep.name):
            console.warn(f"{what} is skipped: another plugin is already registered as {ep.name!r}")
            continue
        try:
            plugin = ep.load()
        except Exception as e:
            console.warn(f"{what} failed to load and is skipped: {type(e).__name__}: {e}")
            continue
        _register_checked(pm, plugin, ep.name, what)


def _register_checked(pm: PluginManager, plugin: Any, name: str | None, what: str | None = None) -> str | None:
    """Register ``plugin``; warn (never raise) when it is refused, and report hooks that have no spec."""
    what = what or f"plugin {name or pm.get_canonical_name(plugin)!r}"
    try:
        registered = pm.register(plugin, name=name)
    except Exception as e:  # PluginValidationError (bad signature), ValueError (name taken), ...
        console.warn(f"{what} is skipped: {type(e).__name__}: {e}")
        return None
    unknown = sorted(h.name for h in pm.get_hookcallers(plugin) or [] if not h.has_spec())
    if unknown:
        console.warn(f"{what} implements hooks that do not exist and are never called: {', '.join(unknown)} "
                     f"(the hooks are: {', '.join(HOOK_NAMES)})")
    return registered


def register(plugin: Any, name: str | None = None) -> str | None:
    """Register a plugin (a module or an object with ``ml_dash_*`` functions) in code.

    Returns its name, or None when it was refused (a warning says why). Builds the manager, which loads the
    installed plugins first unless ``ML_DASH_DISABLE_PLUGINS=1``.
    """
    return _register_checked(manager(), plugin, name)


def unregister(plugin: Any = None, name: str | None = None) -> Any:
    """Remove a plugin registered with `register` (by object or by name)."""
    pm = manager()
    if plugin is not None and not pm.is_registered(plugin):
        return None
    if plugin is None and (name is None or not pm.has_plugin(name)):
        return None
    return pm.unregister(plugin, name=name)


def implementations(hook_name: str) -> list[Any]:
    """The hook's implementations in call order (pluggy's: last registered first, tryfirst/trylast honoured)."""
    caller = getattr(manager().hook, hook_name, None)
    return list(reversed(caller.get_hookimpls())) if caller is not None else []


def find_store(destination: str, experiment: Any) -> Any:
    """The first store an ``ml_dash_store`` implementation returns for ``destination``.

    A plugin that raises is reported by name and the next one is asked; ValueError (a destination its owner
    recognises but cannot use) and no taker at all are errors. When only broken plugins were left, the store is
    skipped with a warning (None): its data stays in the local files for a later ``ml-dash sync``.
    """
    if not isinstance(destination, str) or not destination:
        raise ValueError(f"a store destination must be a non-empty string, got {destination!r}")
    kw = {"destination": destination, "experiment": experiment}
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
            console.warn(f"plugin {impl.plugin_name!r} failed to make a store for {destination!r} and is skipped: "
                         f"{type(e).__name__}: {e}")
            continue
        if store is not None:
            return store
    if broken:
        console.warn(f"no store for {destination!r}: the run goes on without it; its data stays in "
                     f"{getattr(experiment, 'folder', 'the local .dash folder')}")
        return None
    raise ValueError(f"no store handles destination {destination!r}: give an http(s):// URL, a folder path or "
                     "file:// URL, or the name of an installed store plugin (ML_DASH_DISABLE_PLUGINS=1 turns those off)")


_hook_warned: set[tuple[str, str, str]] = set()


def call_hook(name: str, **kw: Any) -> None:
    """Call every implementation of lifecycle hook ``name``; one that raises is reported (once) and the others
    still run. Never raises into training."""
    try:
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


def _reset() -> None:
    """Forget the manager (tests; a fresh one is built on next use, re-reading the environment)."""
    global _manager
    with _lock:
        _manager = None


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it at fork


os.register_at_fork(after_in_child=_after_fork_in_child)
