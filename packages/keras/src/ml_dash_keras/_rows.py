"""Keras logs -> metric rows: the stream rule (from ``ml_dash.integration``), value cleaning, in-order batch rows.

No keras import, so it is cheap to test on its own.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ._compat import integration

_PLAIN = frozenset({bool, int, float, str, type(None)})


def clean(value: Any) -> tuple[bool, Any]:
    """(ok, value) with value a plain Python scalar; ok=False for what cannot be one (arrays, objects)."""
    if type(value) in _PLAIN:
        return True, value
    if integration.is_device_scalar(value) and not value.is_complex():
        return True, value  # a GPU scalar goes to the core as it is, which reads it off the training thread
    item = getattr(value, "item", None)  # numpy / torch / jax scalars and one-element arrays
    if callable(item):
        try:
            v = item()
        except Exception:
            return False, None
        return (True, v) if type(v) in _PLAIN else (False, None)
    try:
        return True, float(value)
    except Exception:
        return False, None


# Keras's batch rows carry the batch index as field ``batch``: a user metric of that name is kept apart too
ROW_FIELDS = (*integration.ROW_FIELDS, "batch")
_routers: dict[str, integration.MetricRouter] = {}


def _router(default: str) -> integration.MetricRouter:
    router = _routers.get(default)
    if router is None:
        router = _routers[default] = integration.MetricRouter(default, ROW_FIELDS)
    return router


def split_logs(logs: Mapping[str, Any] | None, default: str = "train") -> dict[str, dict[str, Any]]:
    """Group a Keras logs dict by stream (``ml_dash.integration``'s rule): ``val_loss`` -> ``{"val": {"loss":
    ...}}``, ``loss`` -> default. Keras's own ``step``/``epoch``/``batch`` are not in ``logs``, so a key of that
    name is a user metric: it is kept apart from the row's fields (``epoch`` -> ``epoch_``, ``train_step`` and
    ``val_epoch`` keep their whole key). Values that are not scalars are left out.
    """
    router = _router(default)
    out: dict[str, dict[str, Any]] = {}
    for key, value in (logs or {}).items():
        if not isinstance(key, str) or not key:
            continue
        ok, v = clean(value)
        if ok:
            stream, name = router.route(key)
            out.setdefault(stream, {})[name] = v
    return out


_NUMBERS = frozenset({bool, int, float, type(None)})
_numbers = _NUMBERS.issuperset
_builders: dict[tuple[Any, ...], Any] = {}


def _builder(keys: tuple[Any, ...]) -> Any:
    """``build(logs, step, epoch, batch)`` for logs with these keys: the fields `split_logs` puts into the
    ``train`` stream, in order, then ``step``, ``epoch`` and ``batch`` (`integration.row_builder`)."""
    router = _router("train")
    fields, sources = [], []
    for key in keys:
        if isinstance(key, str) and key:
            stream, name = router.route(key)
            if stream == "train":
                fields.append(name)
                sources.append(key)
    if len(_builders) >= 1024:  # a fit logs a handful of key tuples
        _builders.clear()
    build = _builders[keys] = integration.row_builder(fields, sources, first=(), last=("step", "epoch", "batch"))
    return build


def batch_row(logs: Mapping[str, Any] | None, step: int, epoch: int, batch: int) -> dict[str, Any]:
    """A per-batch row: ``split_logs(logs)["train"]``'s fields, then ``step``, ``epoch`` and ``batch``. Logs of
    plain numbers (what Keras hands callbacks) take a row builder made once per key tuple: no routing or
    cleaning of each value on every batch."""
    if logs and _numbers(map(type, logs.values())):
        keys = tuple(logs)
        build = _builders.get(keys)
        if build is None:
            build = _builder(keys)
        return build(logs, step, epoch, batch)  # type: ignore[no-any-return]
    return {**split_logs(logs).get("train", {}), "step": step, "epoch": epoch, "batch": batch}


def non_finite(value: Any) -> bool:
    if integration.is_device_scalar(value):
        return False  # checking it would wait for the GPU; keras.callbacks.TerminateOnNaN still sees it
    ok, v = clean(value)
    return ok and isinstance(v, float) and not math.isfinite(v)


class OrderedRows:
    """Hands per-batch rows to ``emit`` in batch order, although Keras may run batch hooks out of order.

    With ``async_safe = True`` Keras submits ``on_train_batch_end`` calls to a thread pool in batch order, but
    two of them can run at once and finish in either order. Within one epoch Keras numbers the hook calls
    ``stride - 1, 2 * stride - 1, ...`` (``stride`` = ``steps_per_execution``); every call registers its batch
    (with a row or ``None``) and rows are emitted as soon as all earlier batches have registered. A numbering
    that does not follow that pattern (a hand-written loop) only delays rows: ``drain()`` (epoch end) emits
    whatever is left in order, and so does an overflow of ``max_pending`` registrations (a hook stalled that
    long is then written when it arrives, out of order).
    """

    def __init__(self, emit: Callable[[dict[str, Any]], None], max_pending: int = 64,
                 lock: threading.Lock | None = None) -> None:
        self.emit = emit  # may be replaced (the callback points it at its stream once it has one)
        self._max = max_pending
        self._lock = lock or threading.Lock()  # ``lock``: the caller's, held around `add_locked`
        self._pending: dict[int, dict[str, Any] | None] = {}
        self._stride = 1
        self._next = 0

    def start(self, stride: int) -> None:
        """A new epoch: numbering restarts at ``stride - 1``."""
        self.drain()
        with self._lock:
            self._stride = max(1, int(stride))
            self._next = self._stride - 1

    def add(self, batch: int, row: dict[str, Any] | None) -> None:
        with self._lock:
            self.add_locked(batch, row)

    def add_locked(self, batch: int, row: dict[str, Any] | None) -> None:
        """`add`, for a caller that holds the lock it passed in."""
        if batch == self._next and not self._pending:  # the common case: the batch that comes next
            self._next = batch + self._stride
            if row is not None:
                self.emit(row)
            return
        if batch < self._next:  # came after an overflow gave up on it: late already, do not hold it
            if row is not None:
                self.emit(row)
            return
        self._pending[batch] = row
        while self._next in self._pending:
            r = self._pending.pop(self._next)
            self._next += self._stride
            if r is not None:
                self.emit(r)
        if len(self._pending) > self._max:
            self._flush_locked()

    def drain(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        for b in sorted(self._pending):
            r = self._pending[b]
            self._next = b + self._stride
            if r is not None:
                self.emit(r)
        self._pending.clear()
