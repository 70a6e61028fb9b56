"""The viewer's routes: three pages (one HTML shell), static assets, and read-only JSON/SSE under /api/view.

Every response carries a strict Content-Security-Policy (scripts only from this origin, no inline script);
the page renders everything from the `.dash` folder as text. Nothing here writes.
"""

from __future__ import annotations

import json
import math
import mimetypes
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from . import live
from .data import BadName, Columns, NotFound, Root, Source, log_row, search_logs
from .series import group, reduce

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
                    "referrer-policy": "no-referrer", "x-frame-options": "DENY",
                    "cross-origin-opener-policy": "same-origin"}
SAFE_INLINE = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}
PREVIEW_BYTES = 256 * 1024
SEP = "\x1f"
MAX_RUNS = 1000  # runs in one compare request
MAX_FIELDS = 100  # charts in one multiseries request
EMBED_SECONDS = 0.15  # the run page's first answers go into its HTML when they take no longer than this
# (ML_DASH_VIEW_EMBED_MS overrides it: 0 never waits, so the page always asks the API)
EMBED_BYTES = 1 << 20  # ... and are no larger than this
EMBED_CHARTS = 12  # the run page's first charts (in page order) whose data comes in its HTML too: a first screen
EMBED_N = 680  # their buckets: at least the plot width of a chart card in a grid of two columns or more
# the chart options of a page's URL and their default values: a page with another value asks the API for its charts
VIEW_DEFAULTS = {"x": ("", "step"), "smooth": ("", "none"), "logx": ("", "0"), "xmin": ("",), "xmax": ("",),
                 "group": ("",), "only": ("",)}
SCRIPTS = ("util", "chart", "runs", "run", "compare", "app")  # load order
_background: set[Any] = set()  # tasks started by a page request (kept referenced until done)


_bundle: dict[str, Any] = {}


def bundle() -> tuple[bytes, str]:
    """The viewer's scripts as one file (one request instead of six) and a short hash that versions its URL."""
    if not _bundle:
        import hashlib

        body = b"\n".join((STATIC / f"{name}.js").read_bytes() for name in SCRIPTS)
        _bundle["body"] = body
        for f in ("vendor/uPlot.iife.min.js", "vendor/uPlot.min.css", "app.css"):
            body += (STATIC / f).read_bytes()
        _bundle["v"] = hashlib.sha1(body).hexdigest()[:12]
    return _bundle["body"], _bundle["v"]


def shell(static: str = "/static", page: str = "", extra_scripts: list[str] | None = None, meta_csp: bool = False,
          attrs: dict[str, str] | None = None) -> str:
    """The one HTML page; the script reads the location (or the body's data attributes) to pick the view."""
    from html import escape

    v = "?v=" + bundle()[1]
    # in the head, deferred: fetched (and compiled off the main thread) while the rest of the page streams in, run
    # in order once it is parsed; the viewer's script first: it sends the page's first requests while the
    # browser evaluates uPlot
    scripts = [*(extra_scripts or []), f"{static}/viewer.js{v}", f"{static}/vendor/uPlot.iife.min.js{v}"]
    datas = "".join(f' data-{k}="{escape(val)}"' for k, val in (attrs or {}).items())
    meta = CSP.replace("'self'", "file:").replace("; frame-ancestors 'none'", "")  # not allowed in <meta>
    csp = f'<meta http-equiv="Content-Security-Policy" content="{meta}">' if meta_csp else ""
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">" + csp +
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>ml-dash</title>"
            f"<link rel=\"stylesheet\" href=\"{static}/vendor/uPlot.min.css{v}\">"
            f"<link rel=\"stylesheet\" href=\"{static}/app.css{v}\">"
            + "".join(f"<script defer src=\"{escape(s)}\"></script>" for s in scripts) + "</head>"
            f"<body data-page=\"{escape(page)}\"{datas}><div id=\"app\"><p class=\"note\">Loading…</p></div>"
            "<noscript>ml-dash's viewer needs JavaScript.</noscript></body></html>\n")


