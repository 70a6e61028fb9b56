"""Checkpoint helpers that do not depend on which Lightning namespace is in use."""

from __future__ import annotations

import os
from typing import Any

# -- checkpoints -------------------------------------------------------------------------------------------


def checkpoint_files(cb: Any, which: str) -> tuple[list[tuple[str, str]], bool]:
    """(path, tag) pairs of checkpoint files of a ModelCheckpoint (or a weak proxy of one), and whether they are
    known to be freshly written.

    ``which="saved"``: the file the callback has just written (Lightning keeps it in ``_last_checkpoint_saved``;
    without that attribute: every file it keeps, to be compared with what was stored before).
    ``which="end"``: the best and the last checkpoint.
    """
    best = getattr(cb, "best_model_path", None) or None
    last = getattr(cb, "last_model_path", None) or None

    def tag(path: str) -> str:
        return "best" if path == best else "last" if path == last else "top_k"

    if which == "saved":
        just = getattr(cb, "_last_checkpoint_saved", None)
        if isinstance(just, (str, os.PathLike)) and os.fspath(just):
            return [(os.fspath(just), tag(os.fspath(just)))], True
    found: dict[str, str] = {}
    candidates = [best, last]
    if which == "saved":
        candidates += list(dict(getattr(cb, "best_k_models", None) or {}))
    for path in candidates:
        if isinstance(path, (str, os.PathLike)) and os.fspath(path):
            found.setdefault(os.fspath(path), tag(os.fspath(path)))
    return list(found.items()), False


def file_key(path: str) -> tuple[str, int, int, int] | None:
    """Identity of a file's current content (real path, inode, mtime, size), or None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_ino, st.st_mtime_ns, st.st_size)


def score_of(cb: Any) -> float | None:
    score = getattr(cb, "best_model_score", None)
    if score is None:
        return None
    try:
        return float(score)
    except Exception:
        return None
