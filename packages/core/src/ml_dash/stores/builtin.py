"""Built-in store plugin: ``http://`` / ``https://`` destinations are the remote ml-dash server; ``file://`` URLs
and folder paths are a mirror into another `.dash` root (stores/mirror.py)."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


@hookimpl(trylast=True)
def ml_dash_store(destination: str, experiment: Any) -> Any:
    if destination.startswith(("http://", "https://")):
        from .remote import RemoteStore

        return RemoteStore(destination, experiment.prefix, config=experiment.config, folder=experiment.folder)
    # file:// URLs and folder paths: a mirror into another .dash root (None for anything else)
    from .mirror import make as make_mirror

    mirror = make_mirror(destination, experiment)
    if mirror is not None:
        return mirror
    return None
