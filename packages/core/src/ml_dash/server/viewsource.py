"""The viewer's data source over a storage engine (`Backend`), for ``ml-dash serve --database``: the same pages
as on a `.dash` folder, read through the engine's read methods.

Offsets are row counts: a stream's columns come with the number of rows they hold, and live updates ask the
engine for the rows past that number (one indexed query per subscription and poll, which also answers "nothing
new" when the stream's row count has not moved). A run's logs are kept in memory and extended by the rows
appended since the last read.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..names import check_prefix, split_path
from ..viewer.data import BadName, Columns, Logs, NewRows, NotFound, listing_summary, view_summary
from .backend import Backend, BadRequest

TAIL_ROWS = 20_000  # rows answered per live poll at most; a backlog goes out as several events
STATUS_EVERY = 1.0  # seconds between status checks of one subscribed run
TAIL_EVERY = 0.25  # seconds between checks of one subscribed stream for new rows


class BackendSource:
    def __init__(self, backend: Backend, label: str) -> None:
        self.backend = backend
        self.label = label
        self._logs: dict[str, Logs] = {}
        self._lock = threading.Lock()

    # ---- runs -----------------------------------------------------------------------------------------------
    @staticmethod
    def _check(prefix: str) -> str:
        try:
            return "/".join(check_prefix(prefix))
        except (TypeError, ValueError) as e:
            raise BadName(str(e)) from None

    def summaries(self) -> list[dict[str, Any]]:
        return [listing_summary(s) for s in self.backend.summaries()]  # one listing query, not one per run

    def summary(self, prefix: str) -> dict[str, Any]:
        p = self._check(prefix)
        info = self.backend.info(p)
        if info is None:
            raise NotFound(f"no run {prefix!r} on this server")
        return view_summary(p, info, self.backend.params(p))

    # ---- streams --------------------------------------------------------------------------------------------
    def stream_names(self, prefix: str) -> list[str]:
        self.summary(prefix)
        return self.backend.names(self._check(prefix), "metrics")

    def stream_columns(self, prefix: str, stream: str) -> Columns:
        p = self._check(prefix)
        try:
            split_path(stream, "metric name")
            cols = self.backend.columns(p, "metrics", stream)
        except (BadRequest, TypeError, ValueError) as e:
            raise BadName(str(e)) from None
        n = int(cols.rows)
        out = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
        out.setdefault("index", np.arange(n, dtype=np.float64))
        out.setdefault("_ts", np.full(n, np.nan))
        return Columns(cols=out, rows=n, offset=n, invalid=0, non_numeric=set(cols.other), missing=n == 0)

    async def stream_columns_or_preview(self, prefix: str, stream: str,
                                        wait: float | None = None) -> tuple[Columns, bool]:
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self.stream_columns, prefix, stream), False

    def topic_list(self, prefix: str) -> list[str]:
        self.summary(prefix)
        return self.backend.names(self._check(prefix), "tracks")

    def track_rows(self, prefix: str, topic: str) -> tuple[list[dict[str, Any]], int]:
        from ..reader import merge_tracks

        p = self._check(prefix)
        if topic not in self.topic_list(p):
            raise NotFound(f"no track topic {topic!r} in run {prefix!r}")
        return merge_tracks(self.backend.rows(p, "tracks", topic)[1]), 0

    # ---- logs -----------------------------------------------------------------------------------------------
    def run_logs(self, prefix: str) -> Logs:
        p = self._check(prefix)
        self.summary(p)
        with self._lock:
            lg = self._logs.setdefault(p, Logs())
            while True:
                total, texts = self.backend.rows_json(p, "logs", None, lg.offset, TAIL_ROWS)
                if total < lg.offset:  # the run was dropped and started again
                    lg = self._logs[p] = Logs()
                    continue
                lg.add(json.loads("[" + ",".join(texts) + "]"))
                lg.offset += len(texts)
                if not texts or lg.offset >= total:
                    return lg

    # ---- files ----------------------------------------------------------------------------------------------
    def file_list(self, prefix: str) -> list[dict[str, Any]]:
        p = self._check(prefix)
        self.summary(p)
        return [e for e in self.backend.files(p) if isinstance(e.get("id"), (str, int))]

    def file_content(self, prefix: str, fid: str) -> tuple[dict[str, Any], Path | Iterator[bytes]]:
        p = self._check(prefix)
        self.summary(p)
        found = self.backend.file_content(p, fid)
        if found is None:
            raise NotFound(f"no file with id {fid!r} in run {prefix!r}")
        return found

    # ---- live -----------------------------------------------------------------------------------------------
    def tail(self, prefix: str, kind: str, name: str, offset: int, memo: dict[str, Any], limit: int) -> NewRows | None:
        now = time.monotonic()
        if now - memo.get("at", -TAIL_EVERY) < TAIL_EVERY:  # one query per subscription per TAIL_EVERY at most
            return None
        memo["at"] = now
        try:
            p = self._check(prefix)
            total, texts = self.backend.rows_json(p, kind, name if kind == "metrics" else None, offset, TAIL_ROWS)
        except (BadName, BadRequest, TypeError, ValueError):
            return None
        if total < offset:  # fewer rows than the page holds: the stream was dropped and started again
            total, texts = self.backend.rows_json(p, kind, name if kind == "metrics" else None, 0, TAIL_ROWS)
            return NewRows(json.loads("[" + ",".join(texts) + "]"), len(texts), 0, True)
        if not texts:
            return None
        return NewRows(json.loads("[" + ",".join(texts) + "]"), offset + len(texts))

    def status_changed(self, prefix: str, memo: dict[str, Any]) -> bool:
        now = time.monotonic()
        if now - memo.get("at", -STATUS_EVERY) < STATUS_EVERY:
            return False
        memo["at"] = now
        return True
