"""`Experiment`: the API the training script calls. Every write validates its input, queues it, and returns."""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import console, process, sysmetrics
from .buffer import Buffer
from .config import BufferConfig, default_root, env_flag
from .layout import STAGED_SOURCE, ExperimentDir, file_entry, stage_entry
from .names import file_name, logical_dir, metric_segments, topic_folder
from .reader import FilesView, LogsView, MetricsView, ParamsView, TracksView
from .ring import METRIC, METRIC_NONE, TRACK
from .session import Session
from .values import MAX_STR, NUMERIC, convert, convert_fields, flatten

LEVELS = ("info", "warn", "error", "debug", "fatal")
_time = time.time
_numeric = NUMERIC.issuperset


class Experiment:
    """One experiment run, stored under ``<dash_root>/<prefix>/``.

    >>> with Experiment("my-project/exp").run as exp:
    ...     exp.metrics("train").log(step=0, loss=0.5)
    """

    def __init__(
        self,
        prefix: str,
        *,
        dash_root: str | os.PathLike[str] | None = None,
        dash_url: str | list[str] | bool | None = None,
        buffer_config: BufferConfig | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        echo: bool | None = None,
        stores: list[str] | None = None,
        system_metrics: bool | float | None = None,
    ) -> None:
        if buffer_config is not None and not isinstance(buffer_config, BufferConfig):
            raise TypeError(f"buffer_config must be an ml_dash.buffer.BufferConfig, got {type(buffer_config).__name__}")
        if tags is not None and (not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags)):
            raise TypeError("tags must be a list of strings")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError("metadata must be a dict")
        if dash_root is None:
            dash_root = default_root()
        self._dir = ExperimentDir(dash_root, prefix)
        self.config = buffer_config if buffer_config is not None else BufferConfig()
        if dash_url is True:
            dash_url = os.environ.get("ML_DASH_API_URL")
            if not dash_url:
                raise ValueError("dash_url=True reads ML_DASH_API_URL, which is not set")
        if stores is not None and (isinstance(stores, str) or not all(isinstance(x, str) for x in stores)):
            raise TypeError(f"stores must be a list of destination strings, got {stores!r}")
        if isinstance(dash_url, (list, tuple)) and dash_url and all(isinstance(u, str) for u in dash_url):
            dash_url = ",".join(dash_url)  # several servers on one database: the remote store fails over
        if dash_url is not None and dash_url is not False and not isinstance(dash_url, str):
            raise TypeError("dash_url must be a URL string, a list of URL strings, True or None")
        self.dash_url: str | None = dash_url or None
        self.store_names: list[str] = list(stores or [])
        self.description = description
        self.tags = list(tags) if tags is not None else None
        self.metadata = metadata
        self.echo = env_flag("ML_DASH_ECHO") if echo is None else bool(echo)
        self.status: str | None = None
        self.status_reason: str | None = None
        self._session: Session | None = None
        self._buf: Buffer | None = None  # the open session's buffer: the hot path appends to its queues
        self._announced: weakref.ref[Buffer] | None = None
        self._state_lock = threading.RLock()
        self._sys_interval = sysmetrics.resolve_interval(system_metrics)
        self._sampler: sysmetrics.SystemSampler | None = None
        self.run = RunManager(self)
        self.logs = Logs(self)
        self.params = Params(self)
        self.metrics = Metrics(self)
        self.tracks = Tracks(self)
        self.files = Files(self)

    # ---- identity --------------------------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return self._dir.prefix

    @property
    def project(self) -> str:
        return self._dir.project

    @property
    def name(self) -> str:
        return self._dir.name

    @property
    def folder(self) -> Path:
        return self._dir.path

    @property
    def dash_root(self) -> Path:
        return self._dir.root

    @property
    def is_open(self) -> bool:
        return self._buf is not None

    def __repr__(self) -> str:
        return f"Experiment({self.prefix!r}, dash_root={str(self._dir.root)!r}, status={self.status!r})"

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    def _open(self) -> Buffer:
        with self._state_lock:
            if self._session is not None:
                return self._session.buffer
            session = Session(self._dir, self.config, owner=self, description=self.description, tags=self.tags,
                              metadata=self.metadata)
            self.status = "RUNNING"
            self.status_reason = None
            destinations = ([self.dash_url] if self.dash_url else []) + self.store_names
            session.start(destinations)
            self._session = session
            self._buf = session.buffer
            process.register(self)
            if self._sys_interval is not None:
                self._sampler = sysmetrics.SystemSampler(self.metrics(sysmetrics.STREAM).log,
                                                         self._sys_interval).start()
            return self._buf

    def _announce_start(self) -> None:
        """ml_dash_experiment_started, once per opening: ``start()`` on a run already open announces nothing."""
        buf = self._buf
        if buf is not None:
            seen = self._announced
            if seen is not None and seen() is buf:
                return
            self._announced = weakref.ref(buf)
        _call_hook("ml_dash_experiment_started", experiment=self)

    def _writer(self) -> Buffer:
        buf = self._buf
        if buf is None:
            if self.status is not None:
                raise RuntimeError(f"experiment {self.prefix!r} is closed ({self.status}); "
                                   "call exp.run.start() to reopen it before logging")
            buf = self._open()
            self._announce_start()
        return buf

    def _close(self, status: str, reason: str | None) -> None:
        with self._state_lock:
            session = self._session
            if session is None:
                return
            if self._sampler is not None:
                self._sampler.stop()
                self._sampler = None
            report = session.close(status, reason)
            self.status = report.status
            self.status_reason = report.reason
            self._session = None
            self._buf = None
            process.unregister(self)
            _call_hook("ml_dash_experiment_finished", experiment=self, status=status)

    # the two calls `process` makes (its OpenRun protocol)
    def close_for_exit(self, status: str, reason: str | None) -> None:
        self._close(status, reason)

    def after_fork_in_child(self) -> None:
        session = self._session
        if session is not None:
            session.after_fork_in_child()
            self._state_lock = threading.RLock()

    def flush(self, timeout: float | None = None) -> bool:
        """Return once everything logged before the call is written and fsync'd (and delivered to other stores).

        Returns False when a store made no progress for ``timeout`` (default ``close_timeout``) seconds; the data
        is then still pending, safe in memory or on disk, and a warning says so.
        """
        session = self._session
        if session is None:
            return True
        ok = session.flush(timeout)
        _call_hook("ml_dash_experiment_flushed", experiment=self, counts=dict(session.buffer.written))
        return ok

    def log(self, message: str, level: str = "info", metadata: dict[str, Any] | None = None, **fields: Any) -> None:
        """Record one log line. Extra keyword fields go into its metadata."""
        if type(message) is not str:
            if not isinstance(message, str):
                raise TypeError(f"log message must be a string, got {type(message).__name__}")
        elif len(message) > MAX_STR:
            raise ValueError(f"log message of {len(message)} characters is too long (max {MAX_STR})")
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}; got {level!r}")
        if metadata is not None or fields:
            if metadata is not None and not isinstance(metadata, dict):
                raise TypeError("log metadata must be a dict")
            meta = convert(dict(metadata or {}), "metadata")
            meta.update(convert_fields(fields))
        else:
            meta = None
        buf = self._buf or self._writer()
        q = buf.log_tail
        q.append((_time(), level, message) if meta is None else (_time(), level, message, meta))
        if self.echo:
            console.say(f"[{level.upper()}] {message}")
        if next(buf.ticks):
            buf.spill(False)

    def __enter__(self) -> Experiment:
        return self.run.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.run.__exit__(*exc)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("an open Experiment cannot be pickled; pickle its prefix and dash_root instead")


