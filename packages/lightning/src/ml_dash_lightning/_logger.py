"""The logger's behaviour, shared by the ``lightning.pytorch`` and ``pytorch_lightning`` classes.

:func:`make_logger_class` combines :class:`MLDashLoggerMixin` with one namespace's ``Logger`` base class, so an
``isinstance`` check (and LightningCLI's ``class_path``) in either namespace finds a class of that namespace.
Only Lightning knowledge lives here; the rules every adapter shares come from ``ml_dash.integration``.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from argparse import Namespace
from collections.abc import Mapping
from dataclasses import is_dataclass
from typing import Any, Literal, Optional, Union

from lightning_utilities.core.rank_zero import rank_zero_only

from ._compat import BufferConfig, Experiment, integration
from ._util import checkpoint_files, file_key, score_of

CHECKPOINT_DIR = "checkpoints"
DEFAULT_NAME = "lightning_logs"
LOGGER_JOIN_CHAR = "-"  # Lightning's separator between a logger's prefix and a metric key

_taken: set[tuple[str, str, str]] = set()  # (root, name, version) handed out by this process
_taken_lock = threading.Lock()


def _rank() -> int:
    return getattr(rank_zero_only, "rank", 0) or 0


def _auto_version(root: str, name: str) -> int:
    """The next ``version_N`` under ``<root>/<name>``, as CSVLogger counts, never one this process gave out."""
    with _taken_lock:
        n = integration.next_version(root, name)
        while (root, name, f"version_{n}") in _taken:
            n += 1
        _taken.add((root, name, f"version_{n}"))
        return n


class MLDashLoggerMixin:
    """Log a Lightning run to ML-Dash: ``Trainer(logger=MLDashLogger())``.

    The run goes to ``<save_dir>/<name>/<version>`` as Lightning's CSV and TensorBoard loggers lay theirs out:
    ``name`` is the ML-Dash project, ``version`` the run. ``MLDashLogger()`` gives
    ``.dash/lightning_logs/version_0``, then ``version_1``, ...

    Args:
        run: the ML-Dash run path ``"project/name"`` (or ``"project/folders/name"``), instead of ``name`` and
            ``version``. The same run path again appends to the same run.
        name: the project (Lightning's experiment name); default ``"lightning_logs"``.
        version: the run: an int ``N`` means ``"version_N"``, a string is used as given; default: the next free
            ``version_N`` under ``<save_dir>/<name>``.
        save_dir: the local root folder (default ``$ML_DASH_ROOT`` or ``.dash``); ``dash_root`` is the same.
        prefix: Lightning's meaning: a string put before every metric key, joined with ``-``
            (``prefix="fold1"``: ``train_loss`` is logged as ``fold1-train_loss``).
        dash_url: a server URL to upload to as well (``True``: ``$ML_DASH_API_URL``).
        log_model: ``False``: no checkpoint files; ``True``: the best and last checkpoints at the end of each
            fit/validate/test; ``"all"``: every checkpoint as it is saved (copied at once, so files Lightning
            later deletes under ``save_top_k`` are kept).
        buffer_config, description, tags, metadata, and any other keyword (``echo=``, ``stores=``, ...):
            passed to ``ml_dash.Experiment``.
        flush_timeout: seconds the end of each fit/validate/test/predict waits for delivery (None: no limit).
        experiment: an existing ``ml_dash.Experiment`` to log into instead (then leave the others unset).
    """

    def __init__(
        self,
        run: Optional[str] = None,
        *,
        name: Optional[str] = None,
        version: Union[int, str, None] = None,
        save_dir: Union[str, os.PathLike[str], None] = None,
        prefix: str = "",
        dash_root: Union[str, os.PathLike[str], None] = None,
        dash_url: Union[str, bool, None] = None,
        log_model: Union[bool, Literal["all"]] = False,
        buffer_config: Optional[BufferConfig] = None,
        description: Optional[str] = None,
        tags: Optional[list[str]] = None,
        metadata: Optional[dict[str, Any]] = None,
        flush_timeout: Optional[float] = 30.0,
        experiment: Optional[Experiment] = None,
        **experiment_kwargs: Any,
    ) -> None:
        super().__init__()
        if log_model not in (False, True, "all"):
            raise ValueError(f"MLDashLogger: log_model must be False, True or 'all', got {log_model!r}")
        if flush_timeout is not None and not (isinstance(flush_timeout, (int, float)) and flush_timeout >= 0):
            raise ValueError(
                f"MLDashLogger: flush_timeout must be a number >= 0 or None, got {flush_timeout!r}"
            )
        if not isinstance(prefix, str):
            raise TypeError(
                f"MLDashLogger: prefix is Lightning's metric-key prefix (a str); got {type(prefix).__name__}. "
                "The ML-Dash run path is run='project/name'"
            )
        if save_dir is not None and dash_root is not None:
            raise ValueError("MLDashLogger: save_dir and dash_root are the same setting; give one")
        if run is not None and (name is not None or version is not None):
            raise ValueError("MLDashLogger: give either run='project/name' or name=/version=, not both")
        if version is not None and (isinstance(version, bool) or not isinstance(version, (int, str))):
            raise TypeError(f"MLDashLogger: version must be an int or a str, got {version!r}")
        root = save_dir if save_dir is not None else dash_root
        if experiment is None:
            root = os.path.abspath(os.fspath(root if root is not None else os.environ.get("ML_DASH_ROOT") or ".dash"))
        if experiment is not None and (name is not None or version is not None):
            raise ValueError("MLDashLogger: pass either experiment= or name=/version=, not both")
        self._version_arg: Union[int, str, None] = version
        auto_named = experiment is None and run is None and version is None
        if experiment is None and run is None:
            project = DEFAULT_NAME if name is None else name
            if version is None:
                version = self._version_arg = _auto_version(str(root), project)
            run = f"{project}/{version if isinstance(version, str) else f'version_{version}'}"
        self._factory = integration.ExperimentFactory(
            "MLDashLogger", run, experiment, path_arg="run", dash_root=root, dash_url=dash_url, buffer_config=buffer_config,
            description=description, tags=tags, metadata=metadata, **experiment_kwargs,
        )
        assert self._factory.prefix is not None  # given as run=, made above, or the experiment's own
        self._run: str = self._factory.prefix
        self._root: str = self._factory.dash_root
        self._metric_prefix = prefix
        self._auto_named = auto_named
        self._flush_timeout = flush_timeout
        self._log_model = log_model
        self._experiment: Experiment | None = None
        self._owned = False  # this logger opened the run, so it closes it at the end of each Trainer call
        self._broken = False  # the experiment could not be created (I/O error): log nothing, never raise
        self._announced = False
        self._warn = integration.WarnOnce("MLDashLogger")
        self._router = integration.MetricRouter(skip=("epoch",))  # Lightning's epoch: the rows' own field
        self._streams: dict[str, Any] = {}  # stream name -> exp.metrics(stream), for the current experiment
        self._epoch: Any = None
        self._last_step: int = 0
        self._end_checkpoints: dict[str, str] = {}  # log_model=True: path -> tag, uploaded at finalize
        self._end_score: float | None = None
        self._stored: set[tuple[str, int, int, int]] = set()  # checkpoint contents already uploaded

    # -- what Lightning reads ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The project (the run path's first part); ``lightning_logs`` by default."""
        return self._run.split("/", 1)[0]

    @property
    def version(self) -> Union[int, str]:
        """The run within the project: the int ``N`` of ``version_N`` when numbered so, else the rest of the path."""
        rest = self._run.split("/", 1)[1]
        if isinstance(self._version_arg, int) and rest == f"version_{self._version_arg}":
            return self._version_arg
        return rest

    @property
    def run(self) -> str:
        """The ML-Dash run path ``<name>/<version>`` (``ml_dash.load(logger.run, dash_root=logger.save_dir)``)."""
        return self._run

    @property
    def prefix(self) -> str:
        """Lightning's metric-key prefix (``""``: none)."""
        return self._metric_prefix

    @property
    def save_dir(self) -> str:
        """The dash root; checkpoints go to ``<save_dir>/<name>/<version>/checkpoints`` (the experiment folder)."""
        return self._root

    @property
    def root_dir(self) -> str:
        return os.path.join(self._root, self.name)

    @property
    def log_dir(self) -> str:
        """The experiment folder ``<save_dir>/<name>/<version>``."""
        return os.path.join(self._root, *self._run.split("/"))

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
                exp = self._factory.create()
            if not exp.is_open:
                exp.run.start()
                self._owned = True
        except OSError as e:
            self._broken = True
            self._warn("open", f"cannot open experiment {self._run!r} under {self._root}: {e}; training goes on unlogged")
            return None
        self._experiment = exp
        self._streams = {}
        if self._auto_named and not self._announced:
            self._announced = True
            if not exp.config.quiet:  # the run's settings: buffer_config, else ML_DASH_QUIET
                print(f"[ML-Dash] Lightning run: {self._run} (in {self.log_dir})", file=sys.stderr)
        return exp

    # -- the hot path ----------------------------------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        """One row per stream with ``step`` and ``epoch``; values go to the core as given (tensors included).

        ``epoch`` in ``metrics`` is Lightning's (the Trainer adds it; a user's ``self.log("epoch", x)`` replaces
        it, as for Lightning's own loggers), so it becomes the rows' ``epoch``; a call with only ``epoch`` still
        stores a row."""
        if getattr(rank_zero_only, "rank", 0) or not metrics:  # _rank(), inlined: this runs every step
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
        if self._metric_prefix:
            p = self._metric_prefix + LOGGER_JOIN_CHAR
            metrics = {(k if k == "epoch" else p + k): v for k, v in metrics.items()}
        try:  # each key routed once per key tuple (the kit's MetricRouter), each row handed to the core as built
            if not self._router.log(metrics, step, epoch, exp):
                exp.metrics(integration.DEFAULT_STREAM).log(step=step, epoch=epoch)
        except (TypeError, ValueError) as e:  # a value the core refuses: warn once, never stop training
            self._warn(f"metric:{type(e).__name__}", f"a metric row was not recorded: {e}")

    # -- once per run ----------------------------------------------------------------------------------------

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Dicts, Namespaces, dataclasses and nested containers, flattened with dots. A value the core cannot
        store as is (complex, bytes, dates, objects) is stored as its text form, with one warning."""
        if _rank() != 0:
            return
        if params is not None and not isinstance(params, (Mapping, Namespace)) and not is_dataclass(params):
            raise TypeError(
                "log_hyperparams expects a dict, argparse.Namespace or dataclass instance, "
                f"got {type(params).__name__}"
            )
        unstorable: list[str] = []
        flat = integration.flatten_params(params, unstorable=unstorable)
        if unstorable:
            self._warn("hparams", "stored as text: " + ", ".join(unstorable))
        if not flat:
            return
        exp = self._live()
        if exp is None:
            return
        try:
            exp.params.set(**flat)
        except (TypeError, ValueError) as e:
            self._warn("hparams-set", f"hyperparameters not recorded: {e}")

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
                self._warn(f"ckpt:{path}", f"could not store checkpoint {path}: {e!r}")
                continue
            self._stored.add(key)
            meta: dict[str, Any] = {"file": os.path.basename(path), "tag": tag}
            if tag == "best" and best_score is not None:
                meta["score"] = best_score
            exp.log(f"checkpoint stored: {os.path.basename(path)}", metadata=meta)

    def finalize(self, status: str) -> None:
        """After every fit/validate/test/predict: store end checkpoints, then, for a run this logger opened,

        - ``"success"``: complete it (``COMPLETED``); a later Trainer call (or log call) re-opens it;
        - ``"finished"`` (Lightning's SLURM requeue handler): complete;
        - ``"failed"`` with Ctrl-C or Lightning's SIGTERMException in flight: cancel; any other ``"failed"``: fail.

        A run the user opened (``experiment=`` already started) is only flushed: the user closes it."""
        if _rank() != 0:
            return
        if self._log_model is True and self._end_checkpoints:
            self._store_checkpoints(list(self._end_checkpoints.items()), self._end_score)
        exp = self._experiment
        if exp is None or not exp.is_open:
            return
        exc = sys.exc_info()[1] if status == "failed" else None
        try:
            if not self._owned:  # the user's run: the user closes it (`with exp.run:` records the exception)
                exp.flush(timeout=self._flush_timeout)
            elif status == "failed" and (
                integration.is_cancel(exc) or not (isinstance(exc, SystemExit) and exc.code in (0, None))
            ):
                integration.close_run(exp, exc if exc is not None else RuntimeError("training failed"))
            elif status == "finished":  # only from Lightning's SLURM requeue handler: the process ends soon
                exp.run.complete(reason="finished (requeue)")
            else:  # on a flush timeout the core warns and keeps delivering in the background
                exp.flush(timeout=self._flush_timeout)
                integration.close_run(exp)
        except Exception as e:  # finalize must never turn a finished run into a crash
            self._warn("finalize", f"finalize({status!r}) failed: {e!r}")
        if not exp.is_open:
            self._owned = False

    # -- pickling (ddp_spawn) --------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_experiment"] = None  # the copy re-attaches by run path under the same root (see the factory)
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
