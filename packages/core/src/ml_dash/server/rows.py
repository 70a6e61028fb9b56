"""One append's rows past its source's mark: renumbered, and formatted as the lines the stream stores.

`keep_indexed` is what both engines call. A metric batch in the shape clients send (every record
``{"index", "data"[, "createdAt"]}``, source indices contiguous) is renumbered by arithmetic and formatted a chunk
at a time in a few C passes: one orjson call for all the chunk's data objects, one for their ``createdAt`` texts,
one %-format for all its lines (`layout.METRIC_LINE`), never a Python step per row. Any other batch (gaps,
duplicates, unsorted, other fields, a value orjson would not write as the standard encoder does) goes row by row
through `backend.renumber` and `jsonio.join_lines`. Both give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import itemgetter, methodcaller
from typing import Any

from orjson import OPT_PASSTHROUGH_DATACLASS, OPT_PASSTHROUGH_DATETIME
from orjson import dumps as _dumps

from ..jsonio import iso, join_lines, now_iso
from ..layout import METRIC_LINE
from .backend import renumber

CHUNK = 4096  # rows formatted at a time: one pass each, and a large body's text never held whole

_OPT = OPT_PASSTHROUGH_DATACLASS | OPT_PASSTHROUGH_DATETIME  # as `jsonio.join_lines` writes a row

_INDEX = itemgetter("index")
_DATA = itemgetter("data")
_CREATED = itemgetter("createdAt")
_SENT = ("index", "data", "createdAt")  # a record as a client's journal holds it
_BARE = ("index", "data")  # createdAt left to the server (from data._ts)


class Kept:
    """The rows an append keeps: ``count`` of them, the source's new ``mark``, the stream's ``next`` index, and
    `chunks` formatting them. ``first``: the stream index of the first kept row."""

    def __init__(self, first: int, count: int, mark: int, nxt: int) -> None:
        self.first, self.count, self.mark, self.next = first, count, mark, nxt

    def chunks(self, head: bytes = b"") -> Iterator[bytes]:
        """The rows' lines, ``CHUNK`` rows at a time; ``head``: a prefix for each line with two ``%d``, the row's
        stream index and its source position (a COPY's leading columns)."""
        return iter(())


class _Rows(Kept):
    """Rows renumbered one by one (`backend.renumber`): [(source position, record)]."""

    def __init__(self, first: int, rows: list[tuple[int, dict[str, Any]]], mark: int, nxt: int) -> None:
        super().__init__(first, len(rows), mark, nxt)
        self.rows = rows

    def chunks(self, head: bytes = b"") -> Iterator[bytes]:
        for k in range(0, len(self.rows), CHUNK):
            part = self.rows[k:k + CHUNK]

            def line(j: int, text: bytes, part: list[tuple[int, dict[str, Any]]] = part,
                     base: int = self.first + k) -> bytes:  # renumber numbers the kept rows from ``first`` on
                return (head % (base + j, part[j][0]) if head else b"") + text + b"\n"

            yield join_lines([r for _, r in part], line)


class _Run(Kept):
    """Metric records whose source indices run contiguously from ``src``, renumbered from ``first``."""

    def __init__(self, recs: list[dict[str, Any]], src: int, first: int, mark: int, sent: bool) -> None:
        super().__init__(first, len(recs), mark, first + len(recs))
        self.recs, self.src, self.sent = recs, src, sent

    def _created(self, part: list[dict[str, Any]]) -> list[str]:
        if self.sent:
            return list(map(_CREATED, part))
        now = None
        out = []
        for d in map(_DATA, part):  # as `backend.renumber`: the row's own call time, else when it arrived
            ts = d.get("_ts")
            if isinstance(ts, (int, float)) and 0 < ts < 1e11:
                out.append(iso(ts))
            else:
                out.append(now := now or now_iso())
        return out

    def chunks(self, head: bytes = b"") -> Iterator[bytes]:
        for k in range(0, len(self.recs), CHUNK):
            part = self.recs[k:k + CHUNK]
            first, src, m = self.first + k, self.src + k, len(part)
            line, stamps = METRIC_LINE, None if self.sent else _stamps(part)
            if stamps is not None:  # createdAt from each row's _ts, formatted by the %-format below
                line = _TS_LINE
            else:
                stamps = _texts(self._created(part))
            data = _data(part)
            if data is None or stamps is None:  # row by row, the same bytes
                rows = []
                for j, (rec, c) in enumerate(zip(part, self._created(part), strict=True)):
                    r = dict(rec)
                    r["index"] = first + j
                    r["createdAt"] = c
                    rows.append((src + j, r))
                yield from _Rows(first, rows, 0, 0).chunks(head)
                continue
            cols: list[Any] = [range(first, first + m), range(src, src + m)] if head else []
            cols += [range(first, first + m), data, *stamps]
            w = len(cols)
            args: list[Any] = [None] * (w * m)
            for i, col in enumerate(cols):
                args[i::w] = col
            yield ((head + line + b"\n") * m) % tuple(args)


_TS = methodcaller("get", "_ts")
_TS_LINE = METRIC_LINE.replace(b'"%b"}', b'"%b.%06dZ"}')  # createdAt as `jsonio.iso` writes it: second, micros


def _stamps(part: list[dict[str, Any]]) -> list[list[Any]] | None:
    """createdAt of rows that leave it to the server, from each row's ``_ts`` as `jsonio.iso` formats it (the
    second's text, the microseconds: ``int((ts - int(ts)) * 1e6)``), in numpy passes; None when a row's ``_ts`` is
    missing or out of range (`Kept._created` then decides row by row)."""
    ts = list(map(_TS, map(_DATA, part)))
    if not set(map(type, ts)) <= {float, int}:
        return None
    import numpy as np

    arr = np.array(ts, dtype=np.float64)
    if not (arr.min() > 0 and arr.max() < 1e11):
        return None
    sec = arr.astype(np.int64)
    micro = ((arr - sec) * 1e6).astype(np.int64)
    uniq, inv = np.unique(sec, return_inverse=True)
    texts = [iso(float(u))[:-8].encode() for u in uniq.tolist()]  # "...T12:34:56" of ".000000Z"
    return [list(map(texts.__getitem__, inv.ravel().tolist())), micro.tolist()]


def _data(part: list[dict[str, Any]]) -> list[bytes] | None:
    """Each row's data object as JSON text less its braces, cut out of one orjson pass; None when orjson would
    write something else than `jsonio.join_lines` does (NaN as null, values it refuses) or when a brace inside a
    value makes the cuts unsafe (nested objects, braces in strings)."""
    m = len(part)
    try:
        data = _dumps(list(map(_DATA, part)), None, _OPT)
    except TypeError:
        return None
    if b"null" in data or data.count(b"{") != m or data.count(b"}") != m:
        return None
    return data[2:-2].split(b"},{")


def _texts(created: list[Any]) -> list[list[bytes]] | None:
    """The createdAt strings as JSON text less their quotes, cut out of one orjson pass (None: not all strings,
    or one holds a quote or something orjson refuses)."""
    if set(map(type, created)) != {str}:
        return None
    try:
        text = _dumps(created, None, _OPT)
    except TypeError:
        return None
    if b"null" in text or text.count(b'"') != 2 * len(created):
        return None
    return [text[2:-2].split(b'","')]


def keep_indexed(recs: list[dict[str, Any]], field: str, mark: int, nxt: int, metric: bool) -> Kept:
    """The records past this source's ``mark``, renumbered from the stream's ``nxt`` (records already checked:
    `backend.check_records`)."""
    if metric and recs:
        idx = list(map(_INDEX, recs))
        lo, n = idx[0], len(idx)
        if idx[-1] - lo == n - 1 and idx == list(range(lo, lo + n)):
            skip = min(n, max(0, mark - lo))
            kept = recs[skip:] if skip else recs
            if not kept:
                return Kept(nxt, 0, mark, nxt)
            shapes = set(map(tuple, kept))
            if len(shapes) == 1 and (shape := shapes.pop()) in (_SENT, _BARE):
                return _Run(kept, lo + skip, nxt, idx[-1] + 1, shape == _SENT)
    rows, new_mark, n = renumber(recs, field, mark, nxt, metric)
    return _Rows(nxt, rows, new_mark, n)
