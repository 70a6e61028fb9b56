"""The `.dash` folder engine (the default): `ServerRoot` writes, the reads come straight from the layout's files,
so a server root reads back with ``ml_dash.load(prefix, dash_root=ROOT)`` like any local run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import layout
from ..jsonio import read_json, read_jsonl
from ..layout import ExperimentDir
from ..reader import list_experiments
from .backend import Backend, BadRequest, check_kind
from .storage import ServerRoot, committed_size


class FolderBackend(Backend):
    def __init__(self, root: str | Path, fsync: bool = True) -> None:
        self.store = ServerRoot(root, fsync=fsync)
        self.root = self.store.root
        self._settled: set[str] = set()

    # ---- writes -------------------------------------------------------------------------------------------
    def open_experiment(self, prefix: str, info: dict[str, Any], source: str) -> tuple[dict[str, Any], bool]:
        return self.store.open_experiment(prefix, info, source)

    def set_params(self, prefix: str, data: Any, version: Any, source: str) -> bool:
        return self.store.set_params(prefix, data, version, source)

    def append_logs(self, prefix: str, records: Any, source: str) -> dict[str, int]:
        return self.store.append_logs(prefix, records, source)

    def append_metrics(self, prefix: str, name: str, records: Any, source: str) -> dict[str, int]:
        return self.store.append_metrics(prefix, name, records, source)

    def append_tracks(self, prefix: str, topic: str, entries: Any, offset: Any, end: Any, offsets: Any,
                      source: str) -> dict[str, int]:
        return self.store.append_tracks(prefix, topic, entries, offset, end, offsets, source)

    def has_file(self, prefix: str, fid: str) -> bool:
        return self.store.has_file(self.store.exp(prefix), fid)

    def incoming(self) -> Path:
        return self.store.incoming()

    def publish_file(self, prefix: str, staged: Path, entry: dict[str, Any]) -> bool:
        d = self.store.ensure(prefix)
        return self.store.publish_file(d, staged, entry)

    # ---- reads ------------------------------------------------------------------------------------------
    def _existing(self, prefix: str) -> ExperimentDir | None:
        return self.store.existing(prefix)

    def experiments(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for p in list_experiments(self.root):
            info = read_json(layout.info_file(self.root / p))
            out.append((p, info if isinstance(info, dict) else {}))
        return out

    @staticmethod
    def _in(d: ExperimentDir, path: Path) -> Path | None:
        """``path`` when it stays inside the root; None when a link someone placed in the run leads out of it."""
        try:
            return d.inside(path)
        except ValueError:
            return None

    def _read_json(self, d: ExperimentDir, path: Path) -> Any:
        safe = self._in(d, path)
        return read_json(safe) if safe is not None else None

    def info(self, prefix: str) -> dict[str, Any] | None:
        d = self._existing(prefix)
        if d is None:
            return None
        info = self._read_json(d, d.info_file())
        return info if isinstance(info, dict) else {}

    def params(self, prefix: str) -> dict[str, Any]:
        d = self._existing(prefix)
        p = self._read_json(d, d.params_file()) if d is not None else None
        return p if isinstance(p, dict) else layout.empty_params()

    def _topics(self, d: ExperimentDir) -> dict[str, Path]:
        base = layout.tracks_dir(d.path)
        if self._in(d, base) is None:
            return {}
        return dict(layout.topic_folders(base, lambda p: self._read_json(d, p)))

    def names(self, prefix: str, kind: str) -> list[str]:
        d = self._existing(prefix)
        if d is None:
            return []
        if kind == "tracks":
            return sorted(self._topics(d))
        return d.metric_names()

    def rows(self, prefix: str, kind: str, name: str | None = None, start: int = 0,
             limit: int | None = None) -> tuple[int, list[dict[str, Any]]]:
        check_kind(kind, name)
        d = self._existing(prefix)
        path: Path | None = None
        if d is not None:
            if kind == "logs":
                path = d.logs_file()
            elif kind == "metrics":
                path = d.metric_file(name)
            else:
                folder = self._topics(d).get(str(name))
                path = layout.data_file(folder) if folder is not None else None
        if path is not None:
            path = self._in(d, path) if d is not None else None
        rows = read_jsonl(path, self._committed(d, kind, name))[0] if path is not None and d is not None else []
        return len(rows), rows[start:] if limit is None else rows[start:start + limit]

    def committed(self, prefix: str, kind: str, name: str | None = None) -> int | None:
        """Where the stream's committed rows end in its data file (bytes; None: no limit): what the viewer at ``/``
        reads up to, as the API's reads do."""
        try:
            d = self._existing(prefix)
        except BadRequest:
            return None
        return self._committed(d, kind, name) if d is not None else None

    @staticmethod
    def _committed(d: ExperimentDir, kind: str, name: str | None) -> int | None:
        """Reads show committed rows only: the stream's data file up to its committed size (storage.py)."""
        if kind == "logs":
            return committed_size(d, layout.stream_key(kind))
        return committed_size(d, layout.stream_key(kind, name)) if name is not None else None

    def files(self, prefix: str) -> list[dict[str, Any]]:
        d = self._existing(prefix)
        idx = self._read_json(d, d.files_index_file()) if d is not None else None
        return [f for f in layout.index_entries(idx) if not f.get("deletedAt")]

    def file_content(self, prefix: str, fid: str) -> tuple[dict[str, Any], Path | Iterator[bytes]] | None:
        d = self._existing(prefix)
        if d is None:
            return None
        for e in self.files(prefix):
            if e.get("id") == fid:
                try:
                    path = d.file_path(e)  # refuses a path that a link leads out of the root
                except (ValueError, KeyError, TypeError):
                    return None
                if path.is_file():
                    return e, path
        return None

    # ---- summaries and columns: the same functions `ml-dash ls/show/export` use on a local folder ----------
    def _settle(self, prefix: str) -> None:
        """Once per run and process: cut what a crash of an earlier process left past the committed sizes, for the
        routes that read the files as they are (within this process a failed append is cut at once)."""
        if prefix in self._settled:
            return
        try:
            d = self._existing(prefix)
        except BadRequest:
            return
        if d is not None:
            self.store.settle(d)
        self._settled.add(prefix)

    def summaries(self, last: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        from ..runs import find_runs, summary

        runs = find_runs(self.root)
        for p in runs:
            self._settle(p)
        return [summary(self.root, p, last) for p in runs]

    def show(self, prefix: str) -> dict[str, Any] | None:
        from ..reader import load
        from ..runs import show

        if self.info(prefix) is None:
            return None
        self._settle(prefix)
        return show(load(prefix, self.root))

    def columns(self, prefix: str, kind: str, name: str | None, fields: Any = None) -> Any:
        from ..reader import stream_columns

        check_kind(kind, name)
        d = self._existing(prefix)
        if d is None:
            raise BadRequest(f"no experiment {prefix!r}")
        path: Path | None
        if kind == "metrics":
            path, what = d.metric_file(name), f"metric stream {name!r}"
        elif kind == "tracks":
            path, what = d.topic_file(str(name)), f"track {name!r}"
        else:
            path, what = d.logs_file(), "the logs"
        if path is not None:
            path = self._in(d, path)
        return stream_columns(path, kind, fields, what, self._committed(d, kind, name))
