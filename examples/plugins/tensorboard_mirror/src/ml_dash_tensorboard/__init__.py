"""ml-dash plugin: ``Experiment(..., stores=["tensorboard"])`` mirrors every metric row into TensorBoard events.

This module is what the ``ml_dash`` entry point names, so it stays light: TensorBoard is imported only when a
store is made (`store.py`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ml_dash.plugins import hookimpl

NAME = "tensorboard"
ENV_DIR = "ML_DASH_TENSORBOARD_DIR"

__all__ = ["ml_dash_store", "logdir_root"]


def logdir_root(destination: str, dash_root: Path) -> Path | None:
    """The TensorBoard root folder for a destination this plugin owns, or None for anybody else's."""
    if destination == NAME:
        env = os.environ.get(ENV_DIR)
        return Path(env).expanduser() if env else Path(dash_root).parent / "runs"
    if destination.startswith(NAME + ":"):
        rest = destination[len(NAME) + 1 :]
        if rest.startswith("//"):
            rest = rest[2:]
        if not rest:
            raise ValueError(f"store destination {destination!r} names no folder")
        return Path(rest).expanduser()
    return None


@hookimpl
def ml_dash_store(destination: str, experiment: Any) -> Any:
    root = logdir_root(destination, experiment.dash_root)
    if root is None:
        return None
    from .store import TensorBoardStore

    return TensorBoardStore(root.joinpath(*experiment.prefix.split("/")))