class RunManager:
    """``exp.run``: start/complete/fail/cancel, and the context manager ``with exp.run as exp:``."""

    def __init__(self, exp: Experiment) -> None:
        self._exp = exp

    def start(self) -> Experiment:
        self._exp._open()
        self._exp._announce_start()
        return self._exp

    def complete(self, reason: str | None = None) -> None:
        self._exp._close("COMPLETED", reason)

    def fail(self, reason: str | None = None) -> None:
        self._exp._close("FAILED", reason)

    def cancel(self, reason: str | None = None) -> None:
        self._exp._close("CANCELLED", reason)

    def __enter__(self) -> Experiment:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.complete()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.cancel("KeyboardInterrupt")
        else:
            self.fail(f"{exc_type.__name__}: {exc}"[:500])


class Logs:
    """``exp.logs``: level helpers and ``read()``."""

    def __init__(self, exp: Experiment) -> None:
        self._exp = exp

    def info(self, message: str, **fields: Any) -> None:
        self._exp.log(message, "info", **fields)

    def warn(self, message: str, **fields: Any) -> None:
        self._exp.log(message, "warn", **fields)

    warning = warn

    def error(self, message: str, **fields: Any) -> None:
        self._exp.log(message, "error", **fields)

    def debug(self, message: str, **fields: Any) -> None:
        self._exp.log(message, "debug", **fields)

    def fatal(self, message: str, **fields: Any) -> None:
        self._exp.log(message, "fatal", **fields)

    def read(self) -> list[dict[str, Any]]:
        _sync(self._exp)
        return LogsView(self._exp._dir).read()

    def columns(self, fields: str | Iterable[str] | None = None) -> Any:
        """numpy arrays per field (see ``ExperimentView.logs.columns``), after writing what is buffered."""
        _sync(self._exp)
        return LogsView(self._exp._dir).columns(fields)

    def to_pandas(self, fields: str | Iterable[str] | None = None) -> Any:
        return self.columns(fields).to_pandas()


