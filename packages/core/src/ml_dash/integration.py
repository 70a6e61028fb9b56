"""The kit for framework adapters: the rules every adapter shares, in one place.

The Lightning, HuggingFace and Keras adapters use only this module and ``ml_dash`` itself; a fourth adapter
should too. What is here:

- metric keys to streams (:func:`split_key`, :class:`MetricRouter`): ``<split>_<name>`` / ``<split>/<name>``
  with ``<split>`` in :data:`SPLITS` goes to stream ``<split>`` as field ``<name>``, any other key to the
  default stream (``train``) as given. A user metric whose field would be one of the row's own fields
  (:data:`ROW_FIELDS`: the framework's ``step`` and ``epoch``, and ``_ts``) is kept apart from them: with a
  split prefix it keeps its whole key (``train_step``, ``val/epoch``), without one it gets a trailing
  underscore (``epoch`` -> ``epoch_``);
- hyperparameters to a flat ``{"a.b": value}`` dict (:func:`flatten_params`) that never raises;
- run names (:func:`safe_name`, :func:`next_version`, :func:`timestamp_name`), failure reasons
  (:func:`failure_reason`, :func:`close_run`), :class:`WarnOnce`;
- :class:`ExperimentFactory`: the ``experiment=``-or-arguments check and lazy creation of the ``Experiment``,
  with every ``Experiment`` argument forwarded.

The run-ownership policy the adapters follow is written in ``docs/design.md``.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import os
import re
import time
import warnings
from argparse import Namespace
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

from .experiment import Experiment
from .values import NUMERIC

_numeric = NUMERIC.issuperset

#: marks this project's ``ml_dash`` (PyPI's ``ml-dash`` is another project); adapters check for it
KIT_VERSION = 2

SPLITS = ("train", "val", "eval", "test", "predict")
ROW_FIELDS = ("step", "epoch", "_ts")
DEFAULT_STREAM = "train"

__all__ = [
    "DEFAULT_STREAM",
    "KIT_VERSION",
    "ROW_FIELDS",
    "SPLITS",
    "ExperimentFactory",
    "MetricRouter",
    "WarnOnce",
    "close_run",
    "failure_reason",
    "flatten_params",
    "is_cancel",
    "is_device_scalar",
    "next_version",
    "param_value",
    "row_builder",
    "safe_name",
    "split_key",
    "timestamp_name",
]


# -- metric keys -> streams ----------------------------------------------------------------------------------


def split_key(key: str, default: str = DEFAULT_STREAM, reserved: Iterable[str] = ROW_FIELDS) -> tuple[str, str]:
    """``(stream, field)`` for one metric key, by the rule in the module docstring.

    >>> split_key("val_loss"), split_key("test/acc"), split_key("loss")
    (('val', 'loss'), ('test', 'acc'), ('train', 'loss'))
    >>> split_key("train_step"), split_key("val/epoch"), split_key("epoch")
    (('train', 'train_step'), ('val', 'val/epoch'), ('train', 'epoch_'))
    """
    for sep in ("_", "/"):
        head, s, tail = key.partition(sep)
        if s and tail and head in SPLITS:
            return head, (key if tail in reserved else tail)
    if key in reserved:
        return default, key + "_"
    return default, key


class MetricRouter:
    """:func:`split_key` computed once per key and cached, and the grouping of a dict's keys into rows computed
    once per key tuple, as one function per stream that builds the row with a single dict display: the per-step
    cost is one lookup of the dict's keys plus building the rows.

    ``skip`` names keys that are the framework's own fields carried in the same dict (Lightning's ``epoch``):
    :meth:`rows` leaves them out."""

    __slots__ = ("_cache", "_default", "_reserved", "_plans", "_emitters")

    MAX_PLANS = 1024  # distinct key tuples remembered (a framework logs a handful)

    def __init__(self, default: str = DEFAULT_STREAM, reserved: Iterable[str] = ROW_FIELDS,
                 skip: Iterable[str] = ()) -> None:
        self._default = default
        self._reserved = tuple(reserved)
        self._cache: dict[str, tuple[str, str] | None] = dict.fromkeys(skip)
        self._plans: dict[tuple[Any, ...], tuple[tuple[str, Any], ...]] = {}
        self._emitters: dict[tuple[Any, ...], Any] = {}  # key tuple -> log_numeric's generated function

    def __getstate__(self) -> dict[str, Any]:  # pickled with an adapter (ddp_spawn): the plans are rebuilt
        return {"default": self._default, "reserved": self._reserved, "cache": self._cache}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._default = state["default"]
        self._reserved = state["reserved"]
        self._cache = state["cache"]
        self._plans = {}
        self._emitters = {}

    def route(self, key: str) -> tuple[str, str]:
        target = self._cache.get(key)
        if target is None:
            target = split_key(str(key), self._default, self._reserved)
            if key not in self._cache:  # a skipped key stays skipped in rows()
                self._cache[key] = target
        return target

    def _plan(self, keys: tuple[Any, ...]) -> tuple[tuple[str, Any], ...]:
        """(stream, row builder) per stream, streams in order of their first key."""
        groups: dict[str, tuple[list[str], list[Any]]] = {}
        for key in keys:
            target = self._cache[key] if key in self._cache else self.route(key)
            if target is None:  # skipped
                continue
            g = groups.get(target[0])
            if g is None:
                g = groups[target[0]] = ([], [])
            g[0].append(target[1])
            g[1].append(key)
        plan = tuple((stream, row_builder(f, k)) for stream, (f, k) in groups.items())
        if len(self._plans) >= self.MAX_PLANS:
            self._plans.clear()
            self._emitters.clear()
        self._plans[keys] = plan
        self._emitters[keys] = _emitter(groups)
        return plan

    def rows(self, metrics: Mapping[str, Any], step: Any, epoch: Any) -> dict[str, dict[str, Any]]:
        """Group ``metrics`` into one row per stream, each starting with ``step`` and ``epoch``."""
        keys = tuple(metrics)
        plan = self._plans.get(keys)
        if plan is None:
            plan = self._plan(keys)
        return {stream: build(metrics, step, epoch) for stream, build in plan}

    def log(self, metrics: Mapping[str, Any], step: Any, epoch: Any, exp: Experiment) -> int:
        """Log `rows` straight into the metric streams of ``exp``, each row dict handed over as it is built.
        Returns the rows logged; the core's TypeError/ValueError for a value it refuses propagates (the rows
        before it are logged). When every value is a plain number (:meth:`log_numeric`), the values are checked
        once for all the rows, not once per row."""
        n = self.log_numeric(metrics, step, epoch, exp)
        if n is not None:
            return n
        keys = tuple(metrics)
        plan = self._plans.get(keys)
        if plan is None:
            plan = self._plan(keys)
        acc = exp.metrics
        known = acc._streams
        for stream, build in plan:
            (known.get(stream) or acc(stream))._log_row(build(metrics, step, epoch))
        return len(plan)

    def log_numeric(self, metrics: Mapping[str, Any], step: Any, epoch: Any, exp: Experiment) -> int | None:
        """:meth:`log` when ``step``, ``epoch`` and every value of ``metrics`` is None, bool, int or float (the
        core's own check, made once for all the rows) and ``exp`` is open; otherwise ``None``, and nothing is
        logged: the caller converts or drops what it must (an adapter's per-value policy, a closed run) and calls
        :meth:`log` or ``exp.metrics(stream).log``. The per-step path of an adapter: one type check per value, one
        routing lookup per call, one dict per row, appended by one generated function (:func:`_emitter`)."""
        if not (_numeric(map(type, metrics.values())) and type(step) in NUMERIC and type(epoch) in NUMERIC) \
                or exp._buf is None:
            return None
        keys = tuple(metrics)
        emit = self._emitters.get(keys)
        if emit is None:
            self._plan(keys)
            emit = self._emitters[keys]
        return emit(metrics, step, epoch, exp.metrics)  # type: ignore[no-any-return]


def row_builder(fields: Iterable[str], sources: Iterable[Any], first: tuple[str, ...] = ("step", "epoch"),
                last: tuple[str, ...] = ()) -> Any:
    """``build(m, *first, *last)``: the row ``{first...: ..., fields[i]: m[sources[i]], last...: ...}`` as one dict
    display (3-4x faster than filling a dict from the key lists on every step): with the defaults,
    ``build(metrics, step, epoch)`` is ``{"step": step, "epoch": epoch, field: metrics[key], ...}``. ``first`` and
    ``last`` name the row's own fields, given as arguments (identifiers). The field names are written into the
    code as string literals (``repr`` of a str); the source keys, which may be any hashable, are bound as default
    arguments."""
    sources = tuple(sources)
    for name in (*first, *last):
        if not name.isidentifier():
            raise ValueError(f"row_builder: {name!r} is not an identifier")
    head = "".join(f"{n!r}: {n}, " for n in first)
    items = "".join(f"{str(f)!r}: m[k{i}], " for i, f in enumerate(fields))
    tail = "".join(f"{n!r}: {n}, " for n in last)
    params = "".join(f", {n}" for n in (*first, *last)) + "".join(f", k{i}=_k[{i}]" for i in range(len(sources)))
    return eval(f"lambda m{params}: {{{head}{items}{tail}}}", {"__builtins__": {}, "_k": sources})  # noqa: S307


def _emitter(groups: dict[str, tuple[list[str], list[Any]]]) -> Any:
    """``emit(m, step, epoch, streams)``: for each stream of ``groups`` (``{stream: (fields, source keys)}``), the
    row ``{"step": step, "epoch": epoch, field: m[key], ..., "_ts": time}`` as one dict display, appended to the
    stream's tail the way ``MetricStream.log`` appends a checked row (its last lines, inlined: no call per row);
    returns the number of rows. ``streams`` is ``exp.metrics`` of an open run. Names are written as string
    literals (``repr`` of a str), source keys bound as default arguments, as in :func:`row_builder`."""
    lines: list[str] = []
    params: list[str] = []
    sources: list[Any] = []
    for stream, (fields, keys) in groups.items():
        items = []
        for f, k in zip(fields, keys, strict=True):
            items.append(f", {str(f)!r}: m[k{len(sources)}]")
            params.append(f"k{len(sources)}=_k[{len(sources)}], ")
            sources.append(k)
        name = repr(str(stream))
        lines += [
            "    try:",
            f"        s = known[{name}]",
            "    except KeyError:",
            f"        s = streams({name})",
            "    buf = s._exp._buf",
            "    if buf is not s._buf:",
            "        buf = s._bind()",
            f"    s._tail.append({{'step': step, 'epoch': epoch{''.join(items)}, '_ts': _time()}})",
            "    if next(buf.ticks):",
            "        buf.spill(False)",
        ]
    src = f"def emit(m, step, epoch, streams, {''.join(params)}_time=_time, KeyError=KeyError, next=next):\n" \
        "    known = streams._streams\n" + "\n".join(lines) + f"\n    return {len(groups)}\n"
    ns: dict[str, Any] = {"__builtins__": {}, "_k": tuple(sources), "_time": time.time, "KeyError": KeyError,
                          "next": next}
    exec(src, ns)  # noqa: S102
    return ns["emit"]


# -- hyperparameters -----------------------------------------------------------------------------------------

_MAX_TEXT = 1000  # characters of a text form
_MAX_LIST = 1000  # items of a list or array kept


def _is_container(v: Any) -> bool:
    return isinstance(v, (Mapping, Namespace)) or (dataclasses.is_dataclass(v) and not isinstance(v, type))


def _items(v: Any) -> list[tuple[Any, Any]]:
    if isinstance(v, Namespace):
        return list(vars(v).items())
    if isinstance(v, Mapping):
        return list(v.items())
    return [(f.name, getattr(v, f.name)) for f in dataclasses.fields(v)]


def _text(v: Any) -> str:
    try:
        text = str(v)
    except Exception:
        text = object.__repr__(v)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."


def is_device_scalar(v: Any) -> bool:
    """True for a one-element torch tensor that lives on a GPU (or another non-CPU device).

    Hand such a value to the core as it is: reading it here (``.item()``, ``float()``) would make the training
    thread wait for the GPU; the core copies it asynchronously and reads it on its worker thread.
    """
    if type(v).__module__ != "torch":
        return False
    device = getattr(v, "device", None)
    return device is not None and getattr(device, "type", "cpu") != "cpu" and v.numel() == 1


def param_value(v: Any, unstorable: list[str] | None = None) -> Any:
    """One hyperparameter as a value the core stores (None, bool, int, float, str, lists and dicts of them).

    Documented conversions: enums by value (or name), paths and classes as text, callables by qualified name,
    numpy/torch/jax scalars and small arrays as numbers and lists, sets as sorted lists. Anything else (complex
    numbers, bytes, dates, ``numpy.datetime64``, objects) becomes its text form, and its type name is appended to
    ``unstorable`` so the caller can warn once. Never raises.
    """
    if v is None or type(v) in (bool, int, float, str):
        return v
    try:
        return _param_value(v, unstorable if unstorable is not None else [])
    except Exception:  # a value whose conversion itself fails: still never raise
        if unstorable is not None:
            unstorable.append(type(v).__name__)
        return _text(v)


def _param_value(v: Any, bad: list[str]) -> Any:
    if v is None or type(v) in (bool, int, float, str):
        return v
    if isinstance(v, enum.Enum):
        inner = v.value
        return param_value(inner, bad) if isinstance(inner, (bool, int, float, str)) else v.name
    for t in (bool, int, float, str):  # numpy.float64, IntFlag, str subclasses, ...
        if isinstance(v, t):
            return t(v)
    if isinstance(v, PurePath):
        return str(v)
    if isinstance(v, type):
        return f"{v.__module__}.{v.__qualname__}"
    if _is_container(v):
        return {(str(k) or "_"): param_value(x, bad) for k, x in _items(v)}
    if isinstance(v, (list, tuple, set, frozenset)):
        seq = list(v)
        if isinstance(v, (set, frozenset)):
            try:
                seq = sorted(seq)
            except TypeError:
                seq = sorted(seq, key=repr)
        return [param_value(x, bad) for x in seq[:_MAX_LIST]]
    mod = type(v).__module__.split(".")[0]
    if is_device_scalar(v) and not v.is_complex():
        return v  # the core reads it on its worker thread: no GPU synchronisation in the training loop
    if mod in ("torch", "numpy", "jax", "jaxlib") and hasattr(v, "tolist"):
        kind = getattr(getattr(v, "dtype", None), "kind", None)  # numpy: M datetime, m timedelta, S/U/V/O, c
        if kind in ("M", "m", "S", "V", "O"):
            bad.append(type(v).__name__)
            return _text(v)
        size = getattr(v, "numel", None)
        n = size() if callable(size) else getattr(v, "size", 0)
        if isinstance(n, int) and n <= _MAX_LIST:
            return param_value(v.tolist(), bad)
        return f"<{type(v).__name__} shape={tuple(getattr(v, 'shape', ()))} dtype={getattr(v, 'dtype', '?')}>"
    if callable(v):
        name = getattr(v, "__qualname__", None) or getattr(v, "__name__", None)
        if name:
            return f"{getattr(v, '__module__', '') or ''}.{name}".lstrip(".")
    bad.append(type(v).__name__)
    return _text(v)


def flatten_params(params: Any, prefix: str = "", unstorable: list[str] | None = None) -> dict[str, Any]:
    """A dict / ``argparse.Namespace`` / dataclass instance (nested freely) as ``{"a.b": value}``.

    Values go through :func:`param_value`; an empty container stays visible as ``{}``; a non-container at the
    top is stored under ``prefix`` (or ``"value"``). Never raises. Pass a list as ``unstorable`` to learn which
    keys were stored as their text form (``"key (complex)"``), to warn about them once.
    """
    out: dict[str, Any] = {}
    bad: list[str] = []

    def walk(obj: Any, key: str) -> None:
        if _is_container(obj):
            try:
                items = _items(obj)
            except Exception:
                items = None
            if items is not None:
                if not items and key:
                    out[key] = {}
                for k, v in items:
                    walk(v, f"{key}.{k or '_'}" if key else (str(k) or "_"))
                return
        n = len(bad)
        out[key or "value"] = param_value(obj, bad)
        if unstorable is not None and len(bad) > n:
            unstorable.append(f"{key or 'value'} ({bad[n]})")

    if params is not None:
        walk(params, prefix)
    return out


# -- names, reasons, warnings --------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_counter = itertools.count(1)


def safe_name(text: Any, fallback: str = "run") -> str:
    """``text`` as one prefix segment: runs of other characters than letters, digits, ``._-`` become ``-``."""
    name = _UNSAFE.sub("-", str(text)).strip(".-")
    return name[:120] or fallback


def timestamp_name(stem: str | None = None) -> str:
    """``<stem>-<YYYYmmdd-HHMMSS>-<n>``, unique within this process (``n`` counts up)."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{next(_counter)}"
    return f"{safe_name(stem)}-{stamp}" if stem else stamp


def next_version(root: str | os.PathLike[str], project: str, stem: str = "version_") -> int:
    """The next free ``<stem>N`` under ``<root>/<project>`` (as Lightning's CSV and TensorBoard loggers count)."""
    folder = os.path.join(os.fspath(root), project)
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    used = [int(n[len(stem):]) for n in names if n.startswith(stem) and n[len(stem):].isdigit()]
    return max(used) + 1 if used else 0


def failure_reason(exc: BaseException | None, limit: int = 500) -> str | None:
    """``"RuntimeError: text"`` (or the type name alone), cut to ``limit`` characters, for ``statusReason``."""
    if exc is None:
        return None
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def is_cancel(exc: BaseException | None) -> bool:
    """Ctrl-C, or a framework's SIGTERM exception (Lightning's ``SIGTERMException``): the run is CANCELLED."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    return exc is not None and any(c.__name__ == "SIGTERMException" for c in type(exc).__mro__)


def close_run(exp: Experiment, exc: BaseException | None = None, reason: str | None = None) -> None:
    """Close a run the adapter opened: COMPLETED without ``exc``, else CANCELLED or FAILED with its reason."""
    if exc is None:
        exp.run.complete(reason=reason)
    elif is_cancel(exc):
        exp.run.cancel(reason=reason or failure_reason(exc))
    else:
        exp.run.fail(reason=reason or failure_reason(exc))


class WarnOnce:
    """``warn(key, message)`` issues a ``RuntimeWarning`` the first time a key is seen, then stays silent."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._seen: set[str] = set()

    def __call__(self, key: str, message: str, stacklevel: int = 3) -> bool:
        if key in self._seen:
            return False
        self._seen.add(key)
        warnings.warn(f"{self.source}: {message}", RuntimeWarning, stacklevel=stacklevel)
        return True

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "_seen": set()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


# -- the experiment ------------------------------------------------------------------------------------------


class ExperimentFactory:
    """Either the user's ``Experiment`` or the arguments to make one, checked once at the adapter's construction.

    ``ExperimentFactory("MLDashLogger", prefix, experiment, dash_root=..., **experiment_kwargs)``: ``path_arg``
    is what the adapter calls its run-path parameter (for messages); every other keyword is an ``Experiment`` argument (``None`` means "not given"), so a new ``Experiment`` argument reaches every
    adapter. Bad arguments (an invalid prefix, an unknown keyword, ``dash_url=True`` without
    ``ML_DASH_API_URL``) raise here, naming the adapter; constructing does no I/O.
    """

    def __init__(self, owner: str, prefix: str | None = None, experiment: Experiment | None = None, *,
                 path_arg: str = "prefix", **experiment_kwargs: Any) -> None:
        self.owner = owner
        self.kwargs = {k: v for k, v in experiment_kwargs.items() if v is not None}
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"{owner}: {path_arg} must be a str like 'project/name', got {type(prefix).__name__}")
        if experiment is not None:
            if not isinstance(experiment, Experiment):
                raise TypeError(f"{owner}: experiment must be an ml_dash.Experiment, got {type(experiment).__name__}")
            given = [path_arg] * (prefix is not None) + sorted(self.kwargs)
            if given:
                raise ValueError(
                    f"{owner}: pass either experiment= or the arguments to create one, not both "
                    f"(got experiment= and {', '.join(given)}; the experiment has its own settings)"
                )
        self.experiment = experiment
        self.prefix = experiment.prefix if experiment is not None else prefix
        if experiment is None:
            self.create(prefix or "check/arguments")  # validates now; the real one is made on first use

    def __getstate__(self) -> dict[str, Any]:
        """A pickled copy (Lightning's ``ddp_spawn``) re-attaches by run path under the same absolute root; it
        does not carry a user experiment's other settings."""
        state = self.__dict__.copy()
        if state["experiment"] is not None:
            state["kwargs"] = {"dash_root": self.dash_root}
            state["experiment"] = None
        return state

    @property
    def user_experiment(self) -> bool:
        """True when the user passed ``experiment=`` (then the user owns the run unless the adapter opens it)."""
        return self.experiment is not None

    @property
    def dash_root(self) -> str:
        """The absolute root the experiment is (or will be) under."""
        if self.experiment is not None:
            path = os.path.abspath(self.experiment.folder)
            for _ in self.experiment.prefix.split("/"):
                path = os.path.dirname(path)
            return path
        root = self.kwargs.get("dash_root") or os.environ.get("ML_DASH_ROOT") or ".dash"
        return os.path.abspath(os.fspath(root))

    def create(self, prefix: str | None = None) -> Experiment:
        """The user's experiment, or a new one for ``prefix`` (default: the one given) with the arguments."""
        if self.experiment is not None:
            return self.experiment
        prefix = prefix or self.prefix
        if prefix is None:
            raise ValueError(f"{self.owner}: no run path to create the experiment with")
        try:
            return Experiment(prefix, **self.kwargs)
        except TypeError as e:
            raise TypeError(f"{self.owner}: {e}") from None
        except ValueError as e:
            raise ValueError(f"{self.owner}: {e}") from None
