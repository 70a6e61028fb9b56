"""``ml-dash ls``, ``ml-dash show`` and ``ml-dash export``: reading runs from a ``.dash`` folder or a server.

Locally they read the folder; with ``--url`` (or ``ML_DASH_API_URL``) they ask ``ml-dash serve``, whose read
routes answer with the same functions (``ml_dash.runs``) over the same column cache.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from orjson import loads as _fast_loads

FORMATS = ("csv", "parquet", "jsonl")


class ReadError(Exception):
    """A read that cannot be done as asked (the message says why)."""


# ---- where runs are read from ----------------------------------------------------------------------------------
class Local:
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ReadError(f"no folder {self.root} (pass the .dash folder, or --url for a server)")

    def where(self) -> str:
        return str(self.root)

    def prefixes(self) -> list[str]:
        from .runs import find_runs

        return find_runs(self.root)

    def runs(self, last: list[tuple[str, str]]) -> list[dict[str, Any]]:
        from .runs import ListingCache, find_runs, summary

        cache = ListingCache(self.root)
        out = [summary(self.root, p, last, cache) for p in find_runs(self.root, cache)]
        cache.save()
        return out

    def _view(self, prefix: str) -> Any:
        from .reader import load

        try:
            return load(prefix, self.root)
        except (FileNotFoundError, ValueError, TypeError) as e:
            raise ReadError(str(e)) from None

    def show(self, prefix: str) -> dict[str, Any]:
        from .runs import show

        return show(self._view(prefix))

    def metric_names(self, prefix: str) -> list[str]:
        return list(self._view(prefix).metrics.names())

    def columns(self, prefix: str, stream: str) -> Any:
        return self._view(prefix).metrics(stream).columns()

    def prefetch(self, pairs: list[tuple[str, str]]) -> None:
        """Read these (run, metric stream) pairs side by side, each small stream whole on one of the cores
        (``colcache.read_many``), so that the ``columns`` calls that follow find them parsed."""
        from .colcache import read_many
        from .layout import metric_parts

        read_many([self._view(p).folder.joinpath(*metric_parts(s)) for p, s in pairs], "metrics")


class Remote:
    """The read routes of an ``ml-dash serve``, through the standard library's HTTP client (a command that lists
    runs does not pay for importing httpx; proxies from the environment are honoured as with httpx)."""

    def __init__(self, url: str) -> None:
        from .stores.remote import resolve_token

        self.url = url.rstrip("/")
        token = resolve_token(self.url)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def where(self) -> str:
        return self.url

    def _get(self, path: str, raw: bool = False, **params: Any) -> Any:
        """The JSON answer (``raw``: (content type, body bytes)); any failure is a `ReadError` naming it."""
        import http.client
        import urllib.error
        import urllib.request
        from urllib.parse import urlencode

        query = urlencode({k: v for k, v in params.items() if v is not None})
        try:
            req = urllib.request.Request(self.url + path + ("?" + query if query else ""), headers=self._headers)
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    status, ctype, body = r.status, r.headers.get("content-type", ""), r.read()
            except urllib.error.HTTPError as e:
                status, ctype, body = e.code, e.headers.get("content-type", ""), e.read()
        except (OSError, ValueError, http.client.HTTPException) as e:  # (URLError is an OSError)
            reason = getattr(e, "reason", e)
            raise ReadError(f"{self.url}: {type(reason).__name__}: {reason}") from None
        if status == 401:
            raise ReadError(f"{self.url} refused the token: `ml-dash login --token TOKEN --url {self.url}` or set "
                            "ML_DASH_TOKEN")
        if status == 404 and b"no such route" in body:
            raise ReadError(f"{self.url} has no read routes: the server is an older ml-dash")
        if status >= 400:
            try:
                detail = json.loads(body).get("detail")
            except (ValueError, AttributeError):
                detail = body[:200].decode(errors="replace")
            raise ReadError(f"{self.url}: HTTP {status}: {detail}")
        if raw:
            return ctype, body
        try:
            return _fast_loads(body)
        except ValueError:
            return json.loads(body)  # NaN and Infinity come as bare tokens, which orjson refuses

    def prefixes(self) -> list[str]:
        return [r["prefix"] for r in self._get("/api/v1/runs")["runs"]]

    def runs(self, last: list[tuple[str, str]]) -> list[dict[str, Any]]:
        sel = ",".join(f"{s}:{f}" if s else f for s, f in last) or None
        return list(self._get("/api/v1/runs", last=sel)["runs"])

    def _exp(self, prefix: str) -> str:
        return "/api/v1/experiments/" + quote(prefix, safe="")

    def show(self, prefix: str) -> dict[str, Any]:
        return dict(self._get(self._exp(prefix) + "/summary"))

    def metric_names(self, prefix: str) -> list[str]:
        return list(self._get(self._exp(prefix) + "/metrics")["metrics"])

    def columns(self, prefix: str, stream: str) -> Any:
        from .colview import BINARY_TYPE, Columns, unpack

        ctype, content = self._get(self._exp(prefix) + "/columns/metrics/" + quote(stream, safe=""), raw=True,
                                   format="binary")
        if ctype.startswith(BINARY_TYPE):
            return unpack(content)
        import numpy as np  # an older server: the JSON form

        body = json.loads(content)
        data = {}
        for k, v in body["columns"].items():
            arr = np.array([math.nan if x is None else x for x in v], dtype=np.float64)
            data[k] = arr.astype(np.int64) if k == "index" and not np.isnan(arr).any() else arr
        other = {k: np.array(v, dtype=object) for k, v in body.get("other", {}).items()}
        return Columns(data, other, int(body["rows"]), "metrics")


def source(args: argparse.Namespace) -> Local | Remote:
    url = getattr(args, "url", None) or os.environ.get("ML_DASH_API_URL")
    return Remote(url) if url else Local(args.root)


# ---- ls --------------------------------------------------------------------------------------------------------
_OPS = ("!=", ">=", "<=", "=", ">", "<", "~")


def parse_filter(text: str) -> tuple[str, str, str]:
    for op in _OPS:
        key, sep, value = text.partition(op)
        if sep and key.strip():
            return key.strip(), op, value.strip()
    raise ReadError(f"bad --filter {text!r}: expected KEY=VALUE, KEY!=VALUE, KEY>VALUE, KEY<VALUE, KEY>=VALUE, "
                    "KEY<=VALUE or KEY~GLOB (KEY: status, tag, prefix, or a parameter name)")


def _coerce(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _compare(actual: Any, op: str, want: str) -> bool:
    if op == "~":
        return actual is not None and fnmatch.fnmatchcase(str(actual), want)
    target = _coerce(want)
    if op in ("=", "!="):
        same = actual == target or str(actual) == want or (isinstance(actual, str) and actual.upper() == want.upper()
                                                           and want.isupper())
        return same if op == "=" else not same
    if actual is None or isinstance(actual, bool):
        return False
    try:
        a, b = (float(actual), float(target)) if not isinstance(target, str) else (str(actual), target)
    except (TypeError, ValueError):
        return False
    return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]  # type: ignore[operator]


def matches(run: dict[str, Any], filters: list[tuple[str, str, str]]) -> bool:
    for key, op, value in filters:
        k = key.lower()
        if k == "status":
            ok = _compare(run.get("status"), op, value.upper() if op != "~" else value.upper())
        elif k in ("tag", "tags"):
            tags = run.get("tags") or []
            hit = any(_compare(t, "~" if op == "~" else "=", value) for t in tags)
            ok = hit if op != "!=" else not any(_compare(t, "=", value) for t in tags)
        elif k in ("prefix", "name", "project"):
            p = run["prefix"]
            actual = p if k == "prefix" else p.split("/")[-1] if k == "name" else p.split("/")[0]
            ok = _compare(actual, op, value)
        else:
            params = run.get("params") or {}
            name = key[len("params."):] if key.startswith("params.") and key not in params else key
            ok = name in params and _compare(params[name], op, value) if op != "!=" else \
                _compare(params.get(name), op, value)
        if not ok:
            return False
    return True


def _when(iso: str | None) -> str:
    return iso.replace("T", " ")[:19] if iso else "-"


def _duration(sec: float | None) -> str:
    if sec is None or sec < 0:
        return "-"
    if sec < 60:
        return f"{sec:.1f}s"
    m, s = divmod(int(sec), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _rows(run: dict[str, Any]) -> str:
    parts = [f"{n}={'?' if c is None else c}" for n, c in run.get("metrics", {}).items()]
    return " ".join(parts) or "-"


def table(runs: list[dict[str, Any]], last: list[tuple[str, str]]) -> str:
    heads = ["PREFIX", "STATUS", "START (UTC)", "DURATION", "ROWS"] + [f"{s}:{f}" if s else f for s, f in last]
    rows = []
    for r in runs:
        vals = r.get("last", {})
        rows.append([r["prefix"], r["status"], _when(r.get("start")), _duration(r.get("duration")), _rows(r)]
                    + [_value(vals.get(f"{s}:{f}")) for s, f in last])
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _cmd_ls(args: argparse.Namespace) -> int:
    from .runs import parse_selector

    try:
        last = [parse_selector(m) for m in _split(args.metrics)]
        filters = [parse_filter(f) for f in args.filter or []]
        src = source(args)
        runs = [r for r in src.runs(last) if matches(r, filters)]
    except (ReadError, ValueError) as e:
        print(f"ml-dash ls: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(runs, indent=2, allow_nan=True))
    elif runs:
        print(table(runs, last))
    else:
        print(f"no runs under {src.where()}" + (" matching the filters" if filters else ""), file=sys.stderr)
    return 0


# ---- show ------------------------------------------------------------------------------------------------------
def _cmd_show(args: argparse.Namespace) -> int:
    from .runs import dumps

    try:
        src = source(args)
        if not args.prefix:
            for r in src.runs([]):
                print(f"{r['prefix']}\t{r['status']}")
            return 0
        print(dumps(src.show(args.prefix)))
    except ReadError as e:
        print(f"ml-dash show: {e}", file=sys.stderr)
        return 2
    return 0


# ---- export ----------------------------------------------------------------------------------------------------
def select_runs(available: list[str], patterns: list[str]) -> list[str]:
    """Exact prefixes, shell patterns (``proj/sweep-*``) and folders (``proj`` for every run under it)."""
    out: list[str] = []
    for pat in patterns:
        pat = pat.strip("/")
        hits = [p for p in available if p == pat or fnmatch.fnmatchcase(p, pat) or p.startswith(pat + "/")]
        if not hits:
            raise ReadError(f"no run matches {pat!r}")
        out += [h for h in hits if h not in out]
    return out


def collect(src: Local | Remote, prefixes: list[str], selectors: list[str]) -> list[tuple[str, str, Any, list[str]]]:
    """(run, stream, columns, fields) for every selected stream of every run."""
    from .runs import parse_selector

    wanted: dict[str, list[str] | None] = {}
    for sel in selectors:
        stream, field = parse_selector(sel) if ":" in sel else (sel, "")
        if field:
            got = wanted.setdefault(stream, [])
            if got is not None:
                got.append(field)
        else:
            wanted[stream] = None
    pairs = []
    for prefix in prefixes:
        names = src.metric_names(prefix)
        pairs += [(prefix, n) for n in (names if not wanted else [n for n in names if n in wanted])]
    if isinstance(src, Local) and len(pairs) > 1:
        src.prefetch(pairs)
    out = []
    for prefix, stream in pairs:
        cols = src.columns(prefix, stream)
        keep = wanted.get(stream)
        fields = list(cols) if keep is None else [k for k in cols if k in ("index", "_ts") or k in keep]
        out.append((prefix, stream, cols, fields))
    return out


def _cell(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def write_export(parts: list[tuple[str, str, Any, list[str]]], fmt: str, out: Path) -> int:

    header: list[str] = ["run", "stream"]
    for _, _, _, fields in parts:
        for name in fields:
            if name not in header:
                header.append(name)
    total = sum(int(c.rows) for _, _, c, _ in parts)
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ReadError("--format parquet needs pyarrow, which is not installed: pip install pyarrow "
                            "(or pip install './packages/core[parquet]'); csv and jsonl need nothing") from None
        arrays: dict[str, list[Any]] = {h: [] for h in header}
        for prefix, stream, cols, fields in parts:
            n = int(cols.rows)
            arrays["run"].append(pa.array([prefix] * n, pa.string()))
            arrays["stream"].append(pa.array([stream] * n, pa.string()))
            for h in header[2:]:
                if h in fields:
                    v = cols[h]
                    arrays[h].append(pa.array(v, from_pandas=False) if v.dtype != object else
                                     pa.array([None if x is None else str(x) for x in v], pa.string()))
                else:
                    arrays[h].append(None)
        table_cols = {}
        for h, chunks in arrays.items():
            typ = next((c.type for c in chunks if c is not None), pa.float64())
            if h not in ("run", "stream") and pa.types.is_integer(typ) and any(c is None for c in chunks):
                typ = pa.int64()
            filled = [c if c is not None else pa.nulls(int(p[2].rows), typ) for c, p in zip(chunks, parts, strict=True)]
            filled = [c.cast(typ) if c.type != typ else c for c in filled]
            table_cols[h] = pa.chunked_array(filled, typ) if filled else pa.chunked_array([], typ)
        pq.write_table(pa.table(table_cols), out)
        return total
    with open(out, "w", newline="", encoding="utf-8") as f:
        if fmt == "csv":
            w = csv.writer(f)
            w.writerow(header)
        for prefix, stream, cols, fields in parts:
            n = int(cols.rows)
            lists = []
            for h in header[2:]:
                if h not in fields:
                    lists.append([None] * n)
                    continue
                lists.append(_plain(cols[h]))
            if fmt == "csv":
                for i in range(n):
                    w.writerow([prefix, stream] + ["" if col[i] is None else _csv(col[i]) for col in lists])
            else:
                keys = header[2:]
                for i in range(n):
                    row: dict[str, Any] = {"run": prefix, "stream": stream}
                    for k, col in zip(keys, lists, strict=True):
                        if col[i] is not None:
                            row[k] = col[i]
                    f.write(json.dumps(row, allow_nan=True, default=str) + "\n")
    return total


def _plain(v: Any) -> list[Any]:
    """A column as Python values: None where absent; a float column holding only whole numbers as ints."""
    import numpy as np

    if v.dtype != np.float64:
        return list(v.tolist())
    present = v[~np.isnan(v)]
    whole = bool(len(present)) and bool(np.isfinite(present).all()) and bool((present == np.round(present)).all()) \
        and bool((np.abs(present) < 2**53).all())
    if whole:
        return [None if x != x else int(x) for x in v.tolist()]
    return [None if x != x else x for x in v.tolist()]


def _csv(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (dict, list)):
        return json.dumps(v, allow_nan=True)
    return v


def _cmd_export(args: argparse.Namespace) -> int:
    fmt = args.format or _guess_format(args.output)
    if fmt not in FORMATS:
        print(f"ml-dash export: --format must be one of {', '.join(FORMATS)} (could not tell from {args.output!r})",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        src = source(args)
        prefixes = select_runs(src.prefixes(), args.prefix)
        parts = collect(src, prefixes, _split(args.metrics))
        out = Path(args.output)
        if out.parent and not out.parent.exists():
            raise ReadError(f"no folder {out.parent} for {out}")
        rows = write_export(parts, fmt, out)
    except (ReadError, ValueError, OSError) as e:
        print(f"ml-dash export: {e}", file=sys.stderr)
        return 2
    print(f"ml-dash export: {rows} row(s) of {len({p for p, _, _, _ in parts})} run(s), {len(parts)} stream(s) "
          f"-> {args.output} ({fmt}, {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 0


def _split(values: list[str] | None) -> list[str]:
    """``-m a b``, ``-m a,b`` and ``-m a -m b`` alike."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _guess_format(path: str) -> str | None:
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"csv": "csv", "parquet": "parquet", "pq": "parquet", "jsonl": "jsonl", "ndjson": "jsonl"}.get(suffix)