def _sync(exp: Experiment) -> None:
    buf = exp._buf
    if buf is not None:
        buf.flush(None)


class Params:
    """``exp.params``: ``set(**kw)`` merges (nested dicts flattened with dots); ``get()`` reads back."""

    def __init__(self, exp: Experiment) -> None:
        self._exp = exp

    def set(self, /, **kw: Any) -> None:
        flat = flatten(kw)
        buf = self._exp._writer()
        buf.params.append(flat)
        buf.wake()

    def get(self, flatten: bool = True) -> dict[str, Any]:
        _sync(self._exp)
        return ParamsView(self._exp._dir).get(flatten)


class MetricStream:
    """``exp.metrics("train")``: ``log(**fields)`` one row; ``read()`` the rows back."""

    __slots__ = ("_exp", "_name", "_code", "_key", "_buf", "_tail")

    def __init__(self, exp: Experiment, name: str | None) -> None:
        self._exp = exp
        self._name = name
        self._code, self._key = (METRIC, name) if name is not None else (METRIC_NONE, "")
        self._buf: Buffer | bool = False  # the buffer whose tail ``_tail`` is
        self._tail: list[Any] = []

    def _bind(self) -> Buffer:
        buf = self._exp._buf or self._exp._writer()
        self._tail = buf.tail_for(self._code, self._key)
        self._buf = buf
        return buf

    def log(self, /, **fields: Any) -> MetricStream:
        if not _numeric(map(type, fields.values())):
            convert_fields(fields)
        if "_ts" not in fields:
            fields["_ts"] = _time()
        elif type(fields["_ts"]) is not float:
            ts = fields["_ts"]
            if isinstance(ts, bool) or not isinstance(ts, (int, float)):
                raise TypeError(f"_ts must be a number (unix seconds), got {ts!r}")
            fields["_ts"] = float(ts)
        buf = self._exp._buf
        if buf is not self._buf:
            buf = self._bind()
        self._tail.append(fields)
        if next(buf.ticks):
            buf.spill(False)
        return self

    append = log

    def _log_row(self, row: dict[str, Any]) -> None:
        """`log` for a dict that becomes the row itself (not copied): the adapters' kit builds a fresh dict per
        row and hands it over here (`integration.MetricRouter.log`)."""
        if not _numeric(map(type, row.values())):
            convert_fields(row)
        if "_ts" not in row:
            row["_ts"] = _time()
        elif type(row["_ts"]) is not float:
            self.log(**row)
            return
        buf = self._exp._buf
        if buf is not self._buf:
            buf = self._bind()
        self._tail.append(row)
        if next(buf.ticks):
            buf.spill(False)

    def read(self) -> list[dict[str, Any]]:
        _sync(self._exp)
        return MetricsView(self._exp._dir)(self._name).read()

    def columns(self, fields: str | Iterable[str] | None = None) -> Any:
        """numpy arrays per field: ``index``, ``_ts`` and every numeric field (NaN where a row lacks it), after
        writing what is buffered. Parsed once, then only the rows appended since (the column cache)."""
        _sync(self._exp)
        return MetricsView(self._exp._dir)(self._name).columns(fields)

    def to_pandas(self, fields: str | Iterable[str] | None = None) -> Any:
        """The columns as a pandas DataFrame (needs pandas)."""
        return self.columns(fields).to_pandas()