def data_blocks(data: dict[str, bytes]) -> str:
    """JSON answers by element id as data blocks (the page's script reads them instead of asking the API)."""
    from html import escape

    return "".join(f'<script type="application/json" id="{escape(k)}">{_json_in_html(body)}</script>'
                   for k, body in data.items())


def _json_in_html(body: bytes) -> str:
    """JSON as the text of a <script type="application/json"> element: `<`, `>`, `&` and the two line separators
    written as escapes (they only occur inside strings), so no value can end the element or open a comment."""
    text = body.decode("utf-8")
    for ch in ("&", "<", ">", "\u2028", "\u2029"):
        text = text.replace(ch, "\\u%04x" % ord(ch))
    return text


class JSONSafe(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content)


def dumps(content: Any) -> bytes:
    """Compact JSON with NaN and infinities as null (orjson writes them so; the fallback cleans them first)."""
    try:
        import orjson

        return orjson.dumps(content)
    except (ImportError, TypeError):  # an integer beyond 64 bits, a key that is not a string, ...
        pass
    try:  # the common case: nothing to clean
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()
    except (ValueError, TypeError):
        return json.dumps(_safe(content), allow_nan=False, separators=(",", ":")).encode()


def _safe(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_safe(v) for v in o]
    if o is None or isinstance(o, (str, int, bool)):
        return o
    return str(o)


def _q(request: Request, key: str, default: str | None = None) -> str | None:
    return request.query_params.get(key, default)


