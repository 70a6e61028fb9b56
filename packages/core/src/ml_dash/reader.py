"""Reading `.dash` experiments back: `load(prefix)` and the views the live Experiment reuses."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from .jsonio import read_json, read_jsonl
from .layout import ExperimentDir
from .names import metric_segments

STALE_AFTER = 60.0  # a RUNNING run whose heartbeat is older than this reads back as CRASHED


def merge_tracks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in rows:
        if out and out[-1].get("timestamp") == r.get("timestamp"):
            out[-1].update(r)
        else:
            out.append(dict(r))
    return out


class MetricReader:
    def __init__(self, d: ExperimentDir, name: str | None) -> None:
        self._path = d.path.joinpath("metrics", *metric_segments(name), "data.jsonl")

    def read(self) -> list[dict[str, Any]]:
        """Rows as stored: ``{"index": i, "data": {..., "_ts": t}, "createdAt": "...Z"}``, in index order."""
        rows, _ = read_jsonl(self._path)
        rows.sort(key=lambda r: r.get("index", 0))
        return rows


class MetricsView:
    def __init__(self, d: ExperimentDir) -> None:
        self._d = d

    def __call__(self, name: str | None = None) -> MetricReader:
        return MetricReader(self._d, name)

    def names(self) -> list[str]:
        base = self._d.path / "metrics"
        if not base.is_dir():
            return []
        return sorted(str(p.parent.relative_to(base)).replace(os.sep, "/") for p in base.rglob("data.jsonl"))


class LogsView:
    def __init__(self, d: ExperimentDir) -> None:
        self._path = d.path / "logs" / "logs.jsonl"

    def read(self) -> list[dict[str, Any]]:
        rows, _ = read_jsonl(self._path)
        rows.sort(key=lambda r: r.get("sequenceNumber", 0))
        return rows


class TrackReader:
    def __init__(self, d: ExperimentDir, topic: str) -> None:
        self._d = d
        self._topic = topic

    def read(self) -> list[dict[str, Any]]:
        """Entries ``{"timestamp": t, <fields>}``; entries sharing a timestamp come back merged."""
        base = self._d.path / "tracks"
        if not base.is_dir():
            return []
        for folder in sorted(base.iterdir()):
            meta = read_json(folder / "metadata.json")
            if isinstance(meta, dict) and meta.get("topic") == self._topic:
                rows, _ = read_jsonl(folder / "data.jsonl")
                return merge_tracks(rows)
        return []


class TracksView:
    def __init__(self, d: ExperimentDir) -> None:
        self._d = d

    def __call__(self, topic: str) -> TrackReader:
        return TrackReader(self._d, topic)

    def topics(self) -> list[str]:
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
        if flatten:
            return flat
        from .experiment import unflatten

        return unflatten(flat)


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
        dash_root = os.environ.get("ML_DASH_ROOT") or ".dash"
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
