"""Plugins (pluggy): hook specs, lazy discovery from the ``ml_dash`` entry-point group, in-code registration.

Nothing here runs at ``import ml_dash``: the manager is built on first use (an experiment with stores or hooks).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pluggy

from . import console

hookspec = pluggy.HookspecMarker("ml_dash")
hookimpl = pluggy.HookimplMarker("ml_dash")
ENTRY_POINT_GROUP = "ml_dash"


class HookSpecs:
    @hookspec(firstresult=True)
    def ml_dash_store(self, destination: str, experiment: Any) -> Any:
        """Return a `ml_dash.stores.Store` for ``destination`` (a URL or a name), or None if not yours."""

    @hookspec
    def ml_dash_experiment_started(self, experiment: Any) -> None:
        """An experiment was started (or re-opened)."""

    @hookspec
    def ml_dash_experiment_flushed(self, experiment: Any, counts: dict[str, int]) -> None:
        """``experiment.flush()`` returned; ``counts`` are records written so far by kind."""

    @hookspec
    def ml_dash_experiment_finished(self, experiment: Any, status: str) -> None:
        """The experiment was closed with ``status``."""

    @hookspec
    def ml_dash_store_error(self, experiment: Any, store: Any, error: BaseException) -> None:
        """A store failed on a batch (it will be retried, or quarantined for a PermanentError)."""


_manager: pluggy.PluginManager | None = None
_lock = threading.Lock()


def manager() -> pluggy.PluginManager:
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager("ml_dash")
            pm.add_hookspecs(HookSpecs)
            from .stores import builtin

            pm.register(builtin, name="ml_dash.builtin")
            if os.environ.get("ML_DASH_DISABLE_PLUGINS", "").strip().lower() not in ("1", "true", "yes", "on"):
                _load_entry_points(pm)
            _manager = pm
        return _manager


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as e:
            console.warn(f"plugin {ep.name!r} ({ep.value}) failed to load and is skipped: {type(e).__name__}: {e}")
            continue
        _register_checked(pm, plugin, ep.name)


def _register_checked(pm: pluggy.PluginManager, plugin: Any, name: str | None) -> bool:
    try:
        pm.register(plugin, name=name)
    except Exception as e:
        console.warn(f"plugin {name!r} is skipped: {type(e).__name__}: {e}")
        return False
    unknown = [h.name for h in pm.get_hookcallers(plugin) or [] if not h.has_spec()] if hasattr(pm, "get_hookcallers") else []
    for attr in dir(plugin):
        if attr.startswith("ml_dash_") and not hasattr(HookSpecs, attr) and attr not in unknown:
            unknown.append(attr)
    if unknown:
        console.warn(f"plugin {name!r} implements hooks that do not exist: {', '.join(sorted(unknown))} "
                     f"(known: {', '.join(n for n in dir(HookSpecs) if n.startswith('ml_dash_'))})")
    return True


def register(plugin: Any, name: str | None = None) -> None:
    """Register a plugin object or module in code (for stores and hooks that are not installed packages)."""
    _register_checked(manager(), plugin, name)


def unregister(plugin: Any = None, name: str | None = None) -> None:
    manager().unregister(plugin, name=name)
