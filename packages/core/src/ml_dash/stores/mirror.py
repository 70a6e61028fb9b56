"""Built-in mirror store: copies a run into another `.dash` root, record for record, through its own Replicator.

Destination: ``file:///abs/root`` or a folder path (``/abs/root``, ``./rel``, ``~/backup``, ``a/b``); the run
``<prefix>`` appears as ``<root>/<prefix>/`` in the same layout, readable with ``ml_dash.load(prefix, root)``.
Every write is idempotent: records already in the mirror (by index / sequence number, file id, track batch
offset) are skipped, so a batch delivered twice is stored once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..layout import ExperimentDir, unstage
from .base import PermanentError, Store


def mirror_root(destination: str) -> Path | None:
    """The folder a destination names, or None when it is not a folder (a URL of another kind, a plain name)."""
    if destination.startswith("file:"):
        parts = urlsplit(destination)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"mirror destination {destination!r}: only local file:// URLs are supported")
        path = unquote(parts.path)
        if not path:
            raise ValueError(f"mirror destination {destination!r} names no folder")
        return Path(path).expanduser()
    if "://" in destination:
        return None
    if destination in (".", "..") or destination.startswith(("/", "~")) or "/" in destination \
            or (os.sep != "/" and os.sep in destination):
        return Path(destination).expanduser()
    return None


class MirrorStore(Store):
    def __init__(self, root: str | os.PathLike[str], prefix: str) -> None:
        self.root = Path(root).resolve()
        self.dir = ExperimentDir(self.root, prefix)
        self.key = "mirror-" + hashlib.sha1(str(self.root).encode()).hexdigest()[:12]

    def open(self, info: dict[str, Any]) -> None:
        self.dir.write_info(info)

    def set_status(self, info: dict[str, Any]) -> None:
        self.dir.write_info(info)

    def write_params(self, params: dict[str, Any]) -> None:
        self.dir.path.mkdir(parents=True, exist_ok=True)
        self.dir.set_params(params)

    def write_logs(self, records: list[dict[str, Any]]) -> None:
        self.dir.append_log_records(records)

    def write_metrics(self, name: str, records: list[dict[str, Any]]) -> None:
        self.dir.append_metrics(name, records, records=True)

    track_offsets = True  # the replicator passes each entry's journal position: exact dedup of tracks

    def write_tracks(self, topic: str, records: list[dict[str, Any]], offset: int,
                     offsets: list[int] | None = None, end: int | None = None) -> None:
        # Tracks carry no index: remember how far into the source journal's topic file the mirror holds and skip
        # entries before that. Without positions, an entry counts as offset + its place in the batch, which stays
        # below the next batch's real byte offset (each line is at least two bytes).
        if offsets is None or len(offsets) != len(records):
            offsets = [offset + i for i in range(len(records))]
            end = offset + len(records)
        if end is None:
            end = offsets[-1] + 1 if offsets else offset
        with self.dir.mirror_tracks(topic) as mark:
            todo = [dict(r) for r, pos in zip(records, offsets, strict=False) if pos >= mark.end]
            if todo:
                self.dir.append_tracks(topic, todo)
            mark.end = max(mark.end, end)

    def write_file(self, entry: dict[str, Any], path: str) -> None:
        if any(e.get("id") == entry.get("id") for e in self.dir.files_index()):
            return
        src = Path(path)
        if not src.is_file():
            raise PermanentError(f"content of {entry.get('filename')!r} is missing at {src}")
        staged = self.dir.new_stage("mirror-staging")
        shutil.copyfile(src, staged)
        clean = {k: v for k, v in entry.items() if k != "localPath"}
        try:
            self.dir.publish_files([(staged, clean)])
        finally:
            staged.unlink(missing_ok=True)
            unstage(staged)

    def close(self) -> None:
        self.dir.close()


def make(destination: str, experiment: Any) -> MirrorStore | None:
    root = mirror_root(destination)
    if root is None:
        return None
    if root.resolve() == Path(experiment.dash_root).resolve():
        raise ValueError(f"mirror destination {destination!r} is the experiment's own .dash root")
    return MirrorStore(root, experiment.prefix)
