"""What ``columns()`` returns: numpy arrays per field, in the order ``read()`` gives the rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .colcache import ORDER_FIELD, Snapshot

FIRST = {"metrics": ("index", "_ts"), "tracks": ("timestamp",),
         "logs": ("sequenceNumber", "timestamp", "level", "message", "metadata")}
INT_FIELDS = {"metrics": ("index",), "tracks": (), "logs": ("sequenceNumber",)}


class Columns(dict):  # type: ignore[type-arg]
    """Field name -> numpy array, one entry per row.

    Numeric fields are float64 with NaN where a row lacks the field (bools as 1.0/0.0); a metric's ``index`` and
    a log's ``sequenceNumber`` are int64. Fields holding strings or lists are object arrays (None where absent):
    for metrics and tracks they are left out unless named in ``fields=`` and listed in ``other``; for logs
    (``level``, ``message``, ``metadata``) they are included. A log's ``timestamp`` is unix seconds (float64).
    The arrays may share memory with the column cache and are then read-only: ``.copy()`` one to change it.
    """

    def __init__(self, data: dict[str, np.ndarray], other: dict[str, np.ndarray], rows: int, kind: str) -> None:
        super().__init__(data)
        self.other = other
        self.rows = rows
        self.kind = kind

    def to_pandas(self) -> Any:
        """A pandas DataFrame of every column (numeric ones and ``other``). Needs pandas."""
        pd = import_pandas()
        cols = dict(self)
        for k, v in self.other.items():
            cols.setdefault(k, v)
        return pd.DataFrame(cols, index=pd.RangeIndex(self.rows)) if cols else pd.DataFrame(index=pd.RangeIndex(0))

    def __repr__(self) -> str:
        return f"Columns({self.kind}, rows={self.rows}, fields={list(self)}" + (
            f", other={list(self.other)})" if self.other else ")")


def import_pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("to_pandas() needs pandas, which is not installed: pip install pandas "
                          "(columns() gives the same data as numpy arrays)") from None
    return pd


def _normalise_fields(fields: str | Iterable[str] | None) -> list[str] | None:
    if fields is None:
        return None
    if isinstance(fields, str):
        return [fields]
    out = list(fields)
    for f in out:
        if not isinstance(f, str):
            raise TypeError(f"field names must be strings, got {f!r}")
    return out


def build(snap: Snapshot, fields: str | Iterable[str] | None, what: str) -> Columns:
    """Shape a snapshot of a stream's columns the way ``read()`` orders rows."""
    want = _normalise_fields(fields)
    kind = snap.kind
    n = snap.n
    num: dict[str, np.ndarray] = dict(snap.num)
    other: dict[str, np.ndarray] = {}
    for k, tv in snap.text.items():
        arr = np.full(n, None, dtype=object)
        col = num.pop(k, None)
        if col is not None:
            present = np.flatnonzero(~np.isnan(col))
            arr[present] = col[present].tolist()
        for r, v in tv.items():
            arr[r] = v
        other[k] = arr
    if kind == "tracks":
        n, num, other = _merge_same_timestamp(n, num, other)
    else:
        num.update(snap.ints)  # the order field as int64, when every row has one
        key = num.get(ORDER_FIELD[kind])
        if key is not None and n > 1 and not snap.ordered:
            fkey = key.astype(np.float64)
            perm = np.argsort(np.where(np.isnan(fkey), 0, fkey), kind="stable")  # rows lacking it sort as 0
            num = {k: v[perm] for k, v in num.items()}
            other = {k: v[perm] for k, v in other.items()}
    if n == 0:  # nothing written yet: the fields every row has, empty
        for k in FIRST[kind]:
            num.setdefault(k, np.empty(0, dtype=np.int64 if k in INT_FIELDS[kind] else np.float64))
    order = [k for k in FIRST[kind] if k in num or k in other]
    order += sorted(k for k in list(num) + list(other) if k not in order)
    if want is None:
        main = {k: num[k] for k in order if k in num}
        if kind == "logs":
            main = {k: num[k] if k in num else other[k] for k in order}
            other = {}
        return Columns(main, {k: other[k] for k in order if k in other}, n, kind)
    main = {}
    for f in want:
        if f in num:
            main[f] = num[f]
        elif f in other:
            main[f] = other[f]
        elif n == 0:
            main[f] = np.empty(0)
        else:
            known = ", ".join(order) or "none"
            raise KeyError(f"{what} has no field {f!r} (its fields: {known})")
    return Columns(main, {}, n, kind)


