"""Stream files read as numpy columns.

A stream file (``metrics/<name>/data.jsonl``, ``tracks/<topic>/data.jsonl``, ``logs/logs.jsonl``) is parsed into
one float64 array per numeric field (NaN where a row lacks the field) plus, for the rare fields that hold strings
or lists, a list of values. Two parsers give the same result:

- the general one: each line through orjson (the standard ``json`` module for the lines orjson refuses, such as
  the bare ``NaN`` / ``Infinity`` tokens), then its fields flattened into the columns;
- a fast one for the flat rows this project (and the reference SDK) writes: lines that share a *template* (the
  same keys in the same order, the same separators) are recognised with a few vectorised numpy passes over the
  bytes, and all their numbers are decoded by one orjson call on a JSON array built from those bytes. A line that
  does not match a template exactly goes through the general parser, so a file written by hand still reads right.

Only complete lines are parsed: a torn last line (no newline yet) waits for the next read. ``colcache`` keeps the
columns between reads and processes, so that a stream is parsed once and afterwards only its appended lines.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import decimals
from .jsonio import iso_seconds, parse_line

_loads: Callable[[Any], Any]
try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib parser is the slow fallback
    _loads = json.loads

KINDS = ("metrics", "tracks", "logs")
CHUNK = 1 << 20  # bytes parsed per vectorised pass: big enough to amortise the calls, small enough for the caches
MAX_TEMPLATES = 32  # distinct line shapes tried on the fast path per stream; more go to the general parser
MAX_THREADS = 4  # chunks prepared at once
MIN_PIECE = 256 << 10  # the smallest piece a stream is cut into for threads
SOLO_CHUNK = 4 << 20  # within ``solo``: a stream up to this size is one chunk (fewer, longer passes; see ``solo``)
HEAD = 64 << 10  # bytes whose lines give the line shapes of a stream read from its start
MIN_LINES = 64  # fewer lines of one shape than this are cheaper through the general parser
_STRUCT = b' \t\r:,{}"'


# ---- the general parser --------------------------------------------------------------------------------------
def _flatten_into(out: dict[str, Any], obj: Mapping[str, Any], prefix: str, top_index: bool = False) -> None:
    for k, v in obj.items():
        key = prefix + k
        if top_index and k == "index":
            key = "data.index"  # the row's own index keeps the name ``index``
        if isinstance(v, dict):
            _flatten_into(out, v, key + ".")
        else:
            out[key] = v


def _metric_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """``{"index": i, "data": {...}, "createdAt": ...}`` -> ``{"index": i, <data fields flattened with dots>}``."""
    out: dict[str, Any] = {}
    if "index" in obj:
        out["index"] = obj["index"]
    data = obj.get("data")
    if isinstance(data, dict):
        _flatten_into(out, data, "", top_index=True)
    else:  # a row written by hand without a data object: its other keys are the fields
        _flatten_into(out, {k: v for k, v in obj.items() if k not in ("index", "createdAt")}, "")
    return out


def _track_fields(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _flatten_into(out, obj, "")
    return out


def _log_fields(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    if "timestamp" in out:
        out["timestamp"] = iso_seconds(out["timestamp"])
    return out


ROW_FIELDS = {"metrics": _metric_fields, "tracks": _track_fields, "logs": _log_fields}
_NUMERIC = (float, int, bool)


class Batch:
    """Columns of consecutive rows: ``num`` float64 arrays of length ``n``; ``text`` maps field -> {row: value}."""

    __slots__ = ("n", "num", "text", "skipped")

    def __init__(self, n: int, num: dict[str, np.ndarray], text: dict[str, dict[int, Any]], skipped: int) -> None:
        self.n = n
        self.num = num
        self.text = text
        self.skipped = skipped


def _general(lines: Iterable[bytes], kind: str) -> tuple[list[dict[str, Any] | None], int]:
    rowfn = ROW_FIELDS[kind]
    out: list[dict[str, Any] | None] = []
    skipped = 0
    for line in lines:
        obj = parse_line(line)
        if obj is None:
            if line.strip():
                skipped += 1
            out.append(None)
        else:
            out.append(rowfn(obj))
    return out, skipped


def _scatter_rows(rows: list[dict[str, Any] | None], rowids: np.ndarray | None, n: int,
                  num: dict[str, np.ndarray], text: dict[str, dict[int, Any]]) -> None:
    """Put parsed rows (None entries skipped) at their row positions into the batch's columns."""
    nidx: dict[str, list[int]] = {}
    nval: dict[str, list[Any]] = {}
    r = -1
    for i, fields in enumerate(rows):
        if fields is None:
            continue
        r = int(rowids[i]) if rowids is not None else r + 1
        for k, v in fields.items():
            if type(v) in _NUMERIC:
                lst = nidx.get(k)
                if lst is None:
                    lst = nidx[k] = []
                    nval[k] = []
                lst.append(r)
                nval[k].append(v)
            elif v is not None:
                text.setdefault(k, {})[r] = v
    for k, idx in nidx.items():
        col = num.get(k)
        if col is None:
            col = num[k] = np.full(n, np.nan)
        col[np.asarray(idx, dtype=np.int64)] = np.asarray(nval[k], dtype=np.float64)


def parse_general(buf: bytes, kind: str) -> Batch:
    """The reference parse of complete lines: every line through the JSON parser."""
    rows, skipped = _general(buf.splitlines(), kind)
    n = sum(1 for r in rows if r is not None)
    num: dict[str, np.ndarray] = {}
    text: dict[str, dict[int, Any]] = {}
    _scatter_rows(rows, None, n, num, text)
    return Batch(n, num, text, skipped)