class Metrics:
    """``exp.metrics``: ``exp.metrics("train")`` is a stream; ``exp.metrics.log(epoch=1, train={...})`` splits."""

    def __init__(self, exp: Experiment) -> None:
        self._exp = exp
        self._streams: dict[str | None, MetricStream] = {}

    def __call__(self, name: str | None = None) -> MetricStream:
        s = self._streams.get(name)
        if s is None:
            metric_segments(name)
            s = self._streams[name] = MetricStream(self._exp, name)
        return s

    def log(self, **fields: Any) -> None:
        """Dict-valued fields become their own streams; the rest (e.g. ``epoch``, ``step``) go into each row.
        With no dict-valued field, the row goes to the stream named ``None``."""
        common = {k: v for k, v in fields.items() if not isinstance(v, dict)}
        split = {k: v for k, v in fields.items() if isinstance(v, dict)}
        if not split:
            self(None).log(**common)
            return
        ts = common.pop("_ts", None)
        stamp = _time() if ts is None else ts
        for name, values in split.items():
            for k in values:
                if not isinstance(k, str):
                    raise TypeError(f"metrics.log: key {k!r} in {name!r} is not a string")
            self(name).log(**common, **values, _ts=stamp)

    def names(self) -> list[str]:
        _sync(self._exp)
        return MetricsView(self._exp._dir).names()


class TrackStream:
    """``exp.tracks(topic)``: ``append(_ts=None, **fields)``; same-timestamp appends are merged."""

    __slots__ = ("_exp", "_topic", "_buf", "_tail")

    def __init__(self, exp: Experiment, topic: str) -> None:
        self._exp = exp
        self._topic = topic
        self._buf: Buffer | bool = False  # the buffer whose tail ``_tail`` is
        self._tail: list[Any] = []

    def _bind(self) -> Buffer:
        buf = self._exp._buf or self._exp._writer()
        self._tail = buf.tail_for(TRACK, self._topic)
        self._buf = buf
        return buf

    def append(self, /, _ts: float | None = None, **fields: Any) -> TrackStream:
        if not _numeric(map(type, fields.values())):
            fields = _track_fields(fields)
        if _ts is None:
            entry: dict[str, Any] = {"timestamp": _time()}
        elif type(_ts) is float:
            entry = {"timestamp": _ts}
        elif isinstance(_ts, bool) or not isinstance(_ts, (int, float)):
            raise TypeError(f"_ts must be a number, got {_ts!r}")
        else:
            entry = {"timestamp": float(_ts)}
        if "timestamp" in fields:
            raise ValueError("track field 'timestamp' is reserved: pass the time as _ts")
        entry.update(fields)
        buf = self._exp._buf
        if buf is not self._buf:
            buf = self._bind()
        self._tail.append(entry)
        if next(buf.ticks):
            buf.spill(False)
        return self

    log = append

    def read(self) -> list[dict[str, Any]]:
        _sync(self._exp)
        return TracksView(self._exp._dir)(self._topic).read()

    def columns(self, fields: str | Iterable[str] | None = None) -> Any:
        """``timestamp`` and every numeric field as numpy arrays, after writing what is buffered."""
        _sync(self._exp)
        return TracksView(self._exp._dir)(self._topic).columns(fields)

    def to_pandas(self, fields: str | Iterable[str] | None = None) -> Any:
        return self.columns(fields).to_pandas()


