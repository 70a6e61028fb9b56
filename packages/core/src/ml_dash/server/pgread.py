"""The read side of the PostgreSQL engine: run summaries (``ml-dash ls``/``show`` against the server) and a stream's
columns, giving the same answers as the `.dash` folder engine.

Columns are never built row by row in Python. Each complete range of `pgcols.BLOCK` rows is parsed once and its
columns kept in the database as one binary value (`pgcols`): a read fetches those. The rows after the last
complete block (and any block not stored yet) come out of the database as one aggregated text value per range,
the bytes of a JSON-lines file, and go through the same vectorised parser and in-memory column cache
(`colcache.read_numbered`) as a local file. Rows are numbered gap-free and never change once stored, so a second
read fetches only the rows appended since.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..colcache import Snapshot, StreamColumns, read_numbered
from ..columns import ROW_FIELDS
from ..colview import build
from ..jsonio import parse_line  # orjson, and the standard parser for NaN tokens
from ..names import metric_segments
from ..runs import make_summary, pick_last, show_from
from . import backend as b
from .pgcols import StreamBlocks

# Every run with its summary's stamp and the summary kept under its stamp (if any); the stamp changes with the
# run's experiment.json or parameters.json, a stream's row count, or `_SUMMARY_V`
_SUMMARY_V = 1  # the version of ``runs.make_summary``'s answer: raise it when that changes
_RUNS = ("SELECT e.id, e.prefix, %s || ':' || md5(e.info || chr(31) || coalesce(e.params, '')) || ':' || "
         "coalesce(st.s, ''), r.stamp, r.body FROM experiments e LEFT JOIN (SELECT exp_id, string_agg(id || '=' || "
         "next, ',' ORDER BY id) AS s FROM streams WHERE kind IN ('metrics', 'tracks') AND next > 0 GROUP BY exp_id) "
         'st ON st.exp_id = e.id LEFT JOIN run_summaries r ON r.exp_id = e.id ORDER BY e.prefix COLLATE "C"')

# the JSON `reads` answers with (\\uXXXX escapes, NaN and infinities as bare tokens)
_encode = json.JSONEncoder(allow_nan=True, separators=(",", ":"), default=str).encode

# One value per page, joined by the database (a COPY would hand over one message per row); the pages are small
# enough to sort in memory
_PAGE = ("SELECT string_agg(body, E'\\n' ORDER BY idx) FROM stream_rows WHERE stream_id = %s AND idx >= %s "
         "AND idx < %s")


class Reads:
    """Reads over a `PgBackend`'s pool (``pg``: the backend; its ``_tx`` gives a cursor, ``_prefix`` checks)."""

    def __init__(self, pg: Any) -> None:
        self.pg = pg

    @contextmanager
    def _cur(self) -> Iterator[Any]:
        with self.pg._tx() as cur:
            yield cur

    # ---- streams --------------------------------------------------------------------------------------------
    @staticmethod
    def stream_key(kind: str, name: str | None) -> str:
        b.check_kind(kind, name)
        return "" if kind == "logs" else "/".join(metric_segments(name)) if kind == "metrics" else str(name)

    def stream(self, prefix: str, kind: str, name: str | None) -> tuple[int, int] | None:
        """(stream id, rows) of one stream, None when it has none."""
        key = self.stream_key(kind, name)
        p = self.pg._prefix(prefix)
        with self._cur() as cur:
            row = cur.execute("SELECT s.id, s.next FROM streams s JOIN experiments e ON e.id = s.exp_id "
                              "WHERE e.prefix = %s AND s.kind = %s AND s.name = %s", (p, kind, key)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def lines(self, sid: int, start: int, stop: int) -> bytes:
        """Rows ``start..stop-1`` of a stream as JSON lines: one text value aggregated by the database, no
        per-row Python objects (rows are ASCII JSON with control characters escaped: no newline inside one)."""
        with self._cur() as cur:
            cur.execute("SET LOCAL work_mem = '256MB'")
            (text,) = cur.execute(_PAGE, (sid, start, stop)).fetchone()
        return text.encode() + b"\n" if text else b""

    def snapshot(self, prefix: str, kind: str, name: str | None) -> Any:
        """The column cache's snapshot of one stream (empty when it has no rows)."""

        found = self.stream(prefix, kind, name)
        if found is None:
            return Snapshot(StreamColumns(kind))
        sid, total = found
        key = f"{self.pg.url}\0{self.pg._prefix(prefix)}\0{kind}\0{name}\0{sid}"
        return read_numbered(key, kind, total, lambda start, stop: self.lines(sid, start, stop),
                             blocks=StreamBlocks(self, sid))

    def columns(self, prefix: str, kind: str, name: str | None, fields: Any = None) -> Any:
        """`Columns` of one stream, as ``load(prefix).metrics(name).columns(fields)`` gives them for a folder."""
        if kind == "tracks" and name is None:
            raise ValueError("a track topic is required")
        what = "logs" if kind == "logs" else f"{kind[:-1]} {name!r} of {prefix}"
        return build(self.snapshot(prefix, kind, name), fields, what)

    # ---- summaries ------------------------------------------------------------------------------------------
    def _counts(self, cur: Any, exp_ids: list[int] | None) -> dict[int, dict[str, dict[str, int | None]]]:
        """exp id -> {"metrics": {name: rows}, "tracks": {topic: entries}}: a stream's row count is what its
        metadata counts (``totalDataPoints``, ``totalEntries``), kept equal to ``next`` by every append."""
        q = "SELECT exp_id, kind, name, next FROM streams WHERE kind IN ('metrics', 'tracks') AND next > 0"
        rows = cur.execute(q + " AND exp_id = ANY(%s)", (exp_ids,)).fetchall() if exp_ids is not None else \
            cur.execute(q).fetchall()
        out: dict[int, dict[str, dict[str, int | None]]] = {}
        for exp_id, kind, name, n in rows:
            per = out.get(exp_id)
            if per is None:
                per = out[exp_id] = {"metrics": {}, "tracks": {}}
            per[kind][name] = n
        return out

    def _last_rows(self, cur: Any, exp_ids: list[int] | None, names: list[str] | None) -> dict[tuple[int, str], Any]:
        """(exp id, metric name) -> the fields of its last row, for the named metrics (None: every metric) of the
        given runs (None: every run)."""
        q = ("SELECT s.exp_id, s.name, r.body FROM streams s JOIN stream_rows r ON r.stream_id = s.id "
             "AND r.idx = s.next - 1 WHERE s.kind = 'metrics' AND s.next > 0")
        args: list[Any] = []
        if exp_ids is not None:
            q += " AND s.exp_id = ANY(%s)"
            args.append(exp_ids)
        if names is not None:
            q += " AND s.name = ANY(%s)"
            args.append(names)
        rows = cur.execute(q, args).fetchall()
        out = {}
        for exp_id, name, body in rows:
            obj = parse_line(body.encode())
            if obj is not None:
                out[(exp_id, name)] = ROW_FIELDS["metrics"](obj)
        return out

    def summaries(self, last: list[tuple[str, str]] | None = None, prefix: str | None = None) -> list[dict[str, Any]]:
        """`runs.summary` of every run (or of ``prefix`` only), by prefix: three queries whatever the count."""
        with self._cur() as cur:
            if prefix is None:
                exps = cur.execute('SELECT id, prefix, info, params FROM experiments ORDER BY prefix COLLATE "C"'
                                   ).fetchall()
                counts = self._counts(cur, None)
            else:
                exps = cur.execute("SELECT id, prefix, info, params FROM experiments WHERE prefix = %s",
                                   (self.pg._prefix(prefix),)).fetchall()
                counts = self._counts(cur, [e[0] for e in exps])
            lasts: dict[tuple[int, str], Any] = {}
            if last and exps:
                named = None if any(not s for s, _ in last) else sorted({s for s, _ in last})
                lasts = self._last_rows(cur, None if prefix is None else [e[0] for e in exps], named)
        out = []
        empty: dict[str, dict[str, int | None]] = {"metrics": {}, "tracks": {}}
        for exp_id, p, info, params in exps:
            c = counts.get(exp_id, empty)
            s = make_summary(p, parse_line(info.encode()), parse_line(params.encode()) if params else None,
                             c["metrics"], c["tracks"])
            if last:
                s["last"] = {f"{st}:{f}": pick_last(s["metrics"], st, f, lambda n, i=exp_id: lasts.get((i, n)))
                             for st, f in last}
            out.append(s)
        return out

    def summaries_json(self, last: list[tuple[str, str]] | None = None) -> bytes:
        """``{"runs": [...]}`` as `reads` answers it, from one query whatever the count: each finished run's summary
        is kept, encoded, in ``run_summaries`` under a stamp of what it is made of (its experiment.json and
        parameters.json, its streams' row counts, this version of the summary), so only the runs changed since
        are summarised again; a RUNNING run always is (it may have crashed since)."""
        with self._cur() as cur:
            rows = cur.execute(_RUNS, (_SUMMARY_V,)).fetchall()
            stale = [r[0] for r in rows if r[3] is None or r[3] != r[2]]
            exps = cur.execute("SELECT id, prefix, info, params FROM experiments WHERE id = ANY(%s)",
                               (stale,)).fetchall() if stale else []
            counts = self._counts(cur, stale) if stale else {}
        fresh: dict[int, str] = {}
        keep: list[tuple[int, str, str]] = []
        empty: dict[str, dict[str, int | None]] = {"metrics": {}, "tracks": {}}
        stamps = {r[0]: r[2] for r in rows}
        for exp_id, p, info, params in exps:
            c = counts.get(exp_id, empty)
            obj = parse_line(info.encode())
            body = _encode(make_summary(p, obj, parse_line(params.encode()) if params else None, c["metrics"],
                                        c["tracks"]))
            fresh[exp_id] = body
            if not isinstance(obj, dict) or obj.get("status") != "RUNNING":
                keep.append((exp_id, stamps[exp_id], body))
        if keep:
            try:
                with self._cur() as cur:
                    cur.executemany("INSERT INTO run_summaries (exp_id, stamp, body) VALUES (%s, %s, %s) ON CONFLICT "
                                    "(exp_id) DO UPDATE SET stamp = EXCLUDED.stamp, body = EXCLUDED.body", keep)
            except b.Unavailable:
                pass  # (a cache: summarised again next time)
        bodies = [fresh.get(r[0]) or r[4] for r in rows]
        if last and rows:
            named = None if any(not st for st, _ in last) else sorted({st for st, _ in last})
            with self._cur() as cur:
                lasts = self._last_rows(cur, None, named)
                names = self._metric_names(cur)
            for i, r in enumerate(rows):
                streams = dict.fromkeys(names.get(r[0], ()))
                picked = {f"{st}:{f}": pick_last(streams, st, f, lambda n, e=r[0]: lasts.get((e, n))) for st, f in last}
                bodies[i] = bodies[i][:-1] + ',"last":' + _encode(picked) + "}"
        return ('{"runs":[' + ",".join(bodies) + "]}").encode()

    @staticmethod
    def _metric_names(cur: Any) -> dict[int, list[str]]:
        """exp id -> its metric streams with rows, sorted (the order `make_summary` gives them)."""
        out: dict[int, list[str]] = {}
        for exp_id, name in cur.execute("SELECT exp_id, name FROM streams WHERE kind = 'metrics' AND next > 0 "
                                        'ORDER BY exp_id, name COLLATE "C"').fetchall():
            out.setdefault(exp_id, []).append(name)
        return out

    def show(self, prefix: str) -> dict[str, Any] | None:
        """`runs.show` of one run, None when there is no such run."""
        found = self.summaries(None, prefix)
        if not found:
            return None
        logs = self.stream(prefix, "logs", None)
        return show_from(found[0], self.pg.names(prefix, "metrics"),
                         lambda n: self.columns(prefix, "metrics", n), logs[1] if logs else 0, self.pg.files(prefix))
