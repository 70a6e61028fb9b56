"""Run summaries for listings (``ml-dash ls``, ``ml-dash show``, the server's read routes).

A summary comes from ``experiment.json``, ``parameters.json`` and each stream's ``metadata.json`` (row counts);
the data files are not read, except the last line of a stream when its last values are asked for. Local folders
and the server answer through the same functions, so both give the same output.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from . import layout
from .jsonio import iso_seconds, parse_line
from .reader import effective_status

TAIL_BYTES = 65536


def find_runs(root: str | os.PathLike[str], cache: ListingCache | None = None) -> list[str]:
    """Prefixes of every run under ``root``: folders holding ``experiment.json`` (their layout folders are not
    searched; other subfolders are, for runs nested under a run's prefix). With ``cache``, a folder whose mtime
    has not changed since it was listed is not listed again (creating, removing or replacing an entry changes it)."""
    base = os.fspath(root)
    out: list[str] = []
    seen: dict[str, Any] = {}

    def listing(d: str, rel: str) -> tuple[bool, list[str]] | None:
        if cache is not None:
            try:
                mtime = os.stat(d).st_mtime_ns
            except OSError:
                return None
            got = cache.dirs.get(rel)
            if got is not None and got[0] == mtime:
                seen[rel] = got
                return got[1], got[2]
        got = layout.scan_folder(d, rel)
        if got is None:
            return None
        is_run, subs = got
        if cache is not None and cache.settled(mtime):
            seen[rel] = [mtime, is_run, subs]
        return is_run, subs

    def walk(d: str, rel: str, depth: int) -> None:
        got = listing(d, rel)
        if got is None:
            return
        is_run, subs = got
        if is_run:
            out.append(rel)
        if depth > 32:
            return
        for name in subs:
            walk(os.path.join(d, name), f"{rel}/{name}" if rel else name, depth + 1)

    walk(base, "", 0)
    if cache is not None:
        cache.changed |= seen.keys() != cache.dirs.keys() or any(cache.dirs[k] is not v for k, v in seen.items())
        cache.dirs = seen
    return sorted(out)


class ListingCache:
    """What ``ml-dash ls`` learnt about a root, kept between runs beside the column cache (never inside ``.dash``;
    never required): each folder's mtime, whether it is a run and its subfolders to search; the summary of each
    finished run (status other than RUNNING), keyed by its experiment.json's and parameters.json's (mtime, size,
    inode). A warm listing of 10,000 runs is then a few stats per run. Anything changed within the last 2 seconds
    is not kept (a change in the same clock tick would not show in the mtime)."""

    VERSION = 1
    SETTLE_NS = 2_000_000_000

    def __init__(self, root: str | os.PathLike[str]) -> None:
        import hashlib

        from .config import cache_root

        key = hashlib.sha1(os.path.abspath(os.fspath(root)).encode()).hexdigest()[:24]
        self.file = cache_root() / "listings" / f"{key}.json"
        data = _read(self.file)
        ok = isinstance(data, dict) and data.get("v") == self.VERSION
        self.dirs: dict[str, Any] = data.get("dirs", {}) if ok else {}
        self.runs: dict[str, Any] = data.get("runs", {}) if ok else {}
        self.used: dict[str, Any] = {}
        self.changed = False
        self.now = time.time_ns()

    def settled(self, mtime_ns: int) -> bool:
        return self.now - mtime_ns > self.SETTLE_NS

    def save(self) -> None:
        if not self.changed and self.used.keys() == self.runs.keys():
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"v": self.VERSION, "dirs": self.dirs, "runs": self.used}))
            os.replace(tmp, self.file)
        except (OSError, ValueError, TypeError):
            pass


def _stat_key(*paths: str | os.PathLike[str]) -> list[Any]:
    out: list[Any] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
            continue
        out.append([st.st_mtime_ns, st.st_size, st.st_ino])
    return out


def _read(path: str | os.PathLike[str]) -> Any:
    """A small JSON file, parsed (None when missing or corrupt); orjson first, json for NaN tokens."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    obj = parse_line(raw) if raw else None
    return obj


def _streams(base: str, meta_key: str, name_key: str | None) -> dict[str, int | None]:
    """Stream name -> row count from metadata.json, for every stream folder under ``base`` (nested names are
    nested folders: a folder without data.jsonl is searched further)."""
    out: dict[str, int | None] = {}

    def walk(d: str, rel: str) -> None:
        try:
            with os.scandir(d) as it:
                subdirs = [(e.name, e.path) for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for name, path in subdirs:
            r = f"{rel}/{name}" if rel else name
            meta = _read(os.path.join(path, layout.META))
            if meta is None and not os.path.exists(os.path.join(path, layout.DATA)):
                walk(path, r)
                continue
            count = meta.get(meta_key) if isinstance(meta, dict) else None
            label = meta.get(name_key) if name_key and isinstance(meta, dict) else None
            out[label if isinstance(label, str) else r] = count if isinstance(count, int) else None
            if not name_key:
                walk(path, r)  # a metric "a" and a metric "a/b" can both exist

    walk(base, "")
    return dict(sorted(out.items()))


def summary(root: str | os.PathLike[str], prefix: str, last: list[tuple[str, str]] | None = None,
            cache: ListingCache | None = None) -> dict[str, Any]:
    """One run: prefix, status (CRASHED for a RUNNING run whose heartbeat stopped), start and end (ISO), duration
    (seconds), tags, params, rows per metric stream and entries per track; ``last``: the last value of each
    (stream, field) asked for, from the stream's last line. With ``cache``, a finished run's summary is reused
    while its experiment.json and parameters.json are unchanged."""
    run = os.path.join(os.fspath(root), *prefix.split("/"))
    out: dict[str, Any] | None = None
    if cache is not None:
        key = _stat_key(run + os.sep + layout.EXPERIMENT_JSON, run + os.sep + layout.PARAMETERS_JSON)
        got = cache.runs.get(prefix)
        if got is not None and got[0] == key:
            cache.used[prefix] = got
            out = dict(got[1])
    if out is None:
        folder = Path(run)
        info = _read(layout.info_file(folder))
        out = make_summary(prefix, info, _read(layout.params_file(folder)),
                           _streams(str(layout.metrics_dir(folder)), layout.COUNT_KEY["metrics"], None),
                           _streams(str(layout.tracks_dir(folder)), layout.COUNT_KEY["tracks"], layout.TOPIC_KEY))
        if cache is not None and isinstance(info, dict) and info.get("status") not in (None, "RUNNING") \
                and key[0] is not None and all(k is None or cache.settled(k[0]) for k in key):
            cache.used[prefix] = [key, dict(out)]
            cache.changed = True
    if last:
        out["last"] = {f"{s}:{f}": last_value(Path(run), s, f, out["metrics"]) for s, f in last}
    return out


def make_summary(prefix: str, info: Any, params: Any, metrics: dict[str, int | None],
                 tracks: dict[str, int | None]) -> dict[str, Any]:
    """A run's summary from its experiment.json, parameters.json and stream counts, wherever they are stored
    (a `.dash` folder, a database): every engine answers through this one function."""
    info = info if isinstance(info, dict) else {}
    pdata = params.get("data") if isinstance(params, dict) else None
    start, end = layout.run_span(info)
    t0, t1 = iso_seconds(start), iso_seconds(end)
    tags = info.get("tags")
    out: dict[str, Any] = {
        "prefix": prefix,
        "status": effective_status(info) or "UNKNOWN",
        "start": start,
        "end": end,
        "duration": round(t1 - t0, 3) if isinstance(t0, float) and isinstance(t1, float) else None,
        "tags": [str(t) for t in tags] if isinstance(tags, list) else [],
        "description": info.get("description") if isinstance(info.get("description"), str) else None,
        "params": dict(pdata) if isinstance(pdata, dict) else {},
        "metrics": dict(sorted(metrics.items())),
        "tracks": dict(sorted(tracks.items())),
    }
    if isinstance(info.get("statusReason"), str):
        out["statusReason"] = info["statusReason"]
    return out


def pick_last(streams: dict[str, Any], stream: str, field: str, last_of: Any) -> Any:
    """The last value of ``field`` in ``stream``; ``stream`` empty: 'train' when its last row has the field, else
    the first stream whose last row has it. ``last_of(name)``: a stream's last row's fields (None: none)."""
    names = [stream] if stream else (["train"] if "train" in streams else []) + [s for s in streams if s != "train"]
    for name in names:
        if name not in streams:
            continue
        row = last_of(name)
        if row is not None and field in row:
            return row[field]
    return None


def last_row(path: Path | None) -> dict[str, Any] | None:
    """The fields of the last complete, parseable line of a metric stream file (only its tail is read: 4 KiB,
    then up to 64 KiB for long lines)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            for want in (4096, TAIL_BYTES):
                start = max(0, size - want)
                f.seek(start)
                data = f.read()
                lines = data.split(b"\n")[:-1]  # complete lines; the first may be partial when start > 0
                for line in reversed(lines[1:] if start else lines):
                    obj = parse_line(line)
                    if obj is not None:
                        from .columns import ROW_FIELDS

                        return ROW_FIELDS["metrics"](obj)
                if start == 0:
                    break
    except OSError:
        return None
    return None


def last_value(run: Path, stream: str, field: str, streams: dict[str, Any]) -> Any:
    """``stream`` may be empty: then 'train' when it has the field, else the first stream whose last row has it."""
    return pick_last(streams, stream, field,
                     lambda name: last_row(_metric_file(run, name)))


def _metric_file(run: Path, name: str) -> Path | None:
    try:
        return run.joinpath(*layout.metric_parts(name))
    except (TypeError, ValueError):  # a folder no writer of the layout could have made
        return None


def parse_selector(text: str) -> tuple[str, str]:
    """'stream:field' -> (stream, field); 'field' -> ('', field)."""
    stream, sep, field = text.rpartition(":")
    if not field:
        raise ValueError(f"bad metric selector {text!r}: expected FIELD or STREAM:FIELD (e.g. train:loss)")
    return (stream if sep else ""), field


def stream_stats(cols: Any) -> dict[str, Any]:
    """Rows and, per numeric field, the last value (in index order, NaN skipped), min and max."""
    import numpy as np

    fields: dict[str, Any] = {}
    for k, v in cols.items():
        if k in ("index", "_ts") or v.dtype == object:
            continue
        v = np.asarray(v, dtype=np.float64)
        present = np.flatnonzero(~np.isnan(v))
        if not len(present):
            fields[k] = {"last": None, "min": None, "max": None, "count": 0}
            continue
        vals = v[present]
        fields[k] = {"last": _num(vals[-1]), "min": _num(vals.min()), "max": _num(vals.max()),
                     "count": int(len(present))}
    return {"rows": int(cols.rows), "fields": fields}


def _num(x: Any) -> Any:
    f = float(x)
    if math.isfinite(f) and f.is_integer() and abs(f) < 2**53:
        return int(f)
    return f


def show(view: Any) -> dict[str, Any]:
    """What ``ml-dash show PREFIX`` prints: the summary plus last/min/max of every metric field."""
    return show_from(summary(view._d.root, view.prefix), view.metrics.names(),
                     lambda n: view.metrics(n).columns(), view.logs.columns(["sequenceNumber"]).rows,
                     view.files.list())


def show_from(base: dict[str, Any], metric_names: Any, columns_of: Any, log_rows: int,
              files: list[dict[str, Any]]) -> dict[str, Any]:
    """``show``'s answer from a run's summary, its metric names, ``columns_of(name)``, its log count and file
    index, wherever they are stored."""
    out = dict(base)
    out["metrics"] = {n: stream_stats(columns_of(n)) for n in metric_names}
    out["logs"] = log_rows
    out["files"] = [f["path"].rstrip("/") + "/" + f["filename"] for f in files]
    return out


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, allow_nan=True, default=str)
