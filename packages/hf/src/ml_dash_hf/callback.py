"""`MLDashCallback`: transformers `Trainer` events -> an ml-dash experiment (buffered writes, never blocking)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import traceback
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from transformers import TrainerCallback

from ._compat import Experiment, integration
from ._mapping import _router, default_prefix, flatten, is_scalar, model_params, rows, same_value

CHECKPOINT_MODES = ("checkpoint", "end")
_PLAIN = frozenset({bool, int, float, str, type(None)})
_plain = _PLAIN.issuperset


class MLDashCallback(TrainerCallback):
    """Record a `transformers.Trainer` run in ml-dash: `Trainer(..., callbacks=[MLDashCallback("proj/run")])`.

    Args:
        prefix: experiment prefix `"project/name"`; default `<args.project or "huggingface">/<run_name or
            output folder name>`. The same prefix again appends to the same run.
        experiment: an existing `ml_dash.Experiment` to record into instead (not with `prefix` & co). If it is
            already open (`with exp.run:`), its owner closes it; otherwise the callback opens and closes it.
        dash_root, dash_url, buffer_config, description, tags, metadata, echo, stores: passed to `Experiment`.
        log_checkpoints: `False` (default); `"checkpoint"`: copy every checkpoint folder when the Trainer saves it
            (to files `checkpoints/checkpoint-<step>/`), so `save_total_limit` cannot lose it; `"end"`: store the
            final model (`save_pretrained`, with the tokenizer/processor) in files `model/` at the end of training.

    Only the world process zero records (`state.is_world_process_zero`); other processes do nothing.
    """

    def __init__(
        self,
        prefix: str | None = None,
        *,
        experiment: Experiment | None = None,
        dash_root: str | os.PathLike[str] | None = None,
        dash_url: str | bool | None = None,
        log_checkpoints: str | bool | None = False,
        buffer_config: Any = None,
        description: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        echo: bool | None = None,
        stores: Any = None,
        **experiment_kwargs: Any,
    ) -> None:
        if log_checkpoints in (None, False):
            log_checkpoints = False
        elif log_checkpoints not in CHECKPOINT_MODES:
            raise ValueError(
                f"MLDashCallback: log_checkpoints must be False, 'checkpoint' or 'end', got {log_checkpoints!r}"
            )
        self._factory = integration.ExperimentFactory(
            "MLDashCallback", prefix, experiment, dash_root=dash_root, dash_url=dash_url,
            buffer_config=buffer_config, description=description, tags=tags, metadata=metadata, echo=echo,
            stores=stores, **experiment_kwargs,
        )
        self.prefix = prefix
        self.log_checkpoints: str | bool = log_checkpoints
        self._exp: Experiment | None = experiment
        self._owns = False  # True when this callback opened the run and so closes it
        self._training = False
        self._is_zero = True
        self._last_log: tuple[int, dict[str, Any]] | None = None
        self._warn_once = integration.WarnOnce("ml-dash")
        self._streams: dict[str, Any] = {}  # stream -> exp.metrics(stream), made once

    # ------------------------------------------------------------------------------------------- public

    @property
    def experiment(self) -> Experiment | None:
        """The experiment being recorded into (None before the first Trainer event on process zero)."""
        return self._exp

    @contextlib.contextmanager
    def guard(self) -> Iterator[MLDashCallback]:
        """`with callback.guard(): trainer.train()`: on an exception, flush and mark the run `FAILED` at once
        (`CANCELLED` on KeyboardInterrupt) and re-raise. Without it, the core's exit hook does the same when the
        exception ends the program; the guard also covers code that catches the exception and goes on."""
        try:
            yield self
        except KeyboardInterrupt as exc:
            self._abort(exc, cancel=True)
            raise
        except Exception as exc:
            self._abort(exc, cancel=False)
            raise

    # ------------------------------------------------------------------------------------------- events

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not self._zero(state):
            return
        self._training = True
        exp = self._open(args)
        params = flatten("args", args.to_dict())
        params.update(model_params(model))
        exp.params.set(**params)
        exp.log(
            "Trainer.train() started",
            global_step=state.global_step,
            max_steps=state.max_steps,
            num_train_epochs=state.num_train_epochs,
        )

    def on_log(
        self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        # every step: _zero(), _pristine() and the plain case of _record(), inlined
        try:  # a TrainerState has both
            zero, history = state.is_world_process_zero, state.log_history
        except AttributeError:
            zero, history = getattr(state, "is_world_process_zero", True), getattr(state, "log_history", None)
        if not zero:
            self._is_zero = False
            return
        self._is_zero = True
        if not logs:
            return
        # `logs` itself, not a copy: nothing here changes it, and the rows are built from it at once
        step = state.global_step
        if history:
            last = history[-1]
            if type(last) is not dict or len(last) - ("step" in last) > len(logs):  # a key may have been popped
                logs = self._pristine(logs, state)
        self._last_log = (step, logs)
        exp = self._exp
        # log_numeric: None for a closed run or a value that is not a plain number
        if exp is None or not self._training or "train_runtime" in logs or _router.log_numeric(
                logs, step, logs["epoch"] if "epoch" in logs else state.epoch, exp) is None:
            self._record(args, state, logs)  # the summary, odd values, a closed run, outside train()

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not self._zero(state) or not metrics:
            return
        row = dict(metrics)
        last, self._last_log = self._last_log, None
        # Trainer.evaluate() passes the same metrics to on_log first: record only what on_log did not carry.
        # What on_log recorded: the Trainer's own copy in log_history (a callback may since have changed the dict
        # on_log was given), else that dict.
        if last is not None and last[0] == state.global_step:
            history = getattr(state, "log_history", None)
            logged = history[-1] if history else None
            if type(logged) is not dict or logged.get("step") != last[0] or not last[1].keys() <= logged.keys():
                logged = last[1]
            row = {k: v for k, v in row.items() if not (k in logged and same_value(logged[k], v))}
        self._record(args, state, row)

    def on_predict(
        self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not self._zero(state) or not metrics:
            return
        self._record(args, state, dict(metrics))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._zero(state) or self.log_checkpoints != "checkpoint":
            return
        name = f"checkpoint-{state.global_step}"
        folder = os.path.join(args.output_dir, name)
        if not os.path.isdir(folder):
            self._warn("ckpt-missing", f"checkpoint folder {folder} not found; not stored")
            return
        exp = self._open(args)
        self._store_folder(exp, folder, "checkpoints", name)
        exp.log(f"checkpoint stored: {name}", step=state.global_step, source=folder)
        self._maybe_close()

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not self._zero(state):
            return
        exp = self._open(args)
        if self.log_checkpoints == "end" and model is not None:
            self._store_model(exp, model, kwargs.get("processing_class") or kwargs.get("tokenizer"))
        exp.log("Trainer.train() finished", global_step=state.global_step, epoch=state.epoch)
        self._training = False
        reason = None
        if state.max_steps and 0 < state.global_step < state.max_steps:
            reason = f"training stopped at step {state.global_step} of {state.max_steps}"
        if self._owns:
            integration.close_run(exp, reason=reason)
        else:
            exp.flush()

    # ------------------------------------------------------------------------------------------- internals

    def _zero(self, state: Any) -> bool:
        self._is_zero = bool(getattr(state, "is_world_process_zero", True))
        return self._is_zero

    def _open(self, args: Any) -> Experiment:
        """The experiment, created on first use and (re)opened if closed."""
        if self._exp is None:
            self._exp = self._factory.create(self.prefix or default_prefix(args))
        if not self._exp.is_open:
            self._exp.run.start()
            self._owns = True
        return self._exp

    def _maybe_close(self) -> None:
        """After an event outside train() (evaluate/predict afterwards) put an owned run back to COMPLETED."""
        if not self._training and self._owns and self._exp is not None and self._exp.is_open:
            integration.close_run(self._exp)

    def _pristine(self, logs: Mapping[str, Any], state: Any) -> dict[str, Any]:
        """A copy of `logs`, with keys that an earlier callback popped (PrinterCallback pops `total_flos`)
        restored from `state.log_history[-1]`, which `Trainer.log` appends before calling the callbacks."""
        row = dict(logs)
        history = getattr(state, "log_history", None)
        if history:
            last = history[-1]
            if isinstance(last, Mapping) and last.get("step") == state.global_step \
                    and len(last) - ("step" in last) > len(row) and row.keys() <= last.keys():
                for key, value in last.items():  # only when a key is missing
                    if key != "step" and key not in row:
                        row[key] = value
        return row

    def _record(self, args: Any, state: Any, row: dict[str, Any]) -> None:
        epoch = row.get("epoch", state.epoch)
        exp = self._exp
        if "train_runtime" not in row and _plain(map(type, row.values())):
            # every step: plain values (no summary, nothing to drop), routed once per key tuple, each row handed to
            # the core as it is built
            if exp is None or not exp.is_open:
                exp = self._open(args)
            try:
                _router.log(row, state.global_step, epoch, exp)
            except (TypeError, ValueError) as exc:  # a value the core refuses must not end training
                self._warn("row", f"{exc}; that metric row was not recorded")
            if not self._training:
                self._maybe_close()
            return
        streams = rows(row, state.global_step, epoch)
        if not streams:
            return
        if exp is None or not exp.is_open:
            exp = self._open(args)
        for stream, fields in streams.items():
            if not _plain(map(type, fields.values())):  # rare: check each value, drop what is not a scalar
                self._drop_non_scalars(stream, fields)
            if len(fields) <= 2:  # only step and epoch left
                continue
            acc = self._streams.get(stream)
            if acc is None:
                acc = self._streams[stream] = exp.metrics(stream)
            try:
                acc._log_row(fields)  # a fresh dict: handed over, not copied
            except (TypeError, ValueError) as exc:  # a value the core refuses must not end training
                self._warn(f"row:{stream}", f"{exc}; recording only the plain numbers of that row")
                plain = {k: v for k, v in fields.items() if v is None or type(v) in (bool, int, float)}
                if len(plain) > 2:
                    acc.log(**plain)
        if not self._training:
            self._maybe_close()

    def _drop_non_scalars(self, stream: str, fields: dict[str, Any]) -> None:
        for field, value in list(fields.items()):
            if not is_scalar(value):
                del fields[field]
                self._warn(
                    f"value:{stream}/{field}", f"metric {field!r} ({type(value).__name__}) is not a scalar; not recorded"
                )

    def _store_folder(self, exp: Experiment, folder: str, parent: str | None, name: str) -> None:
        """Capture every file of `folder` now, as files `<parent>/<name>/...`."""
        try:
            entries = exp.files(parent).upload(folder, to=name)
        except OSError as exc:  # I/O never raises into training
            self._warn(f"upload:{name}", f"could not store {folder}: {exc}")
            return
        # A large file that could not be hard-linked (another filesystem) is copied by the core later, at its next
        # flush; the Trainer may delete the folder before that (save_total_limit), so make it happen now.
        if any(e.get("sizeBytes") is None for e in entries if isinstance(e, dict)):
            exp.flush()

    def _store_model(self, exp: Experiment, model: Any, processor: Any) -> None:
        tmp = tempfile.mkdtemp(prefix="ml-dash-hf-model-")
        try:
            save = getattr(model, "save_pretrained", None)
            if callable(save):
                save(tmp)
            else:
                import torch

                torch.save(model.state_dict(), os.path.join(tmp, "pytorch_model.bin"))
            if processor is not None and callable(getattr(processor, "save_pretrained", None)):
                processor.save_pretrained(tmp)
            self._store_folder(exp, tmp, None, "model")
            exp.flush()  # whatever the core copies lazily must be copied before the temporary folder goes
        except Exception as exc:  # training is over and the model is still in memory: warn, do not raise
            self._warn("model", f"could not store the final model: {exc!r}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _abort(self, exc: BaseException, *, cancel: bool) -> None:
        exp = self._exp
        self._training = False
        if exp is None or not self._is_zero or not exp.is_open:
            return
        try:
            reason = integration.failure_reason(exc) or ""
            if cancel:
                exp.log(f"training cancelled: {reason}", level="warn")
            else:
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                exp.log(f"training failed: {reason}", level="error", metadata={"traceback": tb[-8000:]})
            if not self._owns:
                exp.flush()
            else:
                integration.close_run(exp, exc)
        except Exception as inner:  # never mask the training exception
            warnings.warn(f"ml-dash: could not record the failure: {inner!r}", stacklevel=3)

    def _warn(self, key: str, message: str) -> None:
        self._warn_once(key, message, stacklevel=4)


def train(trainer: Any, *args: Any, **kwargs: Any) -> Any:
    """`ml_dash_hf.train(trainer, ...)`: `trainer.train(...)` inside the guard of every `MLDashCallback` of the
    trainer, so an exception marks the run `FAILED` (KeyboardInterrupt: `CANCELLED`) at once and is re-raised."""
    callbacks = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MLDashCallback)]
    if not callbacks:
        raise ValueError(
            "ml_dash_hf.train: the trainer has no MLDashCallback; use Trainer(..., callbacks=[MLDashCallback()])"
        )
    with contextlib.ExitStack() as stack:
        for cb in callbacks:
            stack.enter_context(cb.guard())
        return trainer.train(*args, **kwargs)
