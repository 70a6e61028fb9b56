"""Run summaries for listings (``ml-dash ls``, ``ml-dash show``, the server's read routes).

A summary comes from ``experiment.json``, ``parameters.json`` and each stream's ``metadata.json`` (row counts);
the data files are not read, except the last line of a stream when its last values are asked for. Local folders
and the server answer through the same functions, so both give the same output.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .columns import iso_seconds, parse_line
from .reader import effective_status

LAYOUT_DIRS = {"metrics", "tracks", "logs", "files", ".ml_dash"}
TAIL_BYTES = 65536


def find_runs(root: str | os.PathLike[str]) -> list[str]:
    """Prefixes of every run under ``root``: folders holding ``experiment.json`` (their layout folders are not
    searched; other subfolders are, for runs nested under a run's prefix)."""
    base = os.fspath(root)
    out: list[str] = []

    def walk(d: str, rel: str, depth: int) -> None:
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            return
        names = {e.name for e in entries}
        is_run = "experiment.json" in names and "/" in rel
        if is_run:
            out.append(rel)
        if depth > 32:
            return
        for e in entries:
            if e.name.startswith(".") or is_run and e.name in LAYOUT_DIRS:
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    walk(e.path, f"{rel}/{e.name}" if rel else e.name, depth + 1)
            except OSError:
                continue

    walk(base, "", 0)
    return sorted(out)


def _read(path: str) -> Any:
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
            meta = _read(path + "/metadata.json")
            if meta is None and not os.path.exists(path + "/data.jsonl"):
                walk(path, r)
                continue
            count = meta.get(meta_key) if isinstance(meta, dict) else None
            label = meta.get(name_key) if name_key and isinstance(meta, dict) else None
            out[label if isinstance(label, str) else r] = count if isinstance(count, int) else None
            if not name_key:
                walk(path, r)  # a metric "a" and a metric "a/b" can both exist

    walk(base, "")
    return dict(sorted(out.items()))


def summary(root: str | os.PathLike[str], prefix: str, last: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """One run: prefix, status (CRASHED for a RUNNING run whose heartbeat stopped), start and end (ISO), duration
    (seconds), tags, params, rows per metric stream and entries per track; ``last``: the last value of each
    (stream, field) asked for, from the stream's last line."""
    run = os.path.join(os.fspath(root), *prefix.split("/"))
    out = make_summary(prefix, _read(run + "/experiment.json"), _read(run + "/parameters.json"),
                       _streams(run + "/metrics", "totalDataPoints", None),
                       _streams(run + "/tracks", "totalEntries", "topic"))
    if last:
        out["last"] = {f"{s}:{f}": last_value(Path(run), s, f, out["metrics"]) for s, f in last}
    return out


def make_summary(prefix: str, info: Any, params: Any, metrics: dict[str, int | None],
                 tracks: dict[str, int | None]) -> dict[str, Any]:
    """A run's summary from its experiment.json, parameters.json and stream counts, wherever they are stored
    (a `.dash` folder, a database): every engine answers through this one function."""
    info = info if isinstance(info, dict) else {}
    pdata = params.get("data") if isinstance(params, dict) else None
    start = info.get("created_at")
    end = info.get("endedAt") or info.get("heartbeatAt") or info.get("updated_at")
    t0, t1 = iso_seconds(start), iso_seconds(end)
    tags = info.get("tags")
    out: dict[str, Any] = {
        "prefix": prefix,
        "status": effective_status(info) or "UNKNOWN",
        "start": start if isinstance(start, str) else None,
        "end": end if isinstance(end, str) else None,
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


def last_row(path: Path) -> dict[str, Any] | None:
    """The fields of the last complete, parseable line of a metric stream file (only its tail is read: 4 KiB,
    then up to 64 KiB for long lines)."""
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
                     lambda name: last_row(run.joinpath("metrics", *name.split("/"), "data.jsonl")))


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
