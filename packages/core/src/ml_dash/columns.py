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

import datetime as _dt
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

_loads: Callable[[Any], Any]
try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib parser is the slow fallback
    _loads = json.loads

KINDS = ("metrics", "tracks", "logs")
CHUNK = 4 << 20  # bytes parsed per vectorised pass: big enough to amortise the calls, small enough for the caches
MAX_TEMPLATES = 32  # distinct line shapes tried on the fast path per stream; more go to the general parser
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


def iso_seconds(text: Any) -> Any:
    """ISO-8601 (``...Z``) as unix seconds; anything else unchanged."""
    if not isinstance(text, str):
        return text
    try:
        t = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return text
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def _log_fields(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    if "timestamp" in out:
        out["timestamp"] = iso_seconds(out["timestamp"])
    return out


ROW_FIELDS = {"metrics": _metric_fields, "tracks": _track_fields, "logs": _log_fields}
_NUMERIC = (float, int, bool)


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One JSONL line as a dict (None for a blank, corrupt or non-object line), as Python's json reads it."""
    try:
        obj = _loads(line)
    except ValueError:
        try:
            obj = json.loads(line)
        except ValueError:
            return None
    return obj if isinstance(obj, dict) else None


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
    """The shape of one line: its strings (keys with their bytes, values), and between them the exact separator
    bytes with at most one scalar token each. ``slots`` names the field each token goes to (None: not a field)."""

    __slots__ = ("nq", "keys", "gaps", "slots", "tokens")

    def __init__(self, nq: int, keys: list[tuple[int, bytes]], gaps: list[tuple[bytes, bool, bytes]],
                 slots: list[str | None]) -> None:
        self.nq = nq
        self.keys = keys
        self.gaps = gaps
        self.slots = slots
        self.tokens = sum(1 for g in gaps if g[1])


def _is_struct(b: bytes) -> bool:
    return all(c in _STRUCT and c != 34 for c in b)


def make_template(line: bytes, kind: str) -> Template | None:
    """The template of a line, or None when the fast path does not handle its shape."""
    if kind == "logs" or b"\\" in line or b"[" in line:
        return None
    quotes = [i for i, c in enumerate(line) if c == 34]
    if len(quotes) % 2:
        return None
    nstr = len(quotes) // 2
    gaps: list[tuple[bytes, bool, bytes]] = []
    keys: list[tuple[int, bytes]] = []
    is_key = []
    for j in range(nstr):
        close = quotes[2 * j + 1]
        is_key.append(line[close + 1 : close + 12].lstrip(b" \t\r")[:1] == b":")
    stack: list[str] = []
    paths: list[tuple[str, ...] | None] = []
    current: str | None = None
    depth_seen = False
    for g in range(nstr + 1):
        start = 0 if g == 0 else quotes[2 * g - 1] + 1
        end = quotes[2 * g] if g < nstr else len(line)
        gap = line[start:end]
        # a token is allowed only right after a key: prefix of separators, the token, suffix of separators
        k = 0
        while k < len(gap) and gap[k] in _STRUCT and gap[k] not in b"{}":
            k += 1
        t = k
        while t < len(gap) and gap[t] not in _STRUCT:
            t += 1
        prefix, token, suffix = gap[:k], gap[k:t], gap[t:]
        if token and not (g > 0 and is_key[g - 1]) or not _is_struct(suffix):
            return None
        pieces = [prefix] + ([b"T"] if token else []) + [suffix]
        for piece in pieces:
            if piece == b"T":
                if current is None:
                    return None
                paths.append(tuple(stack[1:]) + (current,))
                current = None
                continue
            for c in piece:
                if c == 123:  # {
                    if not stack and depth_seen:
                        return None  # a second object on the line
                    depth_seen = True
                    stack.append(current or "")
                    current = None
                elif c == 125:  # }
                    if not stack:
                        return None
                    stack.pop()
        gaps.append((prefix, bool(token), suffix))
        if g < nstr:
            if not stack:
                return None
            o, c2 = quotes[2 * g], quotes[2 * g + 1]
            text = line[o + 1 : c2]
            if is_key[g]:
                try:
                    current = text.decode()
                except UnicodeDecodeError:
                    return None
                keys.append((g, text))
            else:
                if current is None:
                    return None
                path = tuple(stack[1:]) + (current,)
                if not _ignorable_string(kind, path):
                    return None  # a string field: the general parser keeps it
                current = None
    if stack or not depth_seen:
        return None
    slots = [_slot_field(kind, p) for p in paths if p is not None]
    if any(s is _UNSUPPORTED for s in slots):
        return None
    tpl = Template(len(quotes), keys, gaps, slots)
    return tpl if _self_check(tpl, line, kind) else None


_UNSUPPORTED = "\0unsupported"


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
    if path == ("data",):
        return _UNSUPPORTED
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


_SPECIAL = ((b"NaN", np.nan), (b"Infinity", np.inf), (b"-Infinity", -np.inf))


def _match(a: np.ndarray, qpos: np.ndarray, tpl: Template, lines: np.ndarray, qstart: np.ndarray,
           lstart: np.ndarray, lend: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which of ``lines`` (all with tpl.nq quotes) match the template; for those, token starts and ends (m, T)."""
    m = len(lines)
    ok = np.ones(m, dtype=bool)
    if tpl.nq:
        q = qpos[qstart[:, None] + np.arange(tpl.nq)]
    else:
        q = np.empty((m, 0), dtype=np.int64)
    for j, kb in tpl.keys:
        o, c = q[:, 2 * j], q[:, 2 * j + 1]
        ok &= (c - o - 1) == len(kb)
        if kb:
            ok &= (a[np.minimum(o[:, None] + 1 + np.arange(len(kb)), len(a) - 1)] == np.frombuffer(kb, np.uint8)).all(1)
    nstr = tpl.nq // 2
    ts = np.empty((m, tpl.tokens), dtype=np.int64)
    te = np.empty((m, tpl.tokens), dtype=np.int64)
    t = 0
    last = len(a) - 1
    for g, (prefix, has_tok, suffix) in enumerate(tpl.gaps):
        start = lstart if g == 0 else q[:, 2 * g - 1] + 1
        end = q[:, 2 * g] if g < nstr else lend
        for off, piece, base in ((0, prefix, start), (-len(suffix), suffix, end)):
            if piece:
                idx = np.clip(base[:, None] + off + np.arange(len(piece)), 0, last)
                ok &= (a[idx] == np.frombuffer(piece, np.uint8)).all(1)
        if has_tok:
            s = start + len(prefix)
            e = end - len(suffix)
            ok &= e > s
            ts[:, t] = s
            te[:, t] = e
            t += 1
        else:
            ok &= (end - start) == len(prefix) + len(suffix)
    return ok, ts[ok], te[ok]


def _numbers(a: np.ndarray, ts: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Decode the tokens [ts, te) (sorted by position) as float64, and which were ``null``; None when one is not a
    JSON scalar."""
    n = len(ts)
    if n == 0:
        return np.empty(0), np.empty(0, dtype=bool)
    d = np.zeros(len(a) + 1, dtype=np.int8)
    d[ts] = 1
    d[te] = -1
    mask = np.cumsum(d[:-1], dtype=np.int8).view(bool)
    b = np.where(mask, a, np.uint8(32))
    c0 = a[ts]
    special = (c0 == 78) | (c0 == 73) | ((c0 == 45) & (a[np.minimum(ts + 1, len(a) - 1)] == 73))
    fixes: list[tuple[np.ndarray, float]] = []
    if special.any():
        where = np.flatnonzero(special)
        sts, ste = ts[where], te[where]
        matched = np.zeros(len(where), dtype=bool)
        for word, value in _SPECIAL:
            cand = (ste - sts) == len(word)
            if not cand.any():
                continue
            ci = np.flatnonzero(cand)
            eq = (a[sts[ci, None] + np.arange(len(word))] == np.frombuffer(word, np.uint8)).all(1)
            hit = ci[eq]
            if len(hit):
                matched[hit] = True
                fixes.append((where[hit], value))
                b[sts[hit]] = 48  # '0', the rest of the word blanked
                for k in range(1, len(word)):
                    b[sts[hit] + k] = 32
        if not matched.all():
            return None
    b[te] = 44  # ','
    b[te[-1]] = 93  # ']'
    first = int(ts[0])
    if first == 0:
        return None  # a line starts with '{'; a token can never be the first byte
    b[first - 1] = 91  # '['
    try:
        values = _loads(memoryview(b[first - 1 : int(te[-1]) + 1]))  # type: ignore[arg-type]
    except ValueError:
        return None
    if not isinstance(values, list) or len(values) != n:
        return None
    try:
        out = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if out.shape != (n,):
        return None
    for where_, value in fixes:
        out[where_] = value
    return out, c0 == 110


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
        self.spans: list[tuple[Template, np.ndarray, np.ndarray, np.ndarray]] = []
        self.remaining = np.arange(len(lstart))

    def try_template(self, ti: int, tpl: Template) -> int:
        """Match the remaining lines against one template; how many it took."""
        if not len(self.remaining):
            return 0
        cand = self.remaining[self.nq[self.remaining] == tpl.nq]
        if len(cand) < self.min_lines:
            return 0
        ok, ts, te = _match(self.a, self.qpos, tpl, cand, self.qstart[cand], self.lstart[cand], self.lend[cand])
        hit = cand[ok]
        if len(hit):
            self.matched[hit] = ti
            self.spans.append((tpl, hit, ts, te))
            self.remaining = self.remaining[self.matched[self.remaining] < 0]
        return len(hit)

    def result(self) -> Batch | None:
        """The matched lines' columns (a ``_Partial`` when lines remain); None when a token is not a scalar."""
        nlines = len(self.lstart)
        fast = self.matched >= 0
        if not self.spans:
            return _Partial(0, {}, fast, self.remaining)
        # all tokens in byte order: per line, its template's tokens, in the line's slot order
        per_line = np.zeros(nlines, dtype=np.int64)
        for tpl, hit, _, _ in self.spans:
            per_line[hit] = tpl.tokens
        off = np.cumsum(per_line) - per_line
        total = int(per_line.sum())
        TS = np.empty(total, dtype=np.int64)
        TE = np.empty(total, dtype=np.int64)
        for tpl, hit, ts, te in self.spans:
            if tpl.tokens:
                pos = off[hit, None] + np.arange(tpl.tokens)
                TS[pos] = ts
                TE[pos] = te
        decoded = _numbers(self.a, TS, TE)
        if decoded is None:
            return None
        values, isnull = decoded
        rowids = np.cumsum(fast) - 1
        n = int(fast.sum())
        num: dict[str, np.ndarray] = {}
        for tpl, hit, _, _ in self.spans:
            if not tpl.tokens:
                continue
            rows = rowids[hit]
            pos = off[hit, None] + np.arange(tpl.tokens)
            vals = values[pos]
            nulls = isnull[pos]
            for t, field in enumerate(tpl.slots):
                if field is None:
                    continue
                col = num.get(field)
                if col is None:
                    if nulls[:, t].all():
                        continue  # null only: absent, as in the general parser
                    col = num[field] = np.full(n, np.nan)
                col[rows] = vals[:, t]
        return Batch(n, num, {}, 0) if not len(self.remaining) else _Partial(n, num, fast, self.remaining)


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


def parse(buf: bytes, kind: str, templates: list[Template] | None = None) -> Batch:
    """Columns of the complete lines in ``buf`` (which ends with a newline), fast where the lines allow.

    ``templates`` carries the line shapes found so far from one call to the next (for incremental reads)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "logs" or not buf:
        return parse_general(buf, kind)
    if templates is None:
        templates = []
    batches = [_parse_chunk(chunk, kind, templates) for chunk in _chunks(buf)]
    return batches[0] if len(batches) == 1 else concat(batches)


def _chunks(buf: bytes) -> Iterator[bytes]:
    start = 0
    n = len(buf)
    while start < n:
        end = n if n - start <= CHUNK * 3 // 2 else buf.rfind(b"\n", start, start + CHUNK) + 1
        if end <= start:
            end = buf.find(b"\n", start + CHUNK)
            end = n if end < 0 else end + 1
        yield buf[start:end]
        start = end


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
    for b in batches:
        for k, v in b.num.items():
            col = num.get(k)
            if col is None:
                col = num[k] = np.full(n, np.nan)
            col[start : start + b.n] = v
        for k, tv in b.text.items():
            dst = text.setdefault(k, {})
            for r, val in tv.items():
                dst[start + r] = val
        start += b.n
    return Batch(n, num, text, sum(b.skipped for b in batches))