# ---- the fast parser -------------------------------------------------------------------------------------------
class Template:
    """The shape of one line: constant byte *runs* (separators, braces, keys with their quotes) alternating with
    variable *items* (a scalar token, or a string value). Each run sits at a fixed offset from an anchor: the line
    start (-1), the newline (-2), or the j-th quote of the line (j >= 0). ``items`` names the field each item
    goes to: a field name, None (a token that is not a field), or ``_STR`` (a string value that is not a field)."""

    __slots__ = ("nq", "runs", "items", "tokens", "_plan")

    def __init__(self, nq: int, runs: list[tuple[int, int, bytes]], items: list[str | None]) -> None:
        self.nq = nq
        self.runs = runs
        self.items = items
        self.tokens = sum(1 for i in items if i is not _STR)
        self._plan: _Plan | None = None

    def plan(self) -> _Plan:
        if self._plan is None:
            self._plan = _Plan(self)
        return self._plan


class _Plan:
    """A template as arrays for the vectorised match: run anchors and offsets, the runs as 8-byte words."""

    def __init__(self, tpl: Template) -> None:
        nq = tpl.nq
        self.anchor = np.array([nq if a == -1 else nq + 1 if a == -2 else a for a, _, _ in tpl.runs], dtype=np.int64)
        self.offset = np.array([off for _, off, _ in tpl.runs], dtype=np.int64)
        self.run_len = np.array([len(run) for _, _, run in tpl.runs], dtype=np.int64)
        wr, wa, wc, wm = [], [], [], []
        for r, (_, _, run) in enumerate(tpl.runs):
            for at, const, mask in _run_words(run):
                wr.append(r)
                wa.append(at)
                wc.append(const)
                wm.append(mask if mask is not None else np.uint64(0xFFFFFFFFFFFFFFFF))
        self.word_run = np.array(wr, dtype=np.int64)
        self.word_at = np.array(wa, dtype=np.int64)
        self.word_const = np.array(wc, dtype=np.uint64)
        self.word_mask = np.array(wm, dtype=np.uint64)
        self.strings = [i for i, f in enumerate(tpl.items) if f is _STR]


_STR = "\0string"
_UNSUPPORTED = "\0unsupported"


def _is_struct(b: bytes) -> bool:
    return all(c in _STRUCT and c != 34 for c in b)


def make_template(line: bytes, kind: str) -> Template | None:
    """The template of a line (without its newline), or None when the fast path does not handle its shape."""
    if kind == "logs" or b"\\" in line or b"[" in line or b"\n" in line:
        return None
    quotes = [i for i, c in enumerate(line) if c == 34]
    if len(quotes) % 2:
        return None
    nstr = len(quotes) // 2
    is_key = [line[quotes[2 * j + 1] + 1 : quotes[2 * j + 1] + 12].lstrip(b" \t\r")[:1] == b":" for j in range(nstr)]
    stack: list[str] = []
    current: str | None = None
    depth_seen = False
    # the line as runs and items: (start, end) byte ranges of the items, with their paths
    items: list[tuple[int, int, tuple[str, ...] | None, bool]] = []  # (start, end, path, is_string)

    def braces(piece: bytes) -> bool:
        nonlocal current, depth_seen
        for c in piece:
            if c == 123:  # {
                if not stack and depth_seen:
                    return False  # a second object on the line
                depth_seen = True
                stack.append(current or "")
                current = None
            elif c == 125:  # }
                if not stack:
                    return False
                stack.pop()
        return True

    for g in range(nstr + 1):
        start = 0 if g == 0 else quotes[2 * g - 1] + 1
        end = quotes[2 * g] if g < nstr else len(line)
        gap = line[start:end]
        k = 0
        while k < len(gap) and gap[k] in _STRUCT and gap[k] not in b"{}":
            k += 1
        t = k
        while t < len(gap) and gap[t] not in _STRUCT:
            t += 1
        prefix, token, suffix = gap[:k], gap[k:t], gap[t:]
        if token and not (g > 0 and is_key[g - 1]) or not _is_struct(suffix) or not braces(prefix):
            return None
        if token:
            if current is None or not stack:
                return None
            items.append((start + k, start + t, tuple(stack[1:]) + (current,), False))
            current = None
        if not braces(suffix):
            return None
        if g < nstr:
            if not stack:
                return None
            o, c2 = quotes[2 * g], quotes[2 * g + 1]
            if is_key[g]:
                try:
                    current = line[o + 1 : c2].decode()
                except UnicodeDecodeError:
                    return None
            else:
                if current is None:
                    return None
                items.append((o, c2 + 1, tuple(stack[1:]) + (current,), True))
                current = None
    if stack or not depth_seen:
        return None
    full = line + b"\n"
    bounds = [0] + [x for s_, e_, _, _ in items for x in (s_, e_)] + [len(full)]
    runs: list[tuple[int, int, bytes]] = []
    for r in range(len(items) + 1):
        rs, re_ = bounds[2 * r], bounds[2 * r + 1]
        if re_ <= rs:
            return None
        if r == 0:
            runs.append((-1, rs, full[rs:re_]))
        elif r == len(items):
            runs.append((-2, rs - len(line), full[rs:re_]))
        else:
            q = next((j for j, qp in enumerate(quotes) if rs <= qp < re_), None)
            if q is None:
                return None
            runs.append((q, rs - quotes[q], full[rs:re_]))
    fields: list[str | None] = []
    for _, _, path, is_string in items:
        assert path is not None
        if is_string:
            if not _ignorable_string(kind, path):
                return None  # a string field: the general parser keeps it
            fields.append(_STR)
        else:
            f = _slot_field(kind, path)
            if f is _UNSUPPORTED:
                return None
            fields.append(f)
    tpl = Template(len(quotes), runs, fields)
    return tpl if _self_check(tpl, line, kind) else None


def _ignorable_string(kind: str, path: tuple[str, ...]) -> bool:
    return kind == "metrics" and len(path) == 1 and path[0] != "data"


def _slot_field(kind: str, path: tuple[str, ...]) -> str | None:
    if kind == "tracks":
        return ".".join(path)
    if path == ("index",):
        return "index"
    if path[0] == "data":
        if len(path) < 2:
            return _UNSUPPORTED
        if len(path) == 2 and path[1] == "index":
            return "data.index"
        return ".".join(path[1:])
    return None  # another top-level key: not a field, as in the general parser