# ---- the parsers ---------------------------------------------------------------------------------------------
def _source_args(p: argparse.ArgumentParser, root_positional: bool) -> None:
    if root_positional:
        p.add_argument("root", nargs="?", default=os.environ.get("ML_DASH_ROOT") or ".dash",
                       help="the .dash folder (default: $ML_DASH_ROOT, else .dash)")
    else:
        p.add_argument("--root", default=os.environ.get("ML_DASH_ROOT") or ".dash",
                       help="the .dash folder (default: $ML_DASH_ROOT, else .dash)")
    p.add_argument("--url", help="read from this ml-dash server instead (default: $ML_DASH_API_URL when set); "
                                 "token: $ML_DASH_TOKEN or `ml-dash login`")


def add_commands(sub: Any) -> None:
    ls = sub.add_parser("ls", help="list runs as a table: status, start, duration, rows per stream, last values",
                        description="List the runs under ROOT (or on a server with --url). CRASHED: a RUNNING run "
                                    "whose heartbeat stopped. Reads run and stream metadata only, and the last "
                                    "line of a stream for --metrics.")
    _source_args(ls, True)
    ls.add_argument("--metrics", "-m", nargs="+", action="extend", metavar="[STREAM:]FIELD",
                    help="add a column with the last value of each (e.g. train:loss val:acc; a bare FIELD is "
                         "looked up in 'train', then in the other streams)")
    ls.add_argument("--filter", "-f", action="append", metavar="KEY<op>VALUE",
                    help="keep runs matching (repeatable, all must hold): status=COMPLETED, tag=baseline, "
                         "prefix~'proj/sweep-*', lr>=0.001, optimizer=adam; <op> is = != > < >= <= or ~ (glob)")
    ls.add_argument("--json", action="store_true", help="print the runs as JSON (every summary field)")
    ls.set_defaults(func=_cmd_ls)

    sh = sub.add_parser("show", help="list the runs under a root, or summarise one run (with last/min/max of "
                                     "every metric field)")
    sh.add_argument("prefix", nargs="?")
    _source_args(sh, False)
    sh.set_defaults(func=_cmd_show)

    ex = sub.add_parser("export", help="write the metric rows of runs into one table (csv, parquet or jsonl)",
                        description="Write every row (full resolution) of the metric streams of the runs into one "
                                    "table with columns run, stream, index, _ts, then the fields.")
    ex.add_argument("prefix", nargs="+", help="run prefixes, shell patterns ('proj/sweep-*') or folders ('proj')")
    _source_args(ex, False)
    ex.add_argument("--metrics", "-m", nargs="+", action="extend", metavar="STREAM[:FIELD]",
                    help="only these streams (or stream:field columns); default: every metric stream")
    ex.add_argument("--format", choices=FORMATS, help="default: from the output file's suffix")
    ex.add_argument("-o", "--output", required=True, help="the file to write")
    ex.set_defaults(func=_cmd_export)
