"""Reading `.dash` experiments back: `load(prefix)` and the views the live Experiment reuses."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .config import default_root
from .jsonio import read_jsonl
from .layout import EXPERIMENT_JSON, STALE_AFTER, ExperimentDir, effective_status, merge_tracks
from .layout import list_runs as list_experiments
from .ring import recover
from .values import unflatten

__all__ = ["STALE_AFTER", "ExperimentView", "FilesView", "LogsView", "MetricsView", "ParamsView", "TracksView",
           "effective_status", "list_experiments", "load", "merge_tracks"]


def stream_columns(path: Path | None, kind: str, fields: str | Iterable[str] | None, what: str,
                   limit: int | None = None) -> Any:
    """Columns of one stream file (None: not written yet; ``limit``: of its first bytes only) through the column
    cache (numpy imported only here)."""
    from .colcache import Snapshot, StreamColumns, read
    from .colview import build

    snap = read(path, kind, limit=limit) if path is not None else Snapshot(StreamColumns(kind))
    return build(snap, fields, what)


class MetricReader:
    def __init__(self, d: ExperimentDir, name: str | None) -> None:
        self._d = d
        self._name = name
        self._path = d.metric_file(name)

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
        return self._d.metric_names()


class LogsView:
    def __init__(self, d: ExperimentDir) -> None:
        self._d = d
        self._path = d.logs_file()

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

    def _data(self) -> Path | None:
        recover(self._d)
        return self._d.topic_file(self._topic)

    def read(self) -> list[dict[str, Any]]:
        """Entries ``{"timestamp": t, <fields>}``; entries sharing a timestamp come back merged."""
        data = self._data()
        if data is None:
            return []
        rows, _ = read_jsonl(data)
        return merge_tracks(rows)

    def columns(self, fields: str | Iterable[str] | None = None) -> Any:
        """``timestamp`` and every numeric field as numpy arrays, entries sharing a timestamp merged."""
        return stream_columns(self._data(), "tracks", fields, f"track {self._topic!r}")

    def to_pandas(self, fields: str | Iterable[str] | None = None) -> Any:
        return self.columns(fields).to_pandas()


class TracksView:
    def __init__(self, d: ExperimentDir) -> None:
        self._d = d

    def __call__(self, topic: str) -> TrackReader:
        return TrackReader(self._d, topic)

    def topics(self) -> list[str]:
        recover(self._d)
        return [topic for topic, _ in self._d.topic_files()]


class FilesView:
    def __init__(self, d: ExperimentDir) -> None:
        self._d = d

    def list(self) -> list[dict[str, Any]]:
        """Index entries (``id``, ``path``, ``filename``, ``sizeBytes``, ``checksum``, ...) plus ``localPath``."""
        out = []
        for e in self._d.files_index():
            if e.get("deletedAt"):
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
        flat = self._d.params()
        return flat if flatten else unflatten(flat)


class ExperimentView:
    """A read-only view of one experiment folder."""

    def __init__(self, prefix: str, dash_root: str | os.PathLike[str]) -> None:
        self._d = ExperimentDir(dash_root, prefix)
        if not (self._d.path / EXPERIMENT_JSON).exists():
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
        return self._d.read_info() or {}

    @property
    def status(self) -> str | None:
        """COMPLETED / FAILED / CANCELLED / RUNNING, or CRASHED for a RUNNING run whose heartbeat stopped."""
        return effective_status(self.info, STALE_AFTER)

    def __repr__(self) -> str:
        return f"ExperimentView({self.prefix!r}, status={self.status!r})"


def load(prefix: str, dash_root: str | os.PathLike[str] | None = None) -> ExperimentView:
    """Open an existing experiment read-only."""
    if dash_root is None:
        dash_root = default_root()
    return ExperimentView(prefix, dash_root)
