"""MLDashCallback: Keras 3 ``fit``/``evaluate``/``predict`` events -> ml-dash buffered writes.

Threading: with ``async_safe = True`` Keras runs ``on_train_batch_end``/``on_predict_batch_end`` on a worker
pool (torch and jax backends). Those two hooks only read an immutable per-epoch context, update counters under
``self._lock`` and enqueue rows; they never touch ``self.model`` (on jax that would force a device sync). All
other hooks run on the training thread, after Keras has waited for the pending batch hooks.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import keras

from ._compat import Experiment, integration
from ._rank import process_rank
from ._rows import OrderedRows, batch_row, split_logs
from ._stop import sibling_callbacks, stop_reason

F = TypeVar("F", bound=Callable[..., Any])
FLUSH_TIMEOUT = 30.0


@dataclass(frozen=True)
class _Epoch:
    """What a batch hook needs, fixed at ``on_epoch_begin`` (read-only from worker threads)."""

    epoch: int
    base: int  # global step before this epoch's first batch
    stride: int  # steps_per_execution: Keras numbers batch-end hooks stride-1, 2*stride-1, ...
    steps: int | None  # batches per epoch, when Keras knows it
    freq: int | None  # log_freq when per-batch rows are on

    def step(self, batch: int) -> int:
        """Global step after Keras batch ``batch`` (= optimizer updates so far, counting from 1)."""
        if self.steps:
            batch = min(batch, self.steps - 1)
        return self.base + batch + 1


def _guard(fn: F) -> F:
    """A hook never raises into training; its first failure warns."""

    @functools.wraps(fn)
    def hook(self: MLDashCallback, *args: Any, **kwargs: Any) -> Any:
        if self._disabled:
            return None
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:
            self._warn(fn.__name__, exc)
            return None

    return hook  # type: ignore[return-value]


def _leading_dim(logs: Mapping[str, Any] | None) -> int | None:
    """Rows in a predict batch: the first dimension of the first output (no device access: shape only)."""
    for value in (logs or {}).values():
        while isinstance(value, (list, tuple)) and value:
            value = value[0]
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) > 0 and shape[0] is not None:
            return int(shape[0])
    return None


class MLDashCallback(keras.callbacks.Callback):  # type: ignore[misc]  # keras ships no type hints
    """Record ``model.fit`` (and ``evaluate``/``predict``) into an ml-dash experiment.

    ``MLDashCallback("project/run")`` creates the experiment on first use (rank 0 only) and closes it at the
    end of each ``fit``/``evaluate``/``predict`` call that opened it; ``MLDashCallback(experiment=exp)`` logs
    into your experiment and leaves an experiment you opened for you to close.

    Streams: ``train`` (epoch rows; with ``log_freq=N`` also a row every N batches, marked by a ``batch``
    field), ``val`` (the ``val_*`` keys of an epoch), ``test`` (a separate ``evaluate()``), ``predict`` (a
    ``predict()``: batches, samples, seconds). Every row has ``step`` (optimizer updates so far) and ``epoch``.
    """

    async_safe = True  # keep Keras's asynchronous batch-hook dispatch; the batch hooks are thread-safe

    def __init__(
        self,
        prefix: str | None = None,
        *,
        experiment: Experiment | None = None,
        dash_root: str | os.PathLike[str] | None = None,
        dash_url: str | bool | None = None,
        log_freq: str | int = "epoch",
        save_model: bool = False,
        buffer_config: Any = None,
        params: Mapping[str, Any] | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        **experiment_kwargs: Any,
    ) -> None:
        super().__init__()
        self._factory = integration.ExperimentFactory(
            "MLDashCallback", prefix, experiment, dash_root=dash_root, dash_url=dash_url,
            buffer_config=buffer_config, description=description, tags=tags, metadata=metadata,
            **experiment_kwargs,
        )
        if log_freq != "epoch" and (
            isinstance(log_freq, bool) or not isinstance(log_freq, int) or log_freq < 1
        ):
            raise ValueError(
                f'log_freq must be "epoch" or a positive int (rows every N batches), got {log_freq!r}'
            )
        if not isinstance(save_model, bool):
            raise TypeError(f"save_model must be True or False, got {save_model!r}")
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping, got {type(params).__name__}")

        self._exp: Experiment | None = experiment
        self._freq: int | None = None if log_freq == "epoch" else int(log_freq)
        self._save_model = save_model
        self._user_params = dict(params or {})
        self._rank: int | None = None
        self._disabled = False
        self._warn_once = integration.WarnOnce("ml-dash-keras")
        self._lock = threading.Lock()
        self._rows = OrderedRows(self._emit_batch_row, lock=self._lock)  # one lock for both
        self._train_stream: Any = None
        # run state (training thread only, except where noted)
        self._opened = False  # we started the experiment and are to close it
        self._user_params_set = False
        self._fitting = False
        self._fit_params: Any = None  # the params object of the current fit: its evaluate() calls share it
        self._ctx: _Epoch | None = None  # read by batch hooks
        self._last_batch = -1  # under _lock
        self._step: int | None = None  # global step after the last completed batch
        self._epoch: int | None = None  # last completed epoch
        self._outcome: tuple[str, str | None] = ("complete", None)
        self._predict = {"last": -1, "samples": 0, "t0": 0.0}  # under _lock
        #: why the last fit stopped early (EarlyStopping, TerminateOnNaN, ...), or None
        self.stop_reason: str | None = None

    # ----------------------------------------------------------------- experiment and lifecycle helpers
    @property
    def experiment(self) -> Experiment | None:
        """The experiment (created on first access); None on a process other than rank 0."""
        if self._rank is None:
            self._rank = process_rank(keras.backend.backend())
        if self._rank != 0 or self._disabled:
            return None
        if self._exp is None:
            self._exp = self._create()
        return self._exp

    def _create(self) -> Experiment | None:
        prefix = self._factory.prefix
        if prefix is None:
            prefix = "keras/" + integration.timestamp_name(getattr(getattr(self, "_model", None), "name", None))
        try:
            return self._factory.create(prefix)
        except OSError as exc:
            self._warn("creating the experiment", exc)
            self._disabled = True
            return None

    def _begin(self) -> Experiment | None:
        exp = self.experiment
        if exp is None:
            return None
        if not exp.is_open:
            exp.run.start()
            self._opened = True
        if not self._user_params_set and self._user_params:
            exp.params.set(**self._params(self._user_params))
        self._user_params_set = True
        return exp

    def _end(self, exp: Experiment) -> None:
        if self._opened and not self._fitting:
            self._opened = False
            kind, reason = self._outcome
            if kind == "fail":
                exp.run.fail(reason=reason)
            else:
                integration.close_run(exp, reason=reason)
        else:
            exp.flush(timeout=FLUSH_TIMEOUT)

    def _live(self) -> Experiment | None:
        """The experiment if this process logs and it exists (never creates it)."""
        return None if self._disabled or self._rank != 0 else self._exp

    def _warn(self, where: str, exc: BaseException) -> None:
        self._warn_once(where, f"{where} failed ({exc!r}); training goes on without it", stacklevel=4)

    def _params(self, params: Any, prefix: str = "") -> dict[str, Any]:
        """Flattened with dots; a value the core cannot store as is becomes its text form (warned once)."""
        unstorable: list[str] = []
        flat = integration.flatten_params(params, prefix, unstorable=unstorable)
        if unstorable:
            self._warn_once("params", "parameters stored as text: " + ", ".join(unstorable), stacklevel=4)
        return flat

    def _iterations(self) -> int | None:
        """The optimizer's update count (read at train/test begin only, never per batch)."""
        try:
            return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        except Exception:  # not compiled, a custom optimizer without a counter...
            return None

    def _auto_params(self) -> dict[str, Any]:
        p = self.params or {}
        out: dict[str, Any] = {
            "fit.epochs": p.get("epochs"),
            "fit.steps": p.get("steps"),
            "keras.version": keras.__version__,
            "keras.backend": keras.backend.backend(),
        }
        model = self.model
        for key, get in (
            ("model.name", lambda: model.name),
            ("model.class", lambda: type(model).__name__),
            ("model.layers", lambda: len(model.layers)),
            ("model.params", lambda: int(model.count_params())),
            ("model.trainable_params", lambda: sum(math.prod(w.shape) for w in model.trainable_weights)),
            ("fit.steps_per_execution", lambda: int(getattr(model, "steps_per_execution", 1) or 1)),
        ):
            try:
                out[key] = get()
            except Exception:
                pass  # a model that is not built, a subclass without layers...
        try:
            out.update(self._params(model.optimizer.get_config(), "optimizer"))
        except Exception:
            pass
        return out

    # ------------------------------------------------------------------------------------------- fit
    @_guard
    def on_train_begin(self, logs: Any = None) -> None:
        stale = self._fitting
        self._fitting, self._fit_params, self.stop_reason = True, self.params, None
        self._outcome = ("complete", None)
        exp = self._begin()
        if exp is None:
            return
        if stale:
            exp.logs.warn("the previous fit() did not reach on_train_end (it raised?)")
        it = self._iterations()
        self._step = it if it is not None else (self._step or 0)
        self._train_stream = exp.metrics("train")
        self._rows.emit = self._train_stream._log_row  # batch rows: fresh dicts (`batch_row`), handed over
        exp.params.set(**self._auto_params())
        if self._user_params:
            exp.params.set(**self._params(self._user_params))  # the user's values win over the automatic ones
        p = self.params or {}
        exp.log(f"fit started: epochs={p.get('epochs')} steps={p.get('steps')} step={self._step}")

    @_guard
    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if self._live() is None or not self._fitting:
            return
        stride = int(getattr(self.model, "steps_per_execution", 1) or 1)
        steps = (self.params or {}).get("steps")
        self._rows.start(stride)
        with self._lock:
            self._last_batch = -1
        base = self._step or 0
        self._ctx = _Epoch(int(epoch), base, stride, steps if isinstance(steps, int) else None, self._freq)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:  # may run on a Keras worker thread
        # every batch: `_guard` written out (no wrapper call), `_Epoch.step` inlined
        ctx = self._ctx
        if ctx is None or self._disabled:
            return
        lock = self._lock
        try:
            b = batch if type(batch) is int else int(batch)
            lock.acquire()
            try:
                if b > self._last_batch:
                    self._last_batch = b
                freq = ctx.freq
                if freq is None:
                    return
                steps, stride, base = ctx.steps, ctx.stride, ctx.base
                step = base + (b if not steps or b < steps else steps - 1) + 1
                p = b - stride
                prev = base + (p if not steps or p < steps else steps - 1) + 1 if b >= stride else base
                row = None
                if step // freq > prev // freq:  # this batch crossed a multiple of N: N batches since the last row
                    row = batch_row(logs, step, ctx.epoch, b)
                self._rows.add_locked(b, row)
            finally:
                lock.release()
        except Exception as exc:
            self._warn("on_train_batch_end", exc)

    def _emit_batch_row(self, row: dict[str, Any]) -> None:
        self._train_stream._log_row(row)

    @_guard
    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        exp, ctx = self._live(), self._ctx
        if exp is None or ctx is None:
            return
        self._rows.drain()  # Keras has waited for this epoch's batch hooks
        with self._lock:
            done = self._last_batch + 1
        if ctx.steps:
            done = min(done, ctx.steps)
        self._step, self._epoch = ctx.base + max(done, 0), int(epoch)
        for stream, fields in split_logs(logs).items():
            exp.metrics(stream).log(**{**fields, "step": self._step, "epoch": self._epoch})

    @_guard
    def on_train_end(self, logs: Any = None) -> None:
        was_fitting, self._fitting, self._ctx = self._fitting, False, None
        exp = self._live()
        if exp is None or not was_fitting:
            return
        self._rows.drain()
        reason, diverged = stop_reason(self.model, logs, sibling_callbacks(self))
        self.stop_reason = reason
        self._outcome = ("fail" if diverged else "complete", reason)
        if reason:
            (exp.logs.error if diverged else exp.logs.info)(reason)
        if self._save_model:
            self._store_model(exp)
        exp.log(f"fit ended: last epoch {self._epoch}, step {self._step}")
        self._end(exp)

    def _store_model(self, exp: Experiment) -> None:
        tmp = tempfile.mkdtemp(prefix="ml-dash-keras-")
        try:
            path = os.path.join(tmp, "model.keras")
            self.model.save(path)
            exp.files("models").upload(path)
            exp.flush(timeout=FLUSH_TIMEOUT)  # published before the temporary copy goes away
        except Exception as exc:
            exp.logs.warn(f"save_model: could not store the model: {exc!r}")
            self._warn("save_model", exc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------------- evaluate / predict
    def _in_fit(self) -> bool:
        """A test hook from fit's own validation (it shares fit's CallbackList, hence its params object)."""
        if not self._fitting:
            return False
        if self.params is self._fit_params:
            return True
        self._fitting, self._ctx = False, None  # a new top-level call: the last fit() never ended
        return False

    def _outside_step(self) -> int | None:
        if self._step is None:
            self._step = self._iterations()
        return self._step

    @_guard
    def on_test_begin(self, logs: Any = None) -> None:
        if self._in_fit():
            return
        if self._begin() is not None:
            self._outside_step()

    @_guard
    def on_test_end(self, logs: Any = None) -> None:
        if self._in_fit():
            return  # validation inside fit: recorded from on_epoch_end's val_* keys, stream val
        exp = self._live()
        if exp is None:
            return
        fields: dict[str, Any] = {}
        for stream, values in split_logs(logs, default="test").items():
            for name, v in values.items():
                fields[name if stream == "test" else f"{stream}_{name}"] = v
        exp.metrics("test").log(**{**fields, "step": self._step, "epoch": self._epoch})
        self._end(exp)

    @_guard
    def on_predict_begin(self, logs: Any = None) -> None:
        if self._begin() is not None:
            self._outside_step()
            with self._lock:
                self._predict = {"last": -1, "samples": 0, "t0": time.monotonic()}

    @_guard
    def on_predict_batch_end(self, batch: int, logs: Any = None) -> None:  # may run on a Keras worker thread
        n = _leading_dim(logs)
        with self._lock:
            if batch > self._predict["last"]:
                self._predict["last"] = batch
            self._predict["samples"] += n or 0

    @_guard
    def on_predict_end(self, logs: Any = None) -> None:
        exp = self._live()
        if exp is None:
            return
        with self._lock:
            last, samples, t0 = self._predict["last"], self._predict["samples"], self._predict["t0"]
        steps = (self.params or {}).get("steps")
        batches = last + 1 if not isinstance(steps, int) else min(last + 1, steps)
        exp.metrics("predict").log(
            batches=batches,
            samples=samples,
            seconds=round(time.monotonic() - t0, 6),
            step=self._step,
            epoch=self._epoch,
        )
        self._end(exp)
