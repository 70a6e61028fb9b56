"""Copy what a server engine holds into a `.dash` folder (a backup, a move from PostgreSQL back to a folder, or
a snapshot to read with ``ml_dash.load``): the same files a local run writes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..layout import ExperimentDir
from .backend import Backend

PAGE = 100_000


def _jsonl(path: Path, backend: Backend, prefix: str, kind: str, name: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        start = 0
        while True:
            total, rows = backend.rows_json(prefix, kind, name, start, PAGE)
            f.write("".join(r + "\n" for r in rows))
            start += len(rows)
            if not rows or start >= total:
                break


def dump(backend: Backend, dest: str | Path, prefixes: list[str] | None = None) -> list[str]:
    """Write every experiment (or those in ``prefixes``) under ``dest``; returns the prefixes written."""
    dest = Path(dest)
    done = []
    for prefix, info in backend.experiments():
        if prefixes is not None and prefix not in prefixes:
            continue
        d = ExperimentDir(dest, prefix)
        d.path.mkdir(parents=True, exist_ok=True)
        d.write_params(backend.params(prefix))
        if backend.rows(prefix, "logs", None, 0, 1)[0]:
            _jsonl(d.logs_file(), backend, prefix, "logs", None)
        for name in backend.names(prefix, "metrics"):
            _jsonl(d.metric_file(name), backend, prefix, "metrics", name)
        for topic in backend.names(prefix, "tracks"):
            _jsonl(d.track_file(topic), backend, prefix, "tracks", topic)
        entries: list[dict[str, Any]] = []
        for e in backend.files(prefix):
            found = backend.file_content(prefix, e["id"])
            if found is None:
                continue
            target = d.file_path(e)
            target.parent.mkdir(parents=True, exist_ok=True)
            content = found[1]
            if isinstance(content, Path):
                shutil.copyfile(content, target)
            else:
                with open(target, "wb") as f:
                    for chunk in content:
                        f.write(chunk)
            entries.append(e)
        if entries:
            d.write_files_index(entries)
        d.write_info(info)  # last: a folder without it is not an experiment
        d.close()
        done.append(prefix)
    return done