def _track_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts flattened with dots (as the reference stores track entries), values converted."""
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if isinstance(v, dict):
            out.update(flatten(v, k + "."))
        else:
            out[k] = convert(v, k)
    return out


class Tracks:
    def __init__(self, exp: Experiment) -> None:
        self._exp = exp
        self._streams: dict[str, TrackStream] = {}

    def __call__(self, topic: str) -> TrackStream:
        s = self._streams.get(topic)
        if s is None:
            topic_folder(topic)
            s = self._streams[topic] = TrackStream(self._exp, topic)
        return s

    def topics(self) -> list[str]:
        _sync(self._exp)
        return TracksView(self._exp._dir).topics()


class FileFolder:
    """``exp.files("dir")``: capture files now, publish them at the next flush."""

    def __init__(self, exp: Experiment, folder: str) -> None:
        self._exp = exp
        self._dir = folder

    def _entry(self, filename: str, description: str | None, tags: list[str] | None,
               metadata: dict[str, Any] | None, content_type: str | None, subdir: str = "") -> dict[str, Any]:
        path = self._dir if not subdir else (self._dir.rstrip("/") + "/" + subdir)
        return file_entry(self._exp.prefix, path, filename, description, tags, metadata, content_type)

    def _stage(self, entry: dict[str, Any], *, data: bytes | None = None, source: Path | None = None) -> dict[str, Any]:
        buf = self._exp._writer()
        content = self._exp._dir.new_stage()
        if data is not None:
            with open(content, "wb") as f:
                f.write(data)
        else:
            assert source is not None
            size = source.stat().st_size
            if size <= self._exp.config.copy_limit_bytes:
                shutil.copyfile(source, content)
            else:
                try:
                    os.link(source, content)
                except OSError:
                    entry[STAGED_SOURCE] = str(source)
        entry["sizeBytes"] = content.stat().st_size if content.exists() else None
        stage_entry(content, entry)
        buf.files.append((content, entry))
        buf.taken["files"] += 1
        if buf.sync_mode or len(buf.files) >= self._exp.config.file_batch_size:
            buf.wake()
        public = {k: v for k, v in entry.items() if not k.startswith("_")}
        return public

    def upload(self, path: str | os.PathLike[str], to: str | None = None, *, description: str | None = None,
               tags: list[str] | None = None, metadata: dict[str, Any] | None = None) -> Any:
        """Store a copy of a file (or of every file in a folder). Returns the index entry (a list for a folder)."""
        src = Path(path)
        if src.is_dir():
            out = []
            base = to if to is not None else src.name
            for f in sorted(p for p in src.rglob("*") if p.is_file()):
                rel = f.relative_to(src)
                sub = "/".join([base, *rel.parts[:-1]])
                logical_dir(sub)
                out.append(self._stage(self._entry(file_name(rel.name), description, tags, metadata, None, sub),
                                       source=f))
            return out
        if not src.is_file():
            raise FileNotFoundError(f"files.upload: no such file: {src}")
        name = file_name(to if to is not None else src.name)
        return self._stage(self._entry(name, description, tags, metadata, None), source=src)

    def save_blob(self, data: bytes, to: str, **kw: Any) -> dict[str, Any]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"save_blob needs bytes, got {type(data).__name__}")
        return self._stage(self._entry(file_name(to), kw.get("description"), kw.get("tags"), kw.get("metadata"),
                                       kw.get("content_type")), data=bytes(data))

    def save_text(self, text: str, to: str, **kw: Any) -> dict[str, Any]:
        if not isinstance(text, str):
            raise TypeError(f"save_text needs a str, got {type(text).__name__}")
        return self.save_blob(text.encode(), to, **kw)

    def save_json(self, obj: Any, to: str, **kw: Any) -> dict[str, Any]:
        try:
            text = json.dumps(obj, indent=2, allow_nan=True, default=_json_default)
        except (TypeError, ValueError) as e:
            raise TypeError(f"save_json: {to!r} is not JSON-serialisable: {e}") from None
        return self.save_blob(text.encode(), to, content_type="application/json", **kw)

    def save_image(self, image: Any, to: str, **kw: Any) -> dict[str, Any]:
        from .images import encode_image

        return self.save_blob(encode_image(image, to), to, **kw)

    def save_torch(self, obj: Any, to: str, **kw: Any) -> dict[str, Any]:
        import torch

        bio = io.BytesIO()
        torch.save(obj, bio)
        return self.save_blob(bio.getvalue(), to, **kw)

    def save_fig(self, fig: Any = None, to: str = "figure.png", **kw: Any) -> dict[str, Any]:
        if fig is None:
            import matplotlib.pyplot as plt

            fig = plt.gcf()
        bio = io.BytesIO()
        fmt = Path(to).suffix.lstrip(".") or "png"
        fig.savefig(bio, format=fmt)
        return self.save_blob(bio.getvalue(), to, **kw)

    def list(self) -> list[dict[str, Any]]:
        return [e for e in self._exp.files.list() if e.get("path") == self._dir
                or str(e.get("path", "")).startswith(self._dir.rstrip("/") + "/")]


class Files:
    def __init__(self, exp: Experiment) -> None:
        self._exp = exp

    def __call__(self, folder: str | None = None) -> FileFolder:
        return FileFolder(self._exp, logical_dir(folder))

    def upload(self, path: str | os.PathLike[str], to: str | None = None, **kw: Any) -> Any:
        return self(None).upload(path, to, **kw)

    def list(self) -> list[dict[str, Any]]:
        _sync(self._exp)
        return FilesView(self._exp._dir).list()


def _json_default(o: Any) -> Any:
    v = convert(o, "value")
    if type(v).__module__ == "ml_dash.values":
        return v.resolve()
    return v


def _call_hook(name: str, **kw: Any) -> None:
    from .plugins import call_hook  # plugins (and pluggy) load on the first run that opens, not at import

    call_hook(name, **kw)