def _self_check(tpl: Template, line: bytes, kind: str) -> bool:
    """The template applied to its own line must give what the general parser gives."""
    rows, _ = _general([line], kind)
    ref = rows[0]
    if ref is None:
        return False
    want: dict[str, float] = {}
    for k, v in ref.items():
        if type(v) in _NUMERIC:
            want[k] = float(v)
        elif v is not None:
            return False
    a = np.frombuffer(line + b"\n", np.uint8)
    batch = _apply(a, [tpl], np.array([0]), np.array([len(line)]))
    if batch is None or batch.n != 1 or isinstance(batch, _Partial) and len(batch.remaining):
        return False
    got = {k: float(v[0]) for k, v in batch.num.items()}
    return set(got) == set(want) and all(got[k] == want[k] or got[k] != got[k] and want[k] != want[k] for k in want)


_SPECIAL = ((b"NaN", np.nan), (b"Infinity", np.inf), (b"-Infinity", -np.inf), (b"null", np.nan))


def _windows(a: np.ndarray, width: int) -> np.ndarray:
    """Every ``width``-byte window of ``a`` as one element (a view: gathers and scatters move whole windows)."""
    return np.ndarray(shape=(len(a) - width + 1,), dtype=np.dtype(f"V{width}"), buffer=a, strides=(1,))


_WORDS: dict[bytes, list[tuple[int, np.uint64, np.uint64 | None]]] = {}


def _run_words(run: bytes) -> list[tuple[int, np.uint64, np.uint64 | None]]:
    """A constant run as 8-byte words to compare: (offset in the run, value, mask or None). A run shorter than
    8 bytes is the last bytes of a word that ends with it (the bytes before it masked off)."""
    got = _WORDS.get(run)
    if got is None:
        w = len(run)
        out: list[tuple[int, np.uint64, np.uint64 | None]] = []
        if w < 8:
            word = bytes(8 - w) + run
            mask = int.from_bytes(bytes(8 - w) + b"\xff" * w, "little")
            out.append((w - 8, np.uint64(int.from_bytes(word, "little")), np.uint64(mask)))
        else:
            for k in list(range(0, w - 7, 8)) + ([w - 8] if w % 8 else []):
                out.append((k, np.uint64(int.from_bytes(run[k : k + 8], "little")), None))
        got = _WORDS[run] = out
    return got


