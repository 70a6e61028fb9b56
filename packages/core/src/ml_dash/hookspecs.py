"""The plugin contract: the hooks a plugin may implement, and the markers. This is the file plugin authors read.

A plugin is a module or object whose ``ml_dash_*`` functions implement the specs in `HookSpecs`; the
``@hookimpl`` marker is optional (use it for ``tryfirst``/``trylast``). Every argument is passed by name and an
implementation may take fewer than the spec lists. Registration and discovery are in `ml_dash.plugins`; the store
interface a ``ml_dash_store`` implementation returns is `ml_dash.stores.Store`. See docs/plugins.md.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "ml_dash"
ENTRY_POINT_GROUP = "ml_dash"
HOOK_PREFIX = "ml_dash_"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HookSpecs:
    """The hooks a plugin may implement. Every argument is passed by name; an implementation may take fewer."""

    @hookspec(firstresult=True)
    def ml_dash_store(self, destination: str, experiment: Any) -> Any:
        """Return an `ml_dash.stores.Store` for ``destination`` (a URL or a name), or None if it is not yours.

        Called once per destination when the experiment starts (``Experiment(stores=[...])``, ``dash_url=``).
        Raise ValueError for a destination you own that is unusable (it stops the start with that message).
        """

    @hookspec
    def ml_dash_experiment_started(self, experiment: Any) -> None:
        """``exp.run.start()`` (or ``with exp.run``) opened the experiment, or re-opened it."""

    @hookspec
    def ml_dash_experiment_flushed(self, experiment: Any, counts: dict[str, int]) -> None:
        """``experiment.flush()`` returned; ``counts`` are records written so far by kind (logs, metrics, ...)."""

    @hookspec
    def ml_dash_experiment_finished(self, experiment: Any, status: str) -> None:
        """The experiment was closed with ``status`` (COMPLETED, FAILED, CANCELLED)."""

    @hookspec
    def ml_dash_store_error(self, experiment: Any, store: Any, error: BaseException) -> None:
        """A store failed on a batch (it is retried, or quarantined for a PermanentError). Store worker thread."""


HOOK_NAMES = tuple(n for n in vars(HookSpecs) if n.startswith(HOOK_PREFIX))