def _float(request: Request, key: str) -> float | None:
    v = request.query_params.get(key)
    if v in (None, "", "null"):
        return None
    try:
        f = float(v)  # type: ignore[arg-type,unused-ignore]
    except ValueError:
        raise BadName(f"{key} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise BadName(f"{key} must be finite")
    return f


def _int(request: Request, key: str, default: int) -> int:
    v = request.query_params.get(key)
    if v in (None, ""):
        return default
    try:
        return int(v)  # type: ignore[arg-type,unused-ignore]
    except ValueError:
        raise BadName(f"{key} must be an integer, got {v!r}") from None


def _prefix(request: Request) -> str:
    p = request.query_params.get("run")
    if not p:
        raise BadName("the 'run' query parameter (a run prefix 'project/name') is required")
    return p.replace(SEP, "/")


class Memo:
    """Encoded responses by question, least recently used dropped beyond ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self.items: OrderedDict[Any, bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Any) -> bytes | None:
        with self.lock:
            body = self.items.get(key)
            if body is not None:
                self.items.move_to_end(key)
            return body

    def put(self, key: Any, body: bytes) -> None:
        if len(body) > self.budget // 4:
            return
        with self.lock:
            old = self.items.pop(key, None)
            self.size += len(body) - (len(old) if old is not None else 0)
            self.items[key] = body
            while self.size > self.budget:
                _, dropped = self.items.popitem(last=False)
                self.size -= len(dropped)


def routes(source: str | Path | Source, static_route: bool = True) -> tuple[list[Any], Source]:
    """The viewer's routes over ``source``: a `.dash` folder, or any `Source` (a server's database)."""
    root: Source = Root(source) if isinstance(source, (str, Path)) else source
    memo = Memo(24 << 20)
    batch = getattr(root, "batch", None)

    def once(fn: Any, *args: Any) -> Any:
        """``fn(*args)`` resolving each run's folder once (a request's work runs on one thread)."""
        if batch is None:
            return fn(*args)
        with batch():
            return fn(*args)

    def status_of(prefix: str) -> str:
        try:
            return str(root.summary(prefix)["status"])
        except (NotFound, BadName):
            return "DELETED"

    async def page(request: Request) -> Response:
        # the page will ask for these runs' streams once its scripts have loaded: start reading them now
        prefetch = getattr(root, "prefetch", None)
        if prefetch is not None:
            wanted = ([request.path_params["prefix"]] if "prefix" in request.path_params else
                      [p for p in (_q(request, "runs") or "").split(",") if p][:MAX_RUNS])
            if wanted:
                import asyncio

                _background.add(task := asyncio.ensure_future(prefetch(wanted)))
                task.add_done_callback(_background.discard)
        if "prefix" not in request.path_params:
            return Response(shell(), media_type="text/html; charset=utf-8")
        # a run's page: its head at once (the browser fetches the stylesheets), then its first answers, then the rest
        text = shell()
        cut = text.index("</noscript>") + len("</noscript>")

        charts = all(request.query_params.get(k, "") in ok for k, ok in VIEW_DEFAULTS.items())

        async def body() -> Any:
            yield text[:cut].encode()
            yield (data_blocks(await first_answers(request.path_params["prefix"], charts)) + text[cut:]).encode()

        return StreamingResponse(body(), media_type="text/html; charset=utf-8", headers={"cache-control": "no-store"})

    import os

    embed_seconds = float(os.environ.get("ML_DASH_VIEW_EMBED_MS") or EMBED_SECONDS * 1000) / 1000
    pending: dict[tuple[str, str], tuple[float, Any]] = {}  # answers under way for a page's first request

    async def first_answers(prefix: str, charts: bool = True) -> dict[str, bytes]:
        """The run page's first answers (its info, the last screen of its logs: what /api/view/run and
        /api/view/logs answer; with ``charts``, the data of its first charts) that come within EMBED_SECONDS; one
        slower, larger or failing is left out and the page asks the API for it, which then takes the answer under
        way (or says what is wrong; the charts ask for their data as they do without an answer at hand)."""
        import asyncio
        import time

        info = asyncio.ensure_future(run_answer(prefix))
        logs = asyncio.ensure_future(run_in_threadpool(logs_answer, prefix, "", "", False, 200, -1, None))
        tasks: dict[str, asyncio.Future[Any]] = {"run": info, "logs": logs}
        drawn: list[tuple[list[str], bytes]] = []  # the first charts' answers, in page order, as they come
        if charts:
            tasks["series"] = asyncio.ensure_future(first_series(prefix, info, drawn))
        done, _ = await asyncio.wait(tasks.values(), timeout=embed_seconds)
        out: dict[str, bytes] = {}
        now = time.monotonic()
        for k, t in tasks.items():
            t.add_done_callback(lambda t: t.cancelled() or t.exception())  # (an error is the API call's to report)
            if k == "series":  # the charts done by now are taken below (the others ask the API, at their width)
                t.cancel()
                continue
            if t in done and t.exception() is None:
                body = dumps(t.result())
                if len(body) <= EMBED_BYTES:
                    out["mld-" + k] = body
                    continue
            for key in [key for key, (at, _) in pending.items() if now - at > 10]:
                del pending[key]
            pending[(k, prefix)] = (now, t)
        size, first = 0, []
        for chart, body in list(drawn):
            size += len(body)
            if size > EMBED_BYTES:
                break
            first.append((chart, body))
        if first:  # an index, then one block per chart (the page parses the blocks of the charts it draws)
            out["mld-series"] = dumps({"run": prefix, "n": EMBED_N, "charts": [c for c, _ in first]})
            out.update((f"mld-series-{i}", body) for i, (_, body) in enumerate(first))
        return out

    async def first_series(prefix: str, info: Any, drawn: list[tuple[list[str], bytes]]) -> None:
        """The data of the run page's first EMBED_CHARTS charts (in the page's order: each stream's numeric
        fields, the `sys` stream last) in the page's default view, at EMBED_N buckets, appended to ``drawn`` one
        chart at a time (the page takes those done by its deadline). Read after the run's info: each answer's
        `lastIndex` is where that chart's live rows resume (rows the info's offset is behind of are skipped by
        their index)."""
        import asyncio

        streams = (await asyncio.shield(info))["streams"]  # (cancelling this leaves the info's task alone)
        names = [n for n in streams if n != "sys"] + (["sys"] if "sys" in streams else [])
        charts = [[n, f] for n in names for f in streams[n]["fields"]
                  if f not in ("step", "epoch") or len(streams[n]["fields"]) == 1][:EMBED_CHARTS]
        for name, field in charts:
            body = await series_of([prefix], name, [field], "step", EMBED_N, None, None, None, None, False, None)
            drawn.append(([name, field], body[0]))

    async def taken(kind: str, prefix: str) -> Any:
        """The answer a run page's HTML left out, under way since the page was asked for (None: none)."""
        import time

        got = pending.pop((kind, prefix), None)
        if got is None or time.monotonic() - got[0] > 10:
            return None
        return await got[1]

    async def viewer_js(request: Request) -> Response:
        body, v = bundle()
        return Response(body, media_type="text/javascript; charset=utf-8", headers={"etag": f'"{v}"'})

    async def api_runs(request: Request) -> Response:
        wanted = [m for m in (_q(request, "metrics") or "").split(",") if m]

        def work() -> dict[str, Any]:
            out = root.summaries()
            for s in out if wanted else []:
                try:
                    s["metrics"] = _metric_stats(root, s["prefix"], wanted)
                except (NotFound, BadName):
                    s["metrics"] = {}
            return {"runs": out, "root": root.label}

        return JSONSafe(await run_in_threadpool(work))

    async def previews(prefixes: list[str]) -> tuple[dict[str, dict[str, Columns]], list[str]]:
        """The streams of these runs whose first full read is long and under way, as their sampled previews (a
        page never waits for them: its charts ask again), and the runs that could not be found."""
        probe = getattr(root, "probe", None)
        settle = getattr(root, "settle", None)
        if settle is not None:
            await settle(prefixes)

        def slow() -> tuple[list[tuple[str, str]], list[str]]:
            out, notes = [], []
            for p in prefixes:
                try:
                    out += [(p, n) for n in root.stream_names(p) if probe is not None and probe(p, n)[1]]
                except (NotFound, BadName) as e:
                    notes.append(f"{p}: {e}")
            return out, notes

        todo, notes = await run_in_threadpool(once, slow)
        pre: dict[str, dict[str, Columns]] = {}
        for p, n in todo:
            pre.setdefault(p, {})[n], _ = await root.stream_columns_or_preview(p, n, 0.0)
        return pre, notes

    async def run_answer(prefix: str) -> dict[str, Any]:
        pre, notes = await previews([prefix])
        if notes:
            await run_in_threadpool(root.stream_names, prefix)  # raises the NotFound / BadName
        info: dict[str, Any] = await run_in_threadpool(once, run_info, root, prefix, pre.get(prefix))
        return info

    async def api_run(request: Request) -> Response:
        prefix = _prefix(request)
        return JSONSafe(await taken("run", prefix) or await run_answer(prefix))

    async def api_runinfo(request: Request) -> Response:
        """Several runs' info in one request (the compare page); logs are not counted here."""
        prefixes = [p.replace(SEP, "/") for p in request.query_params.getlist("run")][:MAX_RUNS]
        pre, notes = await previews(prefixes)

        def work() -> list[dict[str, Any]]:
            out = []
            for prefix in prefixes:
                try:
                    out.append(run_info(root, prefix, pre.get(prefix), False))
                except (NotFound, BadName) as e:
                    if not any(n.startswith(f"{prefix}: ") for n in notes):
                        notes.append(f"{prefix}: {e}")
            return out

        out = await run_in_threadpool(once, work)
        return JSONSafe({"runs": out, "notes": notes})

    async def series(request: Request, fields: list[str]) -> list[bytes]:
        """The encoded chart data of each field of one stream for the runs asked (see `reduce`)."""
        prefixes = [p.replace(SEP, "/") for p in request.query_params.getlist("run")]
        if not prefixes:
            raise BadName("at least one 'run' query parameter is required")
        stream = _q(request, "stream")
        if not stream or not fields or not all(fields):
            raise BadName("'stream' and 'field' are required")
        wait = _float(request, "wait")  # a chart that drew a preview asks again: answer once the exact read is done
        return await series_of(prefixes, stream, fields, _q(request, "x", "step") or "step", _int(request, "n", 1000),
                               _float(request, "xmin"), _float(request, "xmax"), _q(request, "smooth"),
                               _q(request, "group"), _q(request, "xlog") in ("1", "true"),
                               None if wait is None else max(0.0, min(wait, 30.0)))

    async def series_of(prefixes: list[str], stream: str, fields: list[str], x: str, n: int, xmin: float | None,
                        xmax: float | None, spec: str | None, by: str | None, xlog: bool,
                        wait: float | None) -> list[bytes]:
        probe = getattr(root, "probe", None)

        def look() -> tuple[list[str], list[str], dict[str, str], list[Any], list[str], list[bytes | None]]:
            notes, ok = [], []
            for p in prefixes:
                try:
                    root.summary(p)
                except NotFound as e:
                    notes.append(str(e))
                    continue
                ok.append(p)
            key_of = {}
            for p in ok if by else []:
                s = root.summary(p)
                v = s["tags"] if by == "tag" else s["params"].get(by, "(none)")
                key_of[p] = f"{by}={','.join(v) if isinstance(v, list) else v}"
            # the same question about the same bytes gets the same answer: a reload or a second tab costs a
            # lookup, found by each stream's file identity, change time and size without reading it
            probes = [probe(p, stream) if probe is not None else ((), False) for p in ok]
            slow = [p for p, (_, large) in zip(ok, probes, strict=True) if large]
            base = None if notes or slow or probe is None or not all(st for st, _ in probes) else (
                tuple(zip(ok, (st for st, _ in probes), strict=True)),
                stream, x, n, xmin, xmax, spec, xlog, tuple(sorted(key_of.items())))
            keys = [None if base is None else (base, f) for f in fields]
            return ok, notes, key_of, keys, slow, [memo.get(k) if k is not None else None for k in keys]

        ok, notes, key_of, keys, slow, bodies = await run_in_threadpool(once, look)
        if all(b is not None for b in bodies):
            return [b for b in bodies if b is not None]
        got: dict[str, Columns] = {}
        approximate = False
        for p in slow:  # large streams not read yet: their preview, unless the exact read ends within ``wait``
            got[p], approx = await root.stream_columns_or_preview(p, stream, wait)
            approximate = approximate or approx

        def work() -> list[bytes]:
            cols = [(p, got[p] if p in got else root.stream_columns(p, stream)) for p in ok]
            out = []
            for field, key, body in zip(fields, keys, bodies, strict=True):
                if body is None:
                    try:
                        res = reduce(cols, field, x, n, xmin, xmax, spec, xlog)
                    except (KeyError, ValueError) as e:
                        if len(fields) == 1:
                            raise BadName(str(e).strip("'\"")) from None
                        res = {"error": str(e).strip("'\"")}  # one chart of several: its own note
                        key = None
                    if by and "runs" in res:
                        res["runs"] = group(res["runs"], key_of)
                    res.update(stream=stream, field=field, xAxis=x, xlog=xlog, notes=notes, approximate=approximate)
                    body = dumps(res)
                    if key is not None and not approximate:
                        memo.put(key, body)
                out.append(body)
            return out

        return await run_in_threadpool(once, work)

    async def api_series(request: Request) -> Response:
        return Response((await series(request, [_q(request, "field") or ""]))[0], media_type="application/json")

    async def api_multiseries(request: Request) -> Response:
        """Several charts of one stream in one request (the charts that came into view together)."""
        fields = request.query_params.getlist("field")
        if len(fields) > MAX_FIELDS:
            raise BadName(f"at most {MAX_FIELDS} fields in one request, got {len(fields)}")
        bodies = await series(request, fields)
        return Response(b'{"series":[' + b",".join(bodies) + b"]}", media_type="application/json")

    async def api_logs(request: Request) -> Response:
        prefix = _prefix(request)
        level, q, regex = _q(request, "level"), _q(request, "q"), _q(request, "regex") in ("1", "true")
        limit = max(1, min(_int(request, "limit", 200), 5000))
        start = _int(request, "start", -1)
        at = _float(request, "at")
        if not level and not q and at is None and start < 0 and limit == 200:
            first = await taken("logs", prefix)
            if first is not None:
                return JSONSafe(first)
        return JSONSafe(await run_in_threadpool(logs_answer, prefix, level, q, regex, limit, start, at))

    tail = getattr(root, "logs_tail", None)

    def logs_answer(prefix: str, level: str | None, q: str | None, regex: bool, limit: int, start: int,
                    at: float | None) -> dict[str, Any]:
        if tail is not None and not level and not q and at is None and start < 0:
            got = tail(prefix, limit)  # the last screen, read from the end of the file
            if got is not None:
                last: dict[str, Any] = got
                return last
        lg = root.run_logs(prefix)
        idx = search_logs(lg, level, q, regex)
        total = len(idx)
        s = start
        if at is not None:  # the first matching line at or after a time
            import bisect

            ts = [lg.ts[i] for i in idx]
            s = bisect.bisect_left(ts, at) if all(a <= b for a, b in zip(ts, ts[1:], strict=False)) else 0
        if s < 0:
            s = max(0, total - limit)
        sel = idx[s:s + limit]
        return {"total": len(lg.message), "matched": total, "start": s,
                "rows": [log_row(lg, i) for i in sel], "offset": lg.offset, "invalid": lg.invalid}

    async def api_track(request: Request) -> Response:
        prefix = _prefix(request)
        topic = _q(request, "topic") or ""

        return JSONSafe(await run_in_threadpool(track_data, root, prefix, topic))

    async def api_files(request: Request) -> Response:
        prefix = _prefix(request)
        out = []
        for e in await run_in_threadpool(root.file_list, prefix):
            out.append({k: e.get(k) for k in ("id", "path", "filename", "sizeBytes", "contentType", "createdAt",
                                               "metadata", "description", "tags")})
        return JSONSafe({"files": out})

    async def api_file(request: Request) -> Response:
        prefix = _prefix(request)
        fid = _q(request, "id") or ""
        e, content = await run_in_threadpool(root.file_content, prefix, fid)
        name = str(e["filename"])
        ctype = str(e.get("contentType") or mimetypes.guess_type(name)[0] or "application/octet-stream")
        if _q(request, "preview"):
            raw = await run_in_threadpool(_head, content, PREVIEW_BYTES + 1)
            return JSONSafe({"filename": name, "text": raw[:PREVIEW_BYTES].decode("utf-8", "replace"),
                             "truncated": len(raw) > PREVIEW_BYTES, "contentType": ctype})
        inline = ctype in SAFE_INLINE and not _q(request, "download")
        media = ctype if inline else "application/octet-stream"
        resp: Response
        if isinstance(content, Path):
            resp = FileResponse(content, media_type=media, filename=name,
                                content_disposition_type="inline" if inline else "attachment")
        else:  # an object store's chunks
            from urllib.parse import quote

            disp = f"{'inline' if inline else 'attachment'}; filename*=utf-8''{quote(name)}"
            resp = StreamingResponse(iterate_in_threadpool(content), media_type=media,
                                     headers={"content-disposition": disp})
        resp.headers["content-security-policy"] = "default-src 'none'; sandbox"
        return resp

    async def api_live(request: Request) -> Response:
        subs = live.parse_subs(_q(request, "subs"))
        gen = live.events(root, subs, request.headers.get("last-event-id"), request.is_disconnected, status_of)
        return StreamingResponse(gen, media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    r: list[BaseRoute] = [
        Route("/", page, methods=["GET"]),
        Route("/run/{prefix:path}", page, methods=["GET"]),
        Route("/compare", page, methods=["GET"]),
        Route("/static/viewer.js", viewer_js, methods=["GET"]),
        Route("/api/view/runs", api_runs, methods=["GET"]),
        Route("/api/view/run", api_run, methods=["GET"]),
        Route("/api/view/runinfo", api_runinfo, methods=["GET"]),
        Route("/api/view/series", api_series, methods=["GET"]),
        Route("/api/view/multiseries", api_multiseries, methods=["GET"]),
        Route("/api/view/logs", api_logs, methods=["GET"]),
        Route("/api/view/track", api_track, methods=["GET"]),
        Route("/api/view/files", api_files, methods=["GET"]),
        Route("/api/view/file", api_file, methods=["GET"]),
        Route("/api/view/live", api_live, methods=["GET"]),
    ]
    if static_route:
        r.append(Mount("/static", app=StaticFiles(directory=STATIC), name="static"))
    return r, root


def run_info(root: Source, prefix: str, pre: dict[str, Columns] | None = None, logs: bool = True) -> dict[str, Any]:
    """A run's summary plus its streams (numeric fields, rows, offset), topics, file and log counts.
    ``pre``: columns already at hand per stream (exact or preview)."""
    s = root.summary(prefix)
    streams = {}
    for name in root.stream_names(prefix):
        c = (pre or {}).get(name) or root.stream_columns(prefix, name)
        fields = [f for f, a in c.cols.items() if f not in ("index", "_ts") and np.isfinite(a).any()]
        streams[name] = {"fields": fields, "rows": c.rows, "invalid": c.invalid, "offset": c.offset,
                         "nonNumeric": sorted(f for f in c.non_numeric if f not in fields),
                         "someNonNumeric": sorted(f for f in c.non_numeric if f in fields)}
    s.update(streams=streams, topics=root.topic_list(prefix), files=len(root.file_list(prefix)))
    if logs:
        meta = getattr(root, "logs_meta", None)  # (without reading the logs whole where the source can)
        if meta is not None:
            s["logs"] = meta(prefix)
        else:
            lg = root.run_logs(prefix)
            s["logs"] = {"total": len(lg.message), "offset": lg.offset, "invalid": lg.invalid}
    return s


def track_data(root: Source, prefix: str, topic: str) -> dict[str, Any]:
    """A track topic as columns (entries sharing a timestamp merged), with its numeric column names."""
    rows, invalid = root.track_rows(prefix, topic)
    cols: dict[str, list[Any]] = {}
    for k, r in enumerate(rows):
        for key, v in r.items():
            col = cols.setdefault(key, [None] * k)
            col.append(v if isinstance(v, (int, float)) and not isinstance(v, bool) else None)
        for col in cols.values():
            if len(col) < k + 1:
                col.append(None)
    numeric = [k for k, v in cols.items() if k != "timestamp" and any(x is not None for x in v)]
    return {"topic": topic, "rows": len(rows), "invalid": invalid, "columns": cols, "numeric": numeric}


def _head(content: Path | Any, n: int) -> bytes:
    """The first ``n`` bytes of a file's content (a local path or an iterator of chunks)."""
    if isinstance(content, Path):
        with open(content, "rb") as f:
            return f.read(n)
    out = b""
    for chunk in content:
        out += chunk
        if len(out) >= n:
            break
    close = getattr(content, "close", None)
    if close is not None:
        close()
    return out[:n]


def _metric_stats(root: Source, prefix: str, wanted: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in wanted:
        stream, _, field = m.rpartition("/")
        try:
            col = root.stream_columns(prefix, stream).cols.get(field)
        except (NotFound, BadName):
            col = None
        if col is None:
            continue
        fin = col[np.isfinite(col)]
        if len(fin):
            out[m] = {"last": float(fin[-1]), "min": float(fin.min()), "max": float(fin.max())}
    return out


def error_handlers() -> dict[Any, Any]:
    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONSafe({"detail": str(exc)}, 404)

    async def bad(request: Request, exc: Exception) -> Response:
        return JSONSafe({"detail": str(exc)}, 400)

    return {NotFound: not_found, BadName: bad}


class SecurityHeaders:
    """Adds the CSP and friends to every response that does not set its own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                have = {k.lower() for k, _ in headers}
                if scope["path"].startswith("/static/") and scope.get("query_string", b"").startswith(b"v="):
                    headers.append((b"cache-control", b"public, max-age=31536000, immutable"))
                for k, v in SECURITY_HEADERS.items():
                    if k.encode() not in have:
                        headers.append((k.encode(), v.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


def create_viewer_app(root: str | Path) -> Any:
    """The standalone viewer of ``ml-dash view``: read-only, no authentication (it listens on loopback)."""
    from starlette.applications import Starlette

    r, _ = routes(root)
    return SecurityHeaders(Starlette(routes=r, exception_handlers=error_handlers()))
