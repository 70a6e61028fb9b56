"""Turning user values into JSON-ready values at the call site (cheap for plain Python types)."""

from __future__ import annotations

import sys
import time
from typing import Any

PLAIN = frozenset({float, int, str, bool, type(None)})
NUMERIC = frozenset({float, int, bool, type(None)})  # the hot path: no size check needed
MAX_STR = 1 << 20  # 1 Mi characters in one value
MAX_ITEMS = 100_000  # elements in one list/dict value


class Deferred:
    """A device value captured at call time and turned into a Python value on the worker thread.

    For a CUDA tensor the capture is an asynchronous copy into pinned host memory, queued on the tensor's current
    stream, plus an event recorded after it: nothing on the caller's thread waits for the GPU, and the value is the
    value at call time even when the tensor is changed in place right after the call (that change is queued after
    the copy). The worker polls the event (``query()`` never blocks) and reads the host copy once it is done.
    Other devices get a ``clone()`` on their queue, read with ``item()``/``tolist()`` on the worker. ``tree`` holds a
    list or dict with Deferred values inside (a list of CUDA scalars), resolved element by element.
    """

    __slots__ = ("tensor", "event", "tree")

    def __init__(self, tensor: Any, event: Any = None, tree: Any = None) -> None:
        self.tensor = tensor
        self.event = event
        self.tree = tree

    def resolve(self) -> Any:
        if self.tree is not None:
            return _resolve_tree(self.tree)
        ev = self.event
        if ev is not None:
            deadline = time.monotonic() + DEVICE_WAIT
            while not ev.query():  # never cudaEventSynchronize: the worker must not stall on a busy GPU either
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the device did not finish the copy within {DEVICE_WAIT:.0f} s")
                time.sleep(0.0005)
        t = self.tensor
        if t.numel() == 1:
            return t.item()
        return t.tolist()


DEVICE_WAIT = 120.0  # seconds the worker waits for a device copy before recording the value as an error


def _resolve_tree(v: Any) -> Any:
    if type(v) is Deferred:
        return v.resolve()
    if type(v) is list:
        return [_resolve_tree(x) for x in v]
    if type(v) is dict:
        return {k: _resolve_tree(x) for k, x in v.items()}
    return v


def _has_deferred(v: Any) -> bool:
    if type(v) is Deferred:
        return True
    if type(v) is list:
        return any(_has_deferred(x) for x in v)
    if type(v) is dict:
        return any(_has_deferred(x) for x in v.values())
    return False


def _device_snapshot(v: Any) -> Deferred:
    """Capture a non-CPU tensor without synchronising the caller with its device."""
    t = v.detach()
    if t.device.type == "cuda":
        torch = sys.modules["torch"]
        try:
            host = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
        except RuntimeError:  # no pinned memory to be had: a device-side clone is still asynchronous
            return Deferred(t.clone())
        stream = torch.cuda.current_stream(t.device)
        host.copy_(t, non_blocking=True)  # D2H into pinned memory: queued on the stream, no wait
        event = torch.cuda.Event()
        event.record(stream)
        return Deferred(host, event)
    return Deferred(t.clone())  # clone() is queued on the device, so later in-place changes don't reach it


def _tensor(v: Any, field: str) -> Any:
    if v.is_complex():  # a dtype check, no device access
        raise TypeError(f"field {field!r}: complex tensor values cannot be recorded (log .real and .imag)")
    if v.device.type != "cpu":
        # no .item() here: that would synchronise the device with the caller's thread.
        if v.numel() > MAX_ITEMS:
            raise ValueError(f"field {field!r}: tensor with {v.numel()} elements is too large for a record")
        return _device_snapshot(v)
    if v.numel() == 1:
        return v.item()
    if v.numel() > MAX_ITEMS:
        raise ValueError(f"field {field!r}: tensor with {v.numel()} elements is too large for a record")
    return v.tolist()


def convert(v: Any, field: str) -> Any:
    """Return a JSON-ready (or Deferred) value, or raise TypeError/ValueError naming ``field``."""
    t = type(v)
    if t in PLAIN:
        if t is str and len(v) > MAX_STR:
            raise ValueError(f"field {field!r}: string of {len(v)} characters is too long (max {MAX_STR})")
        return v
    mod = t.__module__
    if mod == "torch" and hasattr(v, "numel"):
        return _tensor(v, field)
    if mod == "numpy":
        if hasattr(v, "ndim") and getattr(v, "ndim", 0) > 0:
            if v.size > MAX_ITEMS:
                raise ValueError(f"field {field!r}: array with {v.size} elements is too large for a record")
            return convert(v.tolist(), field)
        if hasattr(v, "item"):
            item = v.item()
            if item is v or type(item).__module__ == "numpy":
                raise TypeError(f"field {field!r}: numpy value of dtype {getattr(v, 'dtype', '?')} cannot be recorded")
            return convert(item, field)
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return convert(str(v), field)
    if isinstance(v, (list, tuple)):
        if len(v) > MAX_ITEMS:
            raise ValueError(f"field {field!r}: list of {len(v)} items is too large for a record")
        items = [convert(x, field) for x in v]
        return Deferred(None, tree=items) if any(_has_deferred(x) for x in items) else items
    if isinstance(v, dict):
        if len(v) > MAX_ITEMS:
            raise ValueError(f"field {field!r}: dict of {len(v)} items is too large for a record")
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"field {field!r}: dict key {k!r} is not a string")
            out[k] = convert(x, f"{field}.{k}")
        return Deferred(None, tree=out) if any(_has_deferred(x) for x in out.values()) else out
    if hasattr(v, "item") and hasattr(v, "dtype"):  # other array libraries' scalars (jax, ...)
        try:
            return convert(v.item(), field)
        except Exception:
            pass
    raise TypeError(
        f"field {field!r}: value of type {t.__module__}.{t.__qualname__} cannot be recorded "
        "(use numbers, strings, bools, None, lists/dicts of them, numpy or torch scalars)"
    )


def convert_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Convert in place (the dict is the caller's fresh **kwargs) and return it."""
    for k, v in fields.items():
        if type(v) not in PLAIN or (type(v) is str and len(v) > MAX_STR):
            fields[k] = convert(v, k)
    return fields


def resolve_row(row: dict[str, Any]) -> None:
    """Replace the Deferred values of a row (on the worker thread); a failed one becomes None plus `_errors`."""
    for k, v in list(row.items()):
        if type(v) is Deferred:
            try:
                row[k] = v.resolve()
            except Exception as e:  # a broken device value must not lose the rest of the row
                row[k] = None
                row.setdefault("_errors", {})[k] = repr(e)


def flatten(d: dict[str, Any], prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Flatten nested dicts with dots; keys must be strings. Values are converted."""
    if out is None:
        out = {}
    for k, v in d.items():
        if not isinstance(k, str):
            raise TypeError(f"parameter key {k!r} under {prefix.rstrip('.') or 'the top level'} is not a string")
        if not k:
            raise ValueError(f"empty parameter key under {prefix.rstrip('.') or 'the top level'}")
        key = prefix + k
        if isinstance(v, dict):
            if v:
                flatten(v, key + ".", out)
            else:
                out[key] = {}
        else:
            out[key] = convert(v, key)  # a device value stays Deferred: the worker resolves it
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten`: dotted keys become nested dicts."""
    out: dict[str, Any] = {}
    for key, v in flat.items():
        cur = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = cur.get(p)
            if not isinstance(nxt, dict):
                nxt = cur[p] = {}
            cur = nxt
        cur[parts[-1]] = v
    return out
