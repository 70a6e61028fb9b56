"""Built-in store plugin: ``http://`` / ``https://`` destinations are the remote ml-dash server."""

from __future__ import annotations

from typing import Any

from ..plugins import hookimpl


@hookimpl(trylast=True)
def ml_dash_store(destination: str, experiment: Any) -> Any:
    if destination.startswith(("http://", "https://")):
        from .remote import RemoteStore

        return RemoteStore(destination, experiment.prefix, config=experiment.config)
    return None
