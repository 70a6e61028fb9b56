"""`TensorBoardStore`: an ml-dash `Store` that appends metric rows to a TensorBoard event file.

It runs on the store's own replicator thread, so it writes synchronously (no extra thread, nothing that can
wait forever) and flushes once per batch. Writes are idempotent by journal index: the next index expected per
metric is kept in ``<logdir>/.ml_dash_tensorboard.json`` and rows below it are skipped when a batch comes again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

from ml_dash.stores import Store
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter

STATE_FILE = ".ml_dash_tensorboard.json"
SKIP_FIELDS = ("step", "_ts")
_files = itertools.count(1)  # two stores of one process in one second still get two files


def _scalar(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    return None  # str, None, anything else: not a scalar


def _step(data: dict[str, Any], index: int) -> int:
    s = data.get("step")
    if isinstance(s, bool):
        return index
    if isinstance(s, int):
        return s
    if isinstance(s, float) and math.isfinite(s) and s.is_integer():
        return int(s)
    return index


def tag(metric: str, field: str) -> str:
    """``<metric>/<field>``; the unnamed metric (stored as ``None``) gives just ``<field>``."""
    return field if metric == "None" else f"{metric}/{field}"


class TensorBoardStore(Store):
    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        self.logdir = Path(logdir).resolve()
        self.key = "tensorboard-" + hashlib.sha1(str(self.logdir).encode()).hexdigest()[:12]
        self._writer: RecordWriter | None = None
        self._state: dict[str, Any] | None = None

    # ---- state: next journal index per metric ------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        if self._state is None:
            try:
                with open(self.logdir / STATE_FILE, encoding="utf-8") as f:
                    state = json.load(f)
            except (OSError, ValueError):
                state = None
            self._state = state if isinstance(state, dict) and isinstance(state.get("next"), dict) else {"next": {}}
        return self._state

    def _save_state(self) -> None:
        path = self.logdir / STATE_FILE
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self._state, f)
        os.replace(tmp, path)

    # ---- the event file -----------------------------------------------------------------------------------------
    def _events(self) -> RecordWriter:
        if self._writer is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}." \
                   f"{next(_files):04d}.ml_dash"
            w = RecordWriter(open(self.logdir / name, "wb"))
            w.write(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
            self._writer = w
        return self._writer

    # ---- Store ----------------------------------------------------------------------------------------------------
    def write_metrics(self, name: str, records: list[dict[str, Any]]) -> None:
        state = self._load_state()
        nxt = int(state["next"].get(name, 0))
        events = []
        for r in records:
            idx = r.get("index")
            if not isinstance(idx, int) or idx < nxt:
                continue  # delivered before
            data = r.get("data")
            nxt = idx + 1
            if not isinstance(data, dict):
                continue
            values = []
            for field, v in data.items():
                x = None if field in SKIP_FIELDS else _scalar(v)
                if x is not None:
                    values.append(Summary.Value(tag=tag(name, field), simple_value=x))
            if values:
                ts = data.get("_ts")
                events.append(Event(wall_time=float(ts) if isinstance(ts, (int, float)) else time.time(),
                                    step=_step(data, idx), summary=Summary(value=values)))
        if nxt == int(state["next"].get(name, 0)):
            return
        if events:
            w = self._events()
            for e in events:
                w.write(e.SerializeToString())
            w.flush()
        state["next"][name] = nxt
        self._save_state()

    def close(self) -> None:
        if self._writer is not None:
            w, self._writer = self._writer, None
            w.close()
