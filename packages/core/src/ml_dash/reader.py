"""Reading `.dash` experiments back: `load(prefix)` and the views the live Experiment reuses."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .config import default_root
from .jsonio import read_json, read_jsonl
from .layout import ExperimentDir
from .names import metric_segments
from .ring import recover
from .values import unflatten

STALE_AFTER = 60.0  # a RUNNING run whose heartbeat is older than this reads back as CRASHED


def merge_tracks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in rows:
        if out and out[-1].get("timestamp") == r.get("timestamp"):
            out[-1].update(r)
        else:
            out.append(dict(r))
    return out


def stream_columns(path: Path | None, kind: str, fields: str | Iterable[str] | None, what: str) -> Any:
    """Columns of one stream file (None: not written yet) through the column cache (numpy imported only here)."""
    from .colcache import Snapshot, StreamColumns, read
    from .colview import build

    snap = read(path, kind) if path is not None else Snapshot(StreamColumns(kind))
    return build(snap, fields, what)


class MetricReader:
    def __init__(self, d: ExperimentDir, name: str | None) -> None:
        self._d = d
        self._name = name
        self._path = d.path.joinpath("metrics", *metric_segments(name), "data.jsonl")

    def read(self) -> list[dict[str, Any]]:
        """Rows as stored: ``{"index": i, "data": {..., "_ts": t}, "createdAt": "...Z"}``, in index order."""
        recover(self._d)
        rows, _ = read_jsonl(self._path)
        rows.sort(key=lambda r: r.get("index", 0))
        return rows

    def columns(self, fields: str | Iterable[str] | None = None) -> Any:
        """numpy arrays per field: ``index`` (int64), ``_ts`` and every numeric field (float64, NaN where a row
        lacks it); see ``ml_dash.colview.Columns``. Parsed once, then only appended rows (column cache)."""
        recover(self._d)
        return stream_columns(self._path, "metrics", fields, f"metric stream {self._name!r}")

    def to_pandas(self, fields: str | Iterable[str] | None = None) -> Any:
        """The columns as a pandas DataFrame (needs pandas)."""
        return self.columns(fields).to_pandas()


class MetricsView:
    def __init__(self, d: ExperimentDir) -> None:
        self._d = d

    def __call__(self, name: str | None = None) -> MetricReader:
        return MetricReader(self._d, name)

    def names(self) -> list[str]:
        recover(self._d)
        base = self._d.path / "metrics"
        if not base.is_dir():
            return []
        return sorted(str(p.parent.relative_to(base)).replace(os.sep, "/") for p in base.rglob("data.jsonl"))


class LogsView:
    def __init__(self, d: ExperimentDir) -> None:
        self._d = d
        self._path = d.path / "logs" / "logs.jsonl"

    def read(self) -> list[dict[str, Any]]:
        recover(self._d)
        rows, _ = read_jsonl(self._path)
        rows.sort(key=lambda r: r.get("sequenceNumber", 0))
        return rows

    def columns(self, fields: str | Iterable[str] | None = None) -> Any:
        """``sequenceNumber`` (int64), ``timestamp`` (unix seconds), ``level``, ``message``, ``metadata``."""
        recover(self._d)
        return stream_columns(self._path, "logs", fields, "the logs")

    def to_pandas(self, fields: str | Iterable[str] | None = None) -> Any:
        return self.columns(fields).to_pandas()


class TrackReader:
    def __init__(self, d: ExperimentDir, topic: str) -> None:
        self._d = d
        self._topic = topic

    def _folder(self) -> Path | None:
        recover(self._d)
        base = self._d.path / "tracks"
        if not base.is_dir():
            return None
        for folder in sorted(base.iterdir()):
            meta = read_json(folder / "metadata.json")
            if isinstance(meta, dict) and meta.get("topic") == self._topic:
                return folder
        return None

    def read(self) -> list[dict[str, Any]]:
        """Entries ``{"timestamp": t, <fields>}``; entries sharing a timestamp come back merged."""
        folder = self._folder()
        if folder is None:
            return []
        rows, _ = read_jsonl(folder / "data.jsonl")
        return merge_tracks(rows)

    def columns(self, fields: str | Iterable[str] | None = None) -> Any:
        """``timestamp`` and every numeric field as numpy arrays, entries sharing a timestamp merged."""
        folder = self._folder()
        path = folder / "data.jsonl" if folder is not None else None
        return stream_columns(path, "tracks", fields, f"track {self._topic!r}")

    def to_pandas(self, fields: str | Iterable[str] | None = None) -> Any:
        return self.columns(fields).to_pandas()


class TracksView:
    def __init__(self, d: ExperimentDir) -> None:
        self._d = d

    def __call__(self, topic: str) -> TrackReader:
        return TrackReader(self._d, topic)

    def topics(self) -> list[str]:
        recover(self._d)
        base = self._d.path / "tracks"
        if not base.is_dir():
            return []
        out = []
        for folder in sorted(base.iterdir()):
            meta = read_json(folder / "metadata.json")
            if isinstance(meta, dict) and isinstance(meta.get("topic"), str):
                out.append(meta["topic"])
        return out


class FilesView:
    def __init__(self, d: ExperimentDir) -> None:
        self._d = d

    def list(self) -> list[dict[str, Any]]:
        """Index entries (``id``, ``path``, ``filename``, ``sizeBytes``, ``checksum``, ...) plus ``localPath``."""
        idx = read_json(self._d.path / "files" / ".files_metadata.json")
        entries = idx.get("files") if isinstance(idx, dict) else None
        out = []
        for e in entries or []:
            if not isinstance(e, dict) or e.get("deletedAt"):
                continue
            e = dict(e)
            try:
                e["localPath"] = str(self._d.file_path(e))
            except (KeyError, ValueError, TypeError):
                continue
            out.append(e)
        return out


class ParamsView:
    def __init__(self, d: ExperimentDir) -> None:
        self._d = d

    def get(self, flatten: bool = True) -> dict[str, Any]:
        data = read_json(self._d.path / "parameters.json")
        flat: dict[str, Any] = dict(data.get("data") or {}) if isinstance(data, dict) else {}
        return flat if flatten else unflatten(flat)


def effective_status(info: dict[str, Any] | None) -> str | None:
    if not isinstance(info, dict):
        return None
    status = info.get("status")
    if status == "RUNNING":
        beat = info.get("heartbeatAt") or info.get("updated_at")
        if isinstance(beat, str):
            try:
                t = _dt.datetime.fromisoformat(beat.rstrip("Z")).replace(tzinfo=_dt.timezone.utc).timestamp()
            except ValueError:
                return "CRASHED"
            if _dt.datetime.now(_dt.timezone.utc).timestamp() - t > STALE_AFTER:
                return "CRASHED"
    return status if isinstance(status, str) else None


class ExperimentView:
    """A read-only view of one experiment folder."""

    def __init__(self, prefix: str, dash_root: str | os.PathLike[str]) -> None:
        self._d = ExperimentDir(dash_root, prefix)
        if not (self._d.path / "experiment.json").exists():
            raise FileNotFoundError(f"no experiment {prefix!r} under {Path(dash_root)}")
        recover(self._d)  # records a killed writer left in its spill ring go into the journal now
        self.prefix = self._d.prefix
        self.project = self._d.project
        self.name = self._d.name
        self.folder = self._d.path
        self.metrics = MetricsView(self._d)
        self.logs = LogsView(self._d)
        self.tracks = TracksView(self._d)
        self.files = FilesView(self._d)
        self.params = ParamsView(self._d)

    @property
    def info(self) -> dict[str, Any]:
        info = read_json(self._d.path / "experiment.json")
        return info if isinstance(info, dict) else {}

    @property
    def status(self) -> str | None:
        """COMPLETED / FAILED / CANCELLED / RUNNING, or CRASHED for a RUNNING run whose heartbeat stopped."""
        return effective_status(self.info)

    def __repr__(self) -> str:
        return f"ExperimentView({self.prefix!r}, status={self.status!r})"


def load(prefix: str, dash_root: str | os.PathLike[str] | None = None) -> ExperimentView:
    """Open an existing experiment read-only."""
    if dash_root is None:
        dash_root = default_root()
    return ExperimentView(prefix, dash_root)


def list_experiments(dash_root: str | os.PathLike[str]) -> list[str]:
    """Prefixes of every experiment under a root."""
    root = Path(dash_root)
    out = []
    for p in root.rglob("experiment.json"):
        if ".ml_dash" in p.parts:
            continue
        out.append(str(p.parent.relative_to(root)).replace(os.sep, "/"))
    return sorted(out)