def _aligned_words(a: np.ndarray, front: int = 8) -> np.ndarray:
    """``a`` as little-endian 8-byte words, zero-padded (aligned loads are several times faster than unaligned):
    byte p of ``a`` is byte p + front here (front a multiple of 8), and as much zero padding follows."""
    pad = np.zeros((len(a) + 2 * front + 23) // 8 * 8, dtype=np.uint8)
    pad[front : front + len(a)] = a
    return pad.view("<u8")


_3, _7, _64 = np.uint64(3), np.uint64(7), np.uint64(64)


def _words_at(u: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The 8 bytes starting at each byte position ``p`` (uint64), from two aligned words."""
    i = p >> _3
    sh = (p & _7) << _3
    out: np.ndarray = (u[i] >> sh) | (u[i + 1] << (_64 - sh))  # a shift by 64 gives 0
    return out


def _match(a: np.ndarray, u: np.ndarray, qpos: np.ndarray, tpl: Template, qstart: np.ndarray, lstart: np.ndarray,
           lend: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which lines (all with tpl.nq quotes) match the template; for those, the start of every run (m, runs)."""
    m = len(lstart)
    plan = tpl.plan()
    anchors = np.empty((m, tpl.nq + 2), dtype=np.int64)  # each line's quotes, then its start and its newline
    if tpl.nq:
        anchors[:, : tpl.nq] = qpos[qstart[:, None] + np.arange(tpl.nq)]
    anchors[:, tpl.nq] = lstart
    anchors[:, tpl.nq + 1] = lend
    rpos = anchors[:, plan.anchor] + plan.offset  # (m, runs)
    limit = len(a)
    # every constant run, as 8-byte words at their positions (u is padded by 8 bytes in front)
    wpos = np.clip(rpos[:, plan.word_run] + plan.word_at + 8, 0, limit + 8).astype(np.uint64)
    ok = ((_words_at(u, wpos) & plan.word_mask) == plan.word_const).all(1)
    ok &= (rpos[:, 0] >= 0) & (rpos[:, -1] + plan.run_len[-1] <= limit)
    ok &= (rpos[:, 1:] > rpos[:, :-1] + plan.run_len[:-1]).all(1)  # every item non-empty, runs in order
    for i in plan.strings:
        st = rpos[:, i] + plan.run_len[i]
        en = rpos[:, i + 1]
        ok &= (a[np.clip(st, 0, limit - 1)] == 34) & (a[np.clip(en - 1, 0, limit - 1)] == 34) & (en - st >= 2)
    return ok, rpos[ok], np.empty(0)


class _Matcher:
    """Assigns lines [lstart, lend) of ``a`` to templates; then decodes all their tokens at once."""

    def __init__(self, a: np.ndarray, lstart: np.ndarray, lend: np.ndarray, min_lines: int = 1) -> None:
        self.a = a
        self.lstart = lstart
        self.lend = lend
        self.min_lines = min_lines
        self.qpos = np.flatnonzero(a == 34)
        self.qstart = np.searchsorted(self.qpos, lstart)
        self.nq = np.searchsorted(self.qpos, lend) - self.qstart
        self.matched = np.full(len(lstart), -1, dtype=np.int64)
        self.groups: list[tuple[Template, np.ndarray, np.ndarray]] = []  # template, lines, run starts
        self.remaining = np.arange(len(lstart))
        self.u: np.ndarray | None = None

    def try_template(self, ti: int, tpl: Template) -> int:
        """Match the remaining lines against one template; how many it took."""
        if not len(self.remaining):
            return 0
        cand = self.remaining[self.nq[self.remaining] == tpl.nq]
        if len(cand) < self.min_lines:
            return 0
        if self.u is None:
            self.u = _aligned_words(self.a)
        ok, rpos, _ = _match(self.a, self.u, self.qpos, tpl, self.qstart[cand], self.lstart[cand], self.lend[cand])
        hit = cand[ok]
        if len(hit):
            self.matched[hit] = ti
            self.groups.append((tpl, hit, rpos))
            self.remaining = self.remaining[self.matched[self.remaining] < 0]
        return len(hit)

    def result(self) -> Batch | None:
        """The matched lines' columns (a ``_Partial`` when lines remain); None when a token is not a scalar."""
        fast = self.matched >= 0
        if not self.groups:
            return _Partial(0, {}, fast, self.remaining)
        decoded = self._decode()
        if decoded is None:
            return None
        values, isnull, off = decoded
        rowids = np.cumsum(fast) - 1
        n = int(fast.sum())
        num: dict[str, np.ndarray] = {}
        for tpl, hit, _ in self.groups:
            if not tpl.tokens:
                continue
            rows = rowids[hit]
            pos = off[hit, None] + np.arange(tpl.tokens)
            vals = values[pos]
            nulls = isnull[pos]
            t = 0
            for field in tpl.items:
                if field is _STR:
                    continue
                if field is not None:
                    col = num.get(field)
                    if col is None and not nulls[:, t].all():  # null only: absent, as in the general parser
                        col = num[field] = np.full(n, np.nan)
                    if col is not None:
                        col[rows] = vals[:, t]
                t += 1
        return Batch(n, num, {}, 0) if not len(self.remaining) else _Partial(n, num, fast, self.remaining)

    def _decode(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Every token of the matched lines, in byte order, decoded by one orjson call on a JSON array made from
        the bytes in place: runs, strings and unmatched lines become blanks, a ',' follows each token."""
        a = self.a
        b = a.copy()
        per_line = np.zeros(len(self.lstart), dtype=np.int64)
        for tpl, hit, _ in self.groups:
            per_line[hit] = tpl.tokens
        off = np.cumsum(per_line) - per_line
        total = int(per_line.sum())
        TS = np.empty(total, dtype=np.int64)
        TE = np.empty(total, dtype=np.int64)
        for tpl, hit, rpos in self.groups:
            for r, (_, _, run) in enumerate(tpl.runs):
                _windows(b, len(run))[rpos[:, r]] = np.frombuffer(b" " * len(run), dtype=f"V{len(run)}")[0]
            t = 0
            for i, field in enumerate(tpl.items):
                start = rpos[:, i] + len(tpl.runs[i][2])
                end = rpos[:, i + 1]
                if field is _STR:
                    lengths = end - start
                    lo, hi = int(lengths.min()), int(lengths.max())
                    for w in ((lo,) if lo == hi else np.unique(lengths)):
                        _windows(b, int(w))[start[lengths == w]] = np.frombuffer(b" " * int(w), dtype=f"V{int(w)}")[0]
                else:
                    TS[off[hit] + t] = start
                    TE[off[hit] + t] = end
                    t += 1
        if total == 0:
            return np.empty(0), np.empty(0, dtype=bool), off
        begin, stop = int(TS[0]) - 1, int(TE[-1])
        rest = self.remaining
        for i in rest[(self.lstart[rest] > begin) & (self.lstart[rest] < stop)]:
            b[int(self.lstart[i]) : int(self.lend[i]) + 1] = 32  # a line the general parser takes
        b[TE] = 44  # ','
        b[stop] = 93  # ']'
        b[begin] = 91  # '['
        c0 = a[TS]
        special = (c0 == 78) | (c0 == 73) | (c0 == 110) | ((c0 == 45) & (a[np.minimum(TS + 1, len(a) - 1)] == 73))
        fixes: list[tuple[np.ndarray, float]] = []
        if special.any():
            where = np.flatnonzero(special)
            matched = _blank_specials(a, b, TS, TE, where, 0, fixes)
            if not matched.all():
                return None
        try:
            values = _loads(memoryview(b[begin : stop + 1]))  # type: ignore[arg-type]
        except ValueError:
            return None
        if not isinstance(values, list) or len(values) != total:
            return None
        try:
            out = np.array(values, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if out.shape != (total,):
            return None
        for where_, value in fixes:
            out[where_] = value
        return out, c0 == 110, off


def _blank_specials(a: np.ndarray, b: np.ndarray, TS: np.ndarray, TE: np.ndarray, where: np.ndarray, front: int,
                    fixes: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """For the tokens ``where`` (starts ``TS``, ends ``TE`` in ``a``) spelling NaN, Infinity, -Infinity or null:
    record their values in ``fixes`` and write a '0' over them in ``b`` (``a`` shifted by ``front``), so orjson
    decodes the rest; returns which of them matched such a word."""
    sts, ste = TS[where], TE[where]
    matched = np.zeros(len(where), dtype=bool)
    for word, value in _SPECIAL:
        ci = np.flatnonzero((ste - sts) == len(word))
        if not len(ci):
            continue
        eq = (_windows(a, len(word))[sts[ci]].view(np.uint8).reshape(len(ci), len(word))
              == np.frombuffer(word, np.uint8)).all(1)
        hit = ci[eq]
        if len(hit):
            matched[hit] = True
            fixes.append((where[hit], value))
            zero = np.frombuffer(b"0" + b" " * (len(word) - 1), dtype=f"V{len(word)}")[0]
            _windows(b, len(word))[sts[hit] + front] = zero
    return matched


class _Prepared:
    """A chunk of one line shape, checked, its numbers decoded where ``decimals`` can (``cols``, one per token of a
    line; None: decode all of that token's values with orjson) and the rest (``left``: indices in the chunk's
    tokens, line by line) laid out for one orjson call (``text``), for ``_finish``."""

    __slots__ = ("m", "fields", "cols", "left", "text", "fixes", "nulls")

    def __init__(self, m: int, fields: list[str | None], cols: list[np.ndarray | None], left: np.ndarray,
                 text: np.ndarray, fixes: list[tuple[np.ndarray, float]], nulls: np.ndarray | None) -> None:
        self.m = m
        self.fields = fields
        self.cols = cols
        self.left = left
        self.text = text
        self.fixes = fixes
        self.nulls = nulls


_U8 = np.uint64(8)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_SPACES = np.uint64(0x2020202020202020)
_LOW7 = np.uint64(0x00FFFFFFFFFFFFFF)
_COMMA = np.uint64(0x2C << 56)
FRONT = 32  # bytes before a chunk that its passes may read (a copy supplies them for the buffer's first chunk)
BACK = 8  # bytes after a chunk that its passes may read (likewise)


def _gather_rows(a: np.ndarray, starts: np.ndarray, width: int, out: np.ndarray) -> None:
    """``out[i]`` (a row of ``width`` bytes) = the ``width`` bytes of ``a`` from ``starts[i]`` (ascending), zero
    past the end of ``a``."""
    full = int(np.searchsorted(starts, len(a) - width, side="right"))
    rows = out.view(np.dtype(f"V{width}")).reshape(-1)
    rows[:full] = _windows(a, width)[starts[:full]]  # (fancy indexing: np.take of void rows is far slower)
    if full < len(starts):
        s0 = int(starts[full])
        pad = np.zeros(len(a) - s0 + width, dtype=np.uint8)
        pad[: len(a) - s0] = a[s0:]
        rows[full:] = _windows(pad, width)[starts[full:] - s0]


def _prepare(base: np.ndarray, s: int, e: int, tpl: Template) -> _Prepared | None:
    """Check that every line of ``base[s:e]`` (complete lines without backslashes or brackets) has the shape
    ``tpl``, decode its numbers where ``decimals`` can and lay the rest out for ``_finish``; None when any line
    differs. numpy passes only (they release the GIL: chunks are prepared on several threads)."""
    nq = tpl.nq
    plan = tpl.plan()
    if s < FRONT or e + BACK > len(base):  # room around the chunk for the words read across its edges
        pad = np.zeros(e - s + FRONT + 8, dtype=np.uint8)
        pad[FRONT : FRONT + e - s] = base[s:e]
        base, s, e = pad, FRONT, e - s + FRONT
    a = base[s:e]
    marks = a == 34
    marks |= a == 10
    found = np.flatnonzero(marks)
    per = nq + 1
    if not len(found) or len(found) % per:
        return None
    m = len(found) // per
    anchors = found.reshape(m, per)
    nl = anchors[:, nq]
    if not (a[nl] == 10).all():  # then each row holds one line's quotes and its newline
        return None
    lstart = np.empty(m, dtype=np.int64)
    lstart[0] = 0
    lstart[1:] = nl[:-1] + 1
    nruns = len(tpl.runs)
    rp = np.empty((nruns, m), dtype=np.int64)  # each run's start, run by run (positions in a)
    for r in range(nruns):
        j = int(plan.anchor[r])
        rp[r] = anchors[:, j] if j < nq else lstart if j == nq else nl
    rp += plan.offset[:, None]
    if int(rp[0].min()) < -8 or int((rp[-1] + int(plan.run_len[-1])).max()) > len(a):
        return None
    # every constant run, as 8-byte words read at their byte positions, in one gather
    wp = rp[plan.word_run]
    wp += (plan.word_at + s)[:, None]
    words = np.ndarray(shape=(len(base) - 7,), dtype="<u8", buffer=base, strides=(1,))
    got = words[wp]
    got &= plan.word_mask[:, None]
    if (got != plan.word_const[:, None]).any():
        return None
    if not (rp[1:] > rp[:-1] + plan.run_len[:-1, None]).all():  # every item non-empty
        return None
    for i in plan.strings:
        st, en = rp[i] + int(plan.run_len[i]), rp[i + 1]
        if not ((a[st] == 34).all() and (a[en - 1] == 34).all() and (en - st >= 2).all()):
            return None
    tok = [i for i, f in enumerate(tpl.items) if f is not _STR]
    fields = [tpl.items[i] for i in tok]
    k = len(tok)
    if not k:
        return _Prepared(m, [], [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8), [], None)
    # the numbers, token by token of a line: decoded in numpy where their shape allows (decimals), the tokens
    # whose first value has the same shape (the length of its integer part) in one call
    cols: list[np.ndarray | None] = [None] * k
    done = np.zeros((m, k), dtype=bool)
    groups: dict[int, list[int]] = {}
    spans = []
    for t, i in enumerate(tok):
        st, en = rp[i] + (int(plan.run_len[i]) + s), rp[i + 1] + s
        spans.append((st, en))
        first = bytes(base[int(st[0]) : int(en[0])]).lstrip(b"-")
        groups.setdefault(first.find(b"."), []).append(t)
    for ts_ in groups.values():
        if len(ts_) == 1:
            got_ = decimals.decode_field(base, *spans[ts_[0]])
        else:
            got_ = decimals.decode_field(base, np.concatenate([spans[t][0] for t in ts_]),
                                         np.concatenate([spans[t][1] for t in ts_]))
        if got_ is None:
            continue  # not the shapes decimals reads: all through orjson
        for g, t in enumerate(ts_):
            ok = got_[1][g * m : (g + 1) * m]
            took = int(np.count_nonzero(ok))
            if took and took >= m // 2:
                cols[t] = got_[0][g * m : (g + 1) * m]
                done[:, t] = ok
    left = np.flatnonzero(~done.reshape(-1))  # the rest, in byte order
    if not len(left):
        return _Prepared(m, fields, cols, left, np.zeros(0, dtype=np.uint8), [], None)
    row, t_ = np.divmod(left, k)  # (only the tokens left: no pass over all of them)
    ti = np.asarray(tok)[t_]
    ts = rp[ti, row] + plan.run_len[ti]
    length = rp[ti + 1, row] - ts
    n = len(left)
    width = (int(length.max()) + 8) // 8 * 8  # room for a ',' after the longest token
    if width > 64:
        return None
    # the tokens, each in a row of ``width`` bytes: the token, spaces, a ','; a '[' row before them
    text = np.empty((n + 1) * width, dtype=np.uint8)
    text[:width] = 32
    text[0] = 91  # '['
    _gather_rows(a, ts, width, text[width:])
    rows = text.view("<u8").reshape(n + 1, width // 8)[1:]
    for j in range(width // 8):  # the bytes past the token: spaces (word by word: shifts, no table lookups)
        after = np.clip(length - 8 * j, 0, 8).astype(np.uint64) * _U8
        keep = ~(_ONES << after)  # (a shift by 64 gives 0)
        col = rows[:, j]
        col &= keep
        col |= _SPACES & ~keep
    rows[:, -1] = (rows[:, -1] & _LOW7) | _COMMA  # a ',' in each row's last byte
    text[-1] = 93  # ']' instead of the last ','
    c0 = text[width::width].copy()  # each token's first byte, from its row (before any is blanked)
    special = (c0 >= 65) | (c0 == 45) & (text[width + 1 :: width] == 73)  # letters, -I
    fixes: list[tuple[np.ndarray, float]] = []
    nulls = None
    if special.any():
        where = np.flatnonzero(special)
        matched = _blank_special_rows(a, text, ts, length, where, width, fixes)
        bools = (c0[where] == 116) | (c0[where] == 102)  # true / false: orjson checks them
        if not (matched | bools).all():
            return None
        if fixes:
            nulls = c0 == 110
    return _Prepared(m, fields, cols, left, text, fixes, nulls)


def _blank_special_rows(a: np.ndarray, text: np.ndarray, ts: np.ndarray, length: np.ndarray, where: np.ndarray,
                        width: int, fixes: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """The tokens ``where`` spelling NaN, Infinity, -Infinity or null: their values into ``fixes``, a '0' in
    their rows of ``text`` (row i + 1 holds token i); returns which of them matched such a word."""
    matched = np.zeros(len(where), dtype=bool)
    for word, value in _SPECIAL:
        ci = np.flatnonzero(length[where] == len(word))
        if not len(ci):
            continue
        eq = (_windows(a, len(word))[ts[where[ci]]].view(np.uint8).reshape(len(ci), len(word))
              == np.frombuffer(word, np.uint8)).all(1)
        hit = where[ci[eq]]
        if len(hit):
            matched[ci[eq]] = True
            fixes.append((hit, value))
            text[(hit + 1) * width] = 48  # '0' (the rest of the row: spaces)
            for c in range(1, len(word)):
                text[(hit + 1) * width + c] = 32
    return matched


def _finish(p: _Prepared) -> Batch | None:
    """The columns of a prepared chunk: one orjson call for the numbers ``decimals`` left. None when one of them
    is not a JSON scalar (then the caller matches line by line)."""
    m, k = p.m, len(p.fields)
    num: dict[str, np.ndarray] = {}
    if not k:
        return Batch(m, num, {}, 0)
    n = len(p.left)
    if n:
        try:
            values = _loads(memoryview(p.text))  # type: ignore[arg-type]
            if not isinstance(values, list) or len(values) != n:
                return None
            rest = np.fromiter(values, dtype=np.float64, count=n)
        except (TypeError, ValueError):
            return None
        for where_, value in p.fixes:
            rest[where_] = value
        row, tok = np.divmod(p.left, k)
    for t, field in enumerate(p.fields):
        col = p.cols[t]
        if n:
            sel = tok == t
            if p.nulls is not None and int(np.count_nonzero(p.nulls & sel)) == m:
                continue  # null only: absent, as in the general parser
            if col is None:
                col = np.empty(m)
            if sel.any():
                col[row[sel]] = rest[sel]
        if field is not None and col is not None:
            num[field] = col
    return Batch(m, num, {}, 0)


def _uniform(base: np.ndarray, s: int, e: int, tpl: Template) -> Batch | None:
    """Columns of the chunk ``base[s:e]`` when its every line has the shape ``tpl`` (the common case: one writer,
    one set of keys), in whole-chunk passes without assigning lines to templates; None when any line differs
    (then the caller matches line by line)."""
    p = _prepare(base, s, e, tpl)
    return None if p is None else _finish(p)


def _apply(a: np.ndarray, templates: list[Template], lstart: np.ndarray, lend: np.ndarray) -> Batch | None:
    m = _Matcher(a, lstart, lend)
    for ti, tpl in enumerate(templates):
        m.try_template(ti, tpl)
    return m.result()


class _Partial(Batch):
    """A fast-path result covering some lines only (``fast`` per line); ``remaining`` need the general parser."""

    __slots__ = ("fast", "remaining")

    def __init__(self, n: int, num: dict[str, np.ndarray], fast: np.ndarray, remaining: np.ndarray) -> None:
        super().__init__(n, num, {}, 0)
        self.fast = fast
        self.remaining = remaining


def parse(buf: bytes, kind: str, templates: list[Template] | None = None, *, end: int | None = None) -> Batch:
    """Columns of the complete lines in ``buf`` (which ends with a newline), fast where the lines allow; with
    ``end``, of ``buf[:end]`` (which ends with a newline; no copy of a large read).

    ``templates`` carries the line shapes found so far from one call to the next (for incremental reads)."""
    parts = parse_parts(buf, kind, templates, end=end)
    return parts[0] if len(parts) == 1 else concat(parts)


def parse_parts(buf: bytes | bytearray, kind: str, templates: list[Template] | None = None, *,
                end: int | None = None, start: int = 0) -> list[Batch]:
    """``parse`` as the columns of consecutive parts of the lines (not joined: a caller that copies them into its
    own arrays saves a copy). With ``start``, of the lines ``buf[start:end]``: the bytes before ``start`` (and
    after ``end``) are not parsed, only read across by the whole-chunk passes, so a reader that leaves ``FRONT``
    bytes of room before its data and ``BACK`` after spares those passes a padded copy of the edge chunks."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if end is None:
        end = len(buf)
    if not 0 <= start <= end <= len(buf):
        raise ValueError(f"need 0 <= start <= end <= len(buf), got start={start}, end={end}, len={len(buf)}")
    if end == start:
        return [parse_general(b"", kind)]
    if kind == "logs":
        return [parse_general(_slice(buf, start, end), kind)]
    if templates is None:
        templates = []
    if end - start >= CHUNK and not _HEAP_SET:
        _settle_heap()
    base = np.frombuffer(buf, np.uint8)  # (all of it: the passes may read the bytes around the lines)
    if not templates:  # the shape that took the last stream's start: streams of one writer share it
        recent = _RECENT.get(kind)
        if recent and _fits(recent[0], buf, buf.find(b"\n", start, end), start):
            templates.extend(recent)
    alone = getattr(_local, "solo", False)
    spans = list(_chunks(buf, start, end, SOLO_CHUNK if alone and end - start <= SOLO_CHUNK else CHUNK))
    out: list[Batch] = []
    if not templates:  # find the line shapes, on a few hundred lines only, before the other chunks reuse them
        if spans[0][1] - start > HEAD * 2:
            head = buf.rfind(b"\n", start, start + HEAD) + 1
            if head > start:
                spans[0:1] = [(start, head), (head, spans[0][1])]
        out.append(_parse_span(buf, base, spans[0], kind, templates))
        spans = spans[1:]
    if templates:
        _RECENT[kind] = [templates[0]]  # (hits are moved to the front)
    if not alone:
        spans = _split_for_threads(buf, spans)
    if not spans:
        return out
    workers = 1 if alone else min(len(spans), os.cpu_count() or 1, MAX_THREADS)
    if workers <= 1 or not templates:
        out += [_parse_span(buf, base, span, kind, templates) for span in spans]
        return out
    try:
        prepared = _prepare_all(buf, base, spans, templates[0], workers)
    except RuntimeError:  # no new threads (interpreter shutting down): one chunk after the other
        return out + [_parse_span(buf, base, span, kind, templates) for span in spans]
    # the orjson calls one after the other, on this thread (orjson holds the GIL: run beside the numpy passes,
    # it would stall them)
    for span, p in zip(spans, prepared, strict=True):
        got = _finish(p) if p is not None else None
        out.append(got if got is not None else _parse_chunk(_slice(buf, *span), kind, templates))
    return out


def _fits(tpl: Template, buf: bytes | bytearray, nl: int, ls: int = 0) -> bool:
    """Whether the line ``buf[ls:nl]`` has the shape ``tpl`` (its constant runs where the template puts them, every
    item non-empty): a check in Python of one line, before a stream's chunks go to threads with that shape."""
    if nl <= ls:
        return False
    quotes = []
    q = buf.find(b'"', ls, nl)
    while q >= 0:
        quotes.append(q)
        q = buf.find(b'"', q + 1, nl)
    if len(quotes) != tpl.nq:
        return False
    prev = ls - 1
    for anchor, off, run in tpl.runs:
        at = (ls if anchor == -1 else nl if anchor == -2 else quotes[anchor]) + off
        if at <= prev or buf[at : at + len(run)] != run:
            return False
        prev = at + len(run)
    return prev == nl + 1


def _prepare_all(buf: bytes | bytearray, base: np.ndarray, spans: list[tuple[int, int]], tpl: Template,
                 workers: int) -> list[_Prepared | None]:
    """``_prepare`` of every span, on this thread and ``workers - 1`` of the pool's, each taking the next span
    when it is done with one (no thread waits for a slower one but at the end)."""
    results: list[_Prepared | None] = [None] * len(spans)
    todo = iter(range(len(spans)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            s, e = spans[i]
            if buf.find(b"\\", s, e) < 0 and buf.find(b"[", s, e) < 0:
                results[i] = _prepare(base, s, e, tpl)

    pool = _pool()
    futures = [pool.submit(work) for _ in range(workers - 1)]
    try:
        work()
    finally:
        for f in futures:
            if not f.cancel():  # started (or done): wait for the span it took; one still queued takes none
                f.result()
    return results


_local = threading.local()


@contextmanager
def solo() -> Iterator[None]:
    """Within it, this thread parses every chunk itself (for a caller that reads several streams side by side,
    one per thread)."""
    before = getattr(_local, "solo", False)
    _local.solo = True
    try:
        yield
    finally:
        _local.solo = before


_HEAP_SET: list[bool] = []


def _settle_heap() -> None:
    """Allocate and free one array of just under 32 MiB, once per process. glibc's malloc serves a block above its
    mmap threshold (128 KiB at first) with fresh pages and returns freed heap memory beyond a trim threshold to the
    system; freeing a large mapped block raises both thresholds (to its size and twice that; only for blocks up to
    32 MiB). Without this, the few MiB of temporary arrays a chunk's passes use were given back after every small
    stream read and faulted in again by the next (1,300 page faults per 10,000-row stream, a fifth of its CPU
    time); with it they stay. (With 16 MiB, the 8 MB columns of a 1M-row stream loaded from the disk cache were
    faulted in again on every load after the 16 MiB reads: 2,100 faults, 10 ms.)"""
    _HEAP_SET.append(True)
    np.empty((32 << 17) - (8 << 10))  # 32 MiB - 64 KiB of float64, never touched: mapped and unmapped


_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The threads that prepare chunks, started once per process (starting threads for every read of a small
    stream cost more than the parallel passes saved)."""
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max(1, MAX_THREADS - 1), thread_name_prefix="ml-dash-parse"))
        return _POOL[0]


def _forget_pool() -> None:  # a forked child has none of the parent's threads
    global _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    _POOL.clear()


os.register_at_fork(after_in_child=_forget_pool)


def _split_for_threads(buf: bytes | bytearray, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A stream of a few chunks (a 10,000-row run is ~1.6 MB) cut into pieces of equal size, one per core (or two),
    at line ends, so its passes run on every core and end together; pieces stay >= MIN_PIECE bytes. Many chunks
    stay as they are: the threads take them in turn."""
    cores = min(os.cpu_count() or 1, MAX_THREADS)
    if cores <= 1 or not spans or len(spans) > 2 * cores:
        return spans
    s, e = spans[0][0], spans[-1][1]
    pieces = min(-(-len(spans) // cores) * cores, (e - s) // MIN_PIECE)
    if pieces <= 1:
        return spans
    out, start = [], s
    for k in range(1, pieces):
        cut = buf.rfind(b"\n", start, s + (e - s) * k // pieces) + 1
        if cut > start:
            out.append((start, cut))
            start = cut
    out.append((start, e))
    return out


def _chunks(buf: bytes | bytearray, start: int, n: int, size: int = CHUNK) -> Iterator[tuple[int, int]]:
    while start < n:
        end = n if n - start <= size * 3 // 2 else buf.rfind(b"\n", start, start + size) + 1
        if end <= start:
            end = buf.find(b"\n", start + size)
            end = n if end < 0 else end + 1
        yield start, end
        start = end


_RECENT: dict[str, list[Template]] = {}  # per kind: the line shape that matched first in the last parse


def _parse_span(buf: bytes | bytearray, base: np.ndarray, span: tuple[int, int], kind: str, templates: list[Template]) -> Batch:
    """Columns of the complete lines ``buf[span[0]:span[1]]``: in whole-chunk passes when every line has the
    shape that matched last, else line by line."""
    s, e = span
    if templates and buf.find(b"\\", s, e) < 0 and buf.find(b"[", s, e) < 0:
        whole = _uniform(base, s, e, templates[0])
        if whole is not None:
            return whole
    return _parse_chunk(_slice(buf, s, e), kind, templates)


def _slice(buf: bytes | bytearray, s: int, e: int) -> bytes:
    """``buf[s:e]`` as bytes (one copy; a bytearray's slice would be another bytearray)."""
    return buf[s:e] if isinstance(buf, bytes) else bytes(memoryview(buf)[s:e])


def _parse_chunk(buf: bytes, kind: str, templates: list[Template]) -> Batch:
    a = np.frombuffer(buf, np.uint8)
    nl = np.flatnonzero(a == 10)
    lstart = np.empty(len(nl), dtype=np.int64)
    if len(nl):
        lstart[0] = 0
        lstart[1:] = nl[:-1] + 1
    lend = nl
    bad = np.zeros(len(nl), dtype=bool)
    if b"\\" in buf or b"[" in buf:  # lines with escapes or arrays: general parser
        badpos = np.flatnonzero((a == 92) | (a == 91))
        bad[np.searchsorted(nl, badpos)] = True
    ok_lines = np.flatnonzero(~bad)
    batch = _fast_with_new_templates(a, templates, lstart[ok_lines], lend[ok_lines], kind, buf)
    if batch is None:
        return parse_general(buf, kind)
    if not isinstance(batch, _Partial) and not bad.any():
        return batch
    # merge: lines the fast path took, and the rest through the general parser
    fast = np.zeros(len(nl), dtype=bool)
    if isinstance(batch, _Partial):
        fast[ok_lines[batch.fast]] = True
    elif batch.n:
        fast[ok_lines] = True
    slow = np.flatnonzero(~fast)
    rows, skipped = _general([buf[lstart[i] : lend[i] + 1] for i in slow], kind)
    valid = fast.copy()
    valid[slow] = [r is not None for r in rows]
    rowids = np.cumsum(valid) - 1
    n = int(valid.sum())
    num: dict[str, np.ndarray] = {}
    text: dict[str, dict[int, Any]] = {}
    if batch.n:
        where = rowids[fast]
        for k, v in batch.num.items():
            col = num[k] = np.full(n, np.nan)
            col[where] = v
    _scatter_rows(rows, rowids[slow], n, num, text)
    return Batch(n, num, text, skipped)


def _fast_with_new_templates(a: np.ndarray, templates: list[Template], lstart: np.ndarray, lend: np.ndarray,
                             kind: str, buf: bytes) -> Batch | None:
    """Match the lines against the known templates (most recently useful first), add templates for lines none
    matches (a few per chunk). None: a matched line held a token that is not a JSON scalar, so the whole chunk
    goes to the general parser. A template is tried only on enough lines to be worth its fixed cost."""
    m = _Matcher(a, lstart, lend, min_lines=MIN_LINES)
    hits = []
    for ti, tpl in enumerate(templates):
        if m.try_template(ti, tpl):
            hits.append(ti)
    for rank, ti in enumerate(hits):  # move what matched to the front, in order, for the next chunk
        if ti != rank:
            templates.insert(rank, templates.pop(ti))
    attempts = 0
    while len(m.remaining) >= MIN_LINES and attempts < 8 and len(templates) < MAX_TEMPLATES:
        i = m.remaining[min(attempts, len(m.remaining) - 1)]
        attempts += 1
        made = make_template(buf[lstart[i] : lend[i]], kind)
        if made is not None:
            templates.append(made)
            m.try_template(len(templates) - 1, made)
    return m.result()


def concat(batches: list[Batch]) -> Batch:
    n = sum(b.n for b in batches)
    num: dict[str, np.ndarray] = {}
    text: dict[str, dict[int, Any]] = {}
    start = 0
    everywhere = set.intersection(*(set(b.num) for b in batches)) if batches else set()
    for b in batches:
        for k, v in b.num.items():
            col = num.get(k)
            if col is None:
                col = num[k] = np.empty(n) if k in everywhere else np.full(n, np.nan)  # no fill to overwrite
            col[start : start + b.n] = v
        for k, tv in b.text.items():
            dst = text.setdefault(k, {})
            for r, val in tv.items():
                dst[start + r] = val
        start += b.n
    return Batch(n, num, text, sum(b.skipped for b in batches))
