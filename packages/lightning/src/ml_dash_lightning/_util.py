"""Helpers that do not depend on which Lightning namespace is in use."""

from __future__ import annotations

import dataclasses
import enum
import itertools
import os
import re
import sys
import time
from argparse import Namespace
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

SPLITS = ("train", "val", "eval", "test", "predict")
RESERVED_FIELDS = ("step", "epoch")
_MAX_REPR = 1000
_MAX_LIST = 1000


def split_key(key: str) -> tuple[str, str]:
    """Map a Lightning metric key to (stream, field) by the contract's rule.

    ``train_loss``/``train/loss`` -> (train, loss), ``val_acc`` -> (val, acc), ``loss`` -> (train, loss).
    A field that would be ``step`` or ``epoch`` keeps its whole key so it cannot overwrite the row's own ones.
    """
    for sep in ("_", "/"):
        head, s, tail = key.partition(sep)
        if s and tail and head in SPLITS:
            if tail in RESERVED_FIELDS:
                return head, key
            return head, tail
    return "train", key


# -- hyperparameters ---------------------------------------------------------------------------------------


def _is_container(v: Any) -> bool:
    return isinstance(v, (Mapping, Namespace)) or (dataclasses.is_dataclass(v) and not isinstance(v, type))


def _items(v: Any) -> list[tuple[Any, Any]]:
    if isinstance(v, Namespace):
        return list(vars(v).items())
    if isinstance(v, Mapping):
        return list(v.items())
    return [(f.name, getattr(v, f.name)) for f in dataclasses.fields(v)]


def _leaf(v: Any) -> Any:
    """A JSON-ready value for one hyperparameter (converted once, off the hot path)."""
    if v is None or type(v) in (bool, int, float, str):
        return v
    if isinstance(v, enum.Enum):
        return _leaf(v.value) if isinstance(v.value, (bool, int, float, str)) else v.name
    if isinstance(v, (bool, int, float, str)):  # numpy.float64, IntFlag, str subclasses, ...
        return _plain(v)
    if isinstance(v, PurePath):
        return str(v)
    if isinstance(v, type):
        return f"{v.__module__}.{v.__qualname__}"
    mod = type(v).__module__.split(".")[0]
    if mod in ("torch", "numpy", "jax", "jaxlib") and hasattr(v, "tolist"):
        size = getattr(v, "numel", None)
        n = size() if callable(size) else getattr(v, "size", 0)
        if isinstance(n, int) and n <= _MAX_LIST:
            try:
                out = v.tolist()
                return out if not isinstance(out, list) else [_leaf(x) for x in out]
            except Exception:
                pass
        return f"<{type(v).__name__} shape={tuple(getattr(v, 'shape', ()))} dtype={getattr(v, 'dtype', '?')}>"
    if _is_container(v):
        return {str(k): _leaf(x) for k, x in _items(v)}
    if isinstance(v, (list, tuple, set, frozenset)):
        seq = list(v)
        if isinstance(v, (set, frozenset)):
            try:
                seq = sorted(seq)
            except TypeError:
                seq = sorted(seq, key=repr)
        return [_leaf(x) for x in seq[:_MAX_LIST]]
    if callable(v):
        name = getattr(v, "__qualname__", None) or getattr(v, "__name__", None)
        if name:
            return f"{getattr(v, '__module__', '') or ''}.{name}".lstrip(".")
    text = repr(v)
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + "..."


def _plain(v: Any) -> Any:
    # subclasses of the plain types (IntEnum handled above, numpy.float64 is a float subclass, ...)
    for t in (bool, int, float, str):
        if isinstance(v, t):
            return t(v)
    return v


def flatten_params(params: Any) -> dict[str, Any]:
    """Flatten a dict / Namespace / dataclass (nested freely) into ``{"a.b": value}`` with JSON-ready values."""
    if params is None:
        return {}
    if not _is_container(params):
        raise TypeError(
            f"log_hyperparams expects a dict, argparse.Namespace or dataclass instance, got {type(params).__name__}"
        )
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for k, v in _items(obj):
            key = prefix + str(k)
            if _is_container(v):
                if _items(v):
                    walk(v, key + ".")
                else:
                    out[key] = {}
            else:
                out[key] = _leaf(v)

    walk(params, "")
    return out


# -- names -------------------------------------------------------------------------------------------------

_counter = itertools.count(1)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def script_project() -> str:
    """The project part of an automatic prefix: the running script's file name, else 'lightning'."""
    arg0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    stem = os.path.splitext(os.path.basename(arg0))[0]
    if not stem or stem in ("-c", "-m", "-", "__main__", "ipykernel_launcher") or stem.startswith("pytest"):
        return "lightning"
    return _UNSAFE.sub("-", stem).strip(".-") or "lightning"


def auto_prefix(root: str) -> str:
    """``<script>/<YYYYmmdd-HHMMSS>-<n>``, with n counting up in this process until the folder is unused."""
    project = script_project()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        name = f"{stamp}-{next(_counter)}"
        if not os.path.exists(os.path.join(root, project, name)):
            return f"{project}/{name}"


def resolve_root(dash_root: Any) -> str:
    root = dash_root if dash_root is not None else (os.environ.get("ML_DASH_ROOT") or ".dash")
    return os.path.abspath(os.fspath(root))


def root_of(folder: str | os.PathLike[str], prefix: str) -> str:
    """The dash root of an experiment folder ``<root>/<prefix>``."""
    path = os.path.abspath(os.fspath(folder))
    for _ in prefix.split("/"):
        path = os.path.dirname(path)
    return path


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