def _merge_same_timestamp(n: int, num: dict[str, np.ndarray], other: dict[str, np.ndarray]
                          ) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Consecutive track entries sharing a timestamp are one entry (later values win), as ``read()`` gives them."""
    ts = num.get("timestamp")
    if ts is None or n < 2:
        return n, num, other
    starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
    if len(starts) == n:
        return n, num, other
    rows = np.arange(n)
    out: dict[str, np.ndarray] = {}
    for k, v in num.items():
        last = np.maximum.reduceat(np.where(np.isnan(v), -1, rows), starts)
        out[k] = np.where(last >= 0, v[np.maximum(last, 0)], np.nan)
    out_other: dict[str, np.ndarray] = {}
    bounds = list(starts) + [n]
    for k, arr in other.items():
        merged = np.full(len(starts), None, dtype=object)
        for g in range(len(starts)):
            for r in range(bounds[g], bounds[g + 1]):
                if arr[r] is not None:
                    merged[g] = arr[r]
        out_other[k] = merged
    return len(starts), out, out_other


# ---- the binary form the server's column routes answer with ``?format=binary`` -------------------------------
BINARY_TYPE = "application/x-ml-dash-columns"


def pack(cols: Columns, fields: list[str] | None = None) -> bytes:
    """``cols`` as bytes: a 4-byte little-endian header length, a JSON header (rows, kind, and per column its
    name with either the dtype and byte count of its raw little-endian array, or its values when it holds
    objects), then the arrays. Exact (NaN, infinities and every bit kept) and about 8 bytes per value."""
    import json

    names = list(cols) if fields is None else fields
    missing = [f for f in names if f not in cols and f not in cols.other]
    if missing:
        raise KeyError(f"no field(s) {', '.join(map(repr, missing))}; fields: {', '.join(cols)}")
    head: list[dict[str, Any]] = []
    blobs: list[memoryview] = []
    for f in names:
        arr = cols[f] if f in cols else cols.other[f]
        if arr.dtype == object:
            head.append({"name": f, "values": arr.tolist(), "other": f not in cols})
        else:
            a = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
            head.append({"name": f, "dtype": a.dtype.str, "nbytes": a.nbytes})
            blobs.append(memoryview(a).cast("B"))  # type: ignore[arg-type]  # (joined below: one copy)
    if fields is None:
        head += [{"name": f, "values": v.tolist(), "other": True} for f, v in cols.other.items() if f not in names]
    text = json.dumps({"rows": int(cols.rows), "kind": cols.kind, "columns": head}, allow_nan=True,
                      separators=(",", ":"), default=str).encode()
    return len(text).to_bytes(4, "little") + text + b"".join(blobs)


def unpack(data: bytes) -> Columns:
    """The `Columns` that `pack` wrote."""
    import json

    n = int.from_bytes(data[:4], "little")
    head = json.loads(data[4 : 4 + n])
    pos = 4 + n
    main: dict[str, np.ndarray] = {}
    other: dict[str, np.ndarray] = {}
    for c in head["columns"]:
        if "values" in c:
            arr = np.empty(len(c["values"]), dtype=object)
            arr[:] = c["values"]
            (other if c.get("other") else main)[c["name"]] = arr
        else:
            main[c["name"]] = np.frombuffer(data, dtype=np.dtype(c["dtype"]), count=c["nbytes"] // np.dtype(
                c["dtype"]).itemsize, offset=pos)
            pos += c["nbytes"]
    return Columns(main, other, int(head["rows"]), str(head["kind"]))
