"""The logger's behaviour, shared by the ``lightning.pytorch`` and ``pytorch_lightning`` classes.

:func:`make_logger_class` combines :class:`MLDashLoggerMixin` with one namespace's ``Logger`` base class, so an
``isinstance`` check (and LightningCLI's ``class_path``) in either namespace finds a class of that namespace.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any, Literal, Optional, Union

from lightning_utilities.core.rank_zero import rank_zero_only
from ml_dash import Experiment
from ml_dash.buffer import BufferConfig

from ._util import (
    auto_prefix,
    checkpoint_files,
    file_key,
    flatten_params,
    resolve_root,
    root_of,
    score_of,
    split_key,
)

CHECKPOINT_DIR = "checkpoints"


def _rank() -> int:
    return getattr(rank_zero_only, "rank", 0) or 0


def _warn(msg: str) -> None:
    warnings.warn(f"ML-Dash: {msg}", RuntimeWarning, stacklevel=3)


def _is_cancel(exc: BaseException | None) -> bool:
    """Ctrl-C, and Lightning's SIGTERMException (a SystemExit subclass), in either namespace."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    return exc is not None and any(c.__name__ == "SIGTERMException" for c in type(exc).__mro__)


def _reason(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= 500 else text[:500] + "..."


class MLDashLoggerMixin:
    """Log a Lightning run to ML-Dash: ``Trainer(logger=MLDashLogger("project/name"))``.

    Args:
        prefix: the experiment's path ``"project/name"`` (or ``"project/folders/name"``). None: a new name
            ``<script>/<YYYYmmdd-HHMMSS>-<n>`` is made, and printed once when the run starts.
        dash_root: the local root folder (default ``$ML_DASH_ROOT`` or ``.dash``).
        dash_url: a server URL to upload to as well (``True``: ``$ML_DASH_API_URL``).
        log_model: ``False``: no checkpoint files; ``True``: the best and last checkpoints at the end of each
            fit/validate/test; ``"all"``: every checkpoint as it is saved (copied at once, so files Lightning
            later deletes under ``save_top_k`` are kept).
        buffer_config: a ``ml_dash.buffer.BufferConfig`` for the experiment.
        description: experiment description.
        tags: experiment tags.
        metadata: experiment metadata (a dict).
        flush_timeout: seconds ``finalize`` waits for buffered data to be delivered (None: no limit).
        experiment: an existing ``ml_dash.Experiment`` to log into instead (then leave the others unset).
    """

    def __init__(
        self,
        prefix: Optional[str] = None,
        *,
        dash_root: Optional[str] = None,
        dash_url: Union[str, bool, None] = None,
        log_model: Union[bool, Literal["all"]] = False,
        buffer_config: Optional[BufferConfig] = None,
        description: Optional[str] = None,
        tags: Optional[list[str]] = None,
        metadata: Optional[dict[str, Any]] = None,
        flush_timeout: Optional[float] = 30.0,
        experiment: Optional[Experiment] = None,
    ) -> None:
        super().__init__()
        if log_model not in (False, True, "all"):
            raise ValueError(f"MLDashLogger: log_model must be False, True or 'all', got {log_model!r}")
        if flush_timeout is not None and not (isinstance(flush_timeout, (int, float)) and flush_timeout >= 0):
            raise ValueError(
                f"MLDashLogger: flush_timeout must be a number >= 0 or None, got {flush_timeout!r}"
            )
        if buffer_config is not None and not isinstance(buffer_config, BufferConfig):
            raise TypeError(
                f"MLDashLogger: buffer_config must be an ml_dash.buffer.BufferConfig, got {type(buffer_config).__name__}"
            )
        self._user_experiment: Experiment | None = None
        self._auto_named = False
        if experiment is not None:
            if not isinstance(experiment, Experiment):
                raise TypeError(
                    f"MLDashLogger: experiment must be an ml_dash.Experiment, got {type(experiment).__name__}"
                )
            given = {
                "prefix": prefix,
                "dash_root": dash_root,
                "dash_url": dash_url,
                "buffer_config": buffer_config,
                "description": description,
                "tags": tags,
                "metadata": metadata,
            }
            clash = [k for k, v in given.items() if v is not None]
            if clash:
                raise ValueError(
                    f"MLDashLogger: pass either experiment= or {', '.join(clash)}, not both "
                    "(the experiment already has its own settings)"
                )
            self._user_experiment = experiment
            prefix = experiment.prefix
            root = root_of(experiment.folder, prefix)
        else:
            root = resolve_root(dash_root)
            if prefix is None:
                prefix = auto_prefix(root)
                self._auto_named = True
            # validates prefix and dash_url now (constructing does no I/O); the run is opened on first use
            Experiment(
                prefix,
                dash_root=root,
                dash_url=dash_url,
                buffer_config=buffer_config,
                description=description,
                tags=tags,
                metadata=metadata,
            )
        self._prefix: str = prefix
        self._root: str = root
        self._dash_url = dash_url
        self._buffer_config = buffer_config
        self._description = description
        self._tags = list(tags) if tags is not None else None
        self._metadata = metadata
        self._flush_timeout = flush_timeout
        self._log_model = log_model
        self._experiment: Experiment | None = None
        self._broken = False  # the experiment could not be created (I/O error): log nothing, never raise
        self._announced = False
        self._streams: dict[str, Any] = {}  # stream name -> exp.metrics(stream), for the current experiment
        self._keys: dict[str, tuple[str, str]] = {}  # metric key -> (stream, field)
        self._epoch: Any = None
        self._last_step: int = 0
        self._end_checkpoints: dict[str, str] = {}  # log_model=True: path -> tag, uploaded at finalize
        self._end_score: float | None = None
        self._stored: set[tuple[str, int, int, int]] = set()  # checkpoint contents already uploaded

    # -- what Lightning reads ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The project (the prefix's first part)."""
        return self._prefix.split("/", 1)[0]

    @property
    def version(self) -> str:
        """The rest of the prefix: the experiment's name, with any folders in front of it."""
        return self._prefix.split("/", 1)[1]

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def save_dir(self) -> str:
        """The dash root; checkpoints go to ``<save_dir>/<name>/<version>/checkpoints`` (the experiment folder)."""
        return self._root

    @property
    def root_dir(self) -> str:
        return os.path.join(self._root, self.name)

    @property
    def log_dir(self) -> str:
        """The experiment folder ``<dash_root>/<prefix>``."""
        return os.path.join(self._root, *self._prefix.split("/"))

    @property
    def experiment(self) -> Any:
        """The ``ml_dash.Experiment`` (created on first use, re-opened if closed); a no-op object off rank 0."""
        if _rank() != 0:
            return self._dummy_experiment()
        exp = self._live()
        return exp if exp is not None else self._dummy_experiment()

    def _dummy_experiment(self) -> Any:
        raise NotImplementedError  # set by make_logger_class

    def _live(self) -> Experiment | None:
        """The open experiment, creating or re-opening it; None if it cannot be created (warned once)."""
        exp = self._experiment
        if exp is not None and exp.is_open:
            return exp
        if self._broken:
            return None
        try:
            if exp is None:
                if self._user_experiment is not None:
                    exp = self._user_experiment
                else:
                    exp = Experiment(
                        self._prefix,
                        dash_root=self._root,
                        dash_url=self._dash_url,
                        buffer_config=self._buffer_config,
                        description=self._description,
                        tags=self._tags,
                        metadata=self._metadata,
                    )
            exp.run.start()
        except OSError as e:
            self._broken = True
            _warn(
                f"cannot open experiment {self._prefix!r} under {self._root}: {e}; training goes on unlogged"
            )
            return None
        self._experiment = exp
        self._streams = {}
        if self._auto_named and not self._announced:
            self._announced = True
            if not exp.config.quiet:  # the run's settings: buffer_config, else ML_DASH_QUIET
                print(f"[ML-Dash] Lightning run: {self._prefix} (in {self.log_dir})", file=sys.stderr)
        return exp

    # -- the hot path ----------------------------------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        """One row per stream with ``step`` and ``epoch``; values go to the core as given (tensors included)."""
        if _rank() != 0 or not metrics:
            return
        exp = self._experiment
        if exp is None or not exp.is_open:
            exp = self._live()
            if exp is None:
                return
        if step is None:
            step = self._last_step
        else:
            self._last_step = step
        epoch = metrics.get("epoch", None)
        if epoch is None:
            epoch = self._epoch
        else:
            self._epoch = epoch
        keys = self._keys
        rows: dict[str, dict[str, Any]] = {}
        for key, value in metrics.items():
            if key == "epoch":
                continue
            target = keys.get(key)
            if target is None:
                target = keys[key] = split_key(key)
            row = rows.get(target[0])
            if row is None:
                row = rows[target[0]] = {"step": step, "epoch": epoch}
            row[target[1]] = value
        streams = self._streams
        for stream, row in rows.items():
            acc = streams.get(stream)
            if acc is None:
                acc = streams[stream] = exp.metrics(stream)
            acc.log(**row)

    # -- once per run ----------------------------------------------------------------------------------------

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Dicts, Namespaces, dataclasses and nested containers, flattened with dots."""
        if _rank() != 0:
            return
        flat = flatten_params(params)
        if not flat:
            return
        exp = self._live()
        if exp is not None:
            exp.params.set(**flat)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        pass

    def save(self) -> None:
        """Called by Lightning after every ``log_metrics``: nothing to do, the core writes in the background."""

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if _rank() != 0 or not self._log_model:
            return
        # checkpoint_callback is a weak proxy: read what is needed now
        if self._log_model == "all":
            files, fresh = checkpoint_files(checkpoint_callback, "saved")
            self._store_checkpoints(files, score_of(checkpoint_callback), fresh)
        else:
            self._end_checkpoints = dict(checkpoint_files(checkpoint_callback, "end")[0])
            self._end_score = score_of(checkpoint_callback)

    def _store_checkpoints(
        self, files: list[tuple[str, str]], best_score: float | None, fresh: bool = False
    ) -> None:
        """Store each file (content captured now); skip ones stored before unless known to be freshly written."""
        exp = None
        for path, tag in files:
            key = file_key(path)
            if key is None or (key in self._stored and not fresh):
                continue
            exp = exp or self._live()
            if exp is None:
                return
            try:
                exp.files(CHECKPOINT_DIR).upload(path)
            except Exception as e:  # a checkpoint that cannot be stored must not stop training
                _warn(f"could not store checkpoint {path}: {e!r}")
                continue
            self._stored.add(key)
            meta: dict[str, Any] = {"file": os.path.basename(path), "tag": tag}
            if tag == "best" and best_score is not None:
                meta["score"] = best_score
            exp.log(f"checkpoint stored: {os.path.basename(path)}", metadata=meta)

    def finalize(self, status: str) -> None:
        """After every fit/validate/test/predict: store end checkpoints, then

        - ``"success"``: flush (the run stays open; ml-dash's exit hook completes it when the process ends),
        - ``"finished"`` (Lightning's SLURM requeue handler): complete,
        - ``"failed"`` with Ctrl-C or Lightning's SIGTERMException in flight: cancel; any other ``"failed"``: fail.

        Logging after a complete/cancel/fail re-opens the run (status RUNNING again)."""
        if _rank() != 0:
            return
        if self._log_model is True and self._end_checkpoints:
            self._store_checkpoints(list(self._end_checkpoints.items()), self._end_score)
        exp = self._experiment
        if exp is None or not exp.is_open:
            return
        exc = sys.exc_info()[1] if status == "failed" else None
        try:
            if status == "failed" and _is_cancel(exc):
                exp.run.cancel(reason=_reason(exc))
            elif status == "failed" and not (isinstance(exc, SystemExit) and exc.code in (0, None)):
                exp.run.fail(reason=_reason(exc))
            elif status == "finished":  # only from Lightning's SLURM requeue handler: the process ends soon
                exp.run.complete(reason="finished (requeue)")
            else:  # on a timeout the core warns and keeps delivering in the background
                exp.flush(timeout=self._flush_timeout)
        except Exception as e:  # finalize must never turn a finished run into a crash
            _warn(f"finalize({status!r}) failed: {e!r}")

    # -- pickling (ddp_spawn) --------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_experiment"] = None
        state["_user_experiment"] = None  # the copy re-attaches by prefix under the same root
        state["_streams"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


_CLASSES: dict[str, type] = {}

_NAMESPACES = {
    # namespace -> (module holding Logger and DummyExperiment, module the class is published in)
    "lightning.pytorch": ("lightning.pytorch.loggers.logger", "ml_dash_lightning"),
    "pytorch_lightning": ("pytorch_lightning.loggers.logger", "ml_dash_lightning.pl"),
}


def make_logger_class(namespace: str) -> type:
    """Build (once) ``MLDashLogger`` on the ``Logger`` base class of ``namespace``."""
    if namespace not in _NAMESPACES:
        raise ValueError(f"unknown Lightning namespace {namespace!r}; expected one of {sorted(_NAMESPACES)}")
    cls = _CLASSES.get(namespace)
    if cls is not None:
        return cls
    base_module, public_module = _NAMESPACES[namespace]
    mod = importlib.import_module(base_module)
    base, dummy = mod.Logger, mod.DummyExperiment

    class MLDashLogger(MLDashLoggerMixin, base):  # type: ignore[misc, valid-type]
        __doc__ = MLDashLoggerMixin.__doc__

        def _dummy_experiment(self) -> Any:
            return dummy()

    MLDashLogger.__module__ = public_module
    MLDashLogger.__qualname__ = "MLDashLogger"
    _CLASSES[namespace] = MLDashLogger
    return MLDashLogger
