"""Turning user values into JSON-ready values at the call site (cheap for plain Python types)."""

from __future__ import annotations

from typing import Any

PLAIN = frozenset({float, int, str, bool, type(None)})
NUMERIC = frozenset({float, int, bool, type(None)})  # the hot path: no size check needed
MAX_STR = 1 << 20  # 1 Mi characters in one value
MAX_ITEMS = 100_000  # elements in one list/dict value


class Deferred:
    """A device tensor snapshot (cloned at call time) converted to a Python value on the worker thread."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor

    def resolve(self) -> Any:
        t = self.tensor
        if t.numel() == 1:
            v = t.item()
        else:
            v = t.tolist()
        return v


def _tensor(v: Any, field: str) -> Any:
    if v.device.type != "cpu":
        # no .item() here: that would synchronise the GPU on the caller's thread. clone() is queued on the
        # current stream, so the value is the value at call time even if v is changed in place later.
        if v.numel() > MAX_ITEMS:
            raise ValueError(f"field {field!r}: tensor with {v.numel()} elements is too large for a record")
        return Deferred(v.detach().clone())
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
        return [convert(x, field) for x in v]
    if isinstance(v, dict):
        if len(v) > MAX_ITEMS:
            raise ValueError(f"field {field!r}: dict of {len(v)} items is too large for a record")
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"field {field!r}: dict key {k!r} is not a string")
            out[k] = convert(x, f"{field}.{k}")
        return out
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
    for k, v in row.items():
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
            v = convert(v, key)
            if isinstance(v, Deferred):
                v = v.resolve()
            out[key] = v
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
