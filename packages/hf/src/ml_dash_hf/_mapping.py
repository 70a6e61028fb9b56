"""Trainer knowledge: its log dicts -> metric streams (by `ml_dash.integration`'s rule), its model config -> params."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from ._compat import integration

SUMMARY_STREAM = "summary"
_router = integration.MetricRouter(skip=("epoch", "step"))  # the Trainer's own fields: the rows' step/epoch
_PLAIN = frozenset({bool, int, float, str, type(None)})


def is_summary(logs: Mapping[str, Any]) -> bool:
    """True for the row `Trainer` logs once at the end of `train()` (train_runtime, total_flos, train_loss...).

    `train_runtime` alone is not enough: with `include_num_input_tokens_seen` every step log carries
    `train_runtime` and `train_tokens_per_second`; only the end-of-training summary has `total_flos` /
    `train_loss` as well.
    """
    return "train_runtime" in logs and ("total_flos" in logs or "train_loss" in logs)


def route(logs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Group one Trainer log dict into `{stream: {field: value}}` by the contract's rule.

    `epoch` and `step` are row fields (the caller adds them), not metrics. The end-of-training summary goes
    whole to stream `summary` under HF's own names (the same keys as `trainer.train().metrics`).
    """
    streams: dict[str, dict[str, Any]] = {}
    summary = is_summary(logs)
    for key, value in logs.items():
        key = str(key)
        if key in ("epoch", "step"):
            continue
        if summary:
            stream, field = SUMMARY_STREAM, (key if key not in integration.ROW_FIELDS else f"{key}_")
        else:
            stream, field = _router.route(key)
        streams.setdefault(stream, {})[field] = value
    return streams


def rows(logs: Mapping[str, Any], step: Any, epoch: Any) -> dict[str, dict[str, Any]]:
    """`route(logs)` as metric rows, each starting with `step` and `epoch` (routing cached per key)."""
    if is_summary(logs):
        return {s: {"step": step, "epoch": epoch, **f} for s, f in route(logs).items()}
    return _router.rows(logs, step, epoch)


def is_scalar(value: Any) -> bool:
    """What a metric row may hold: None, bool, int, float, str, numpy scalars, 0-d arrays / tensors."""
    if type(value) in _PLAIN or isinstance(value, (bool, int, float, str)):
        return True
    ndim = getattr(value, "ndim", None)
    if ndim == 0 and hasattr(value, "dtype"):
        kind = getattr(getattr(value, "dtype", None), "kind", None)  # numpy: reject object / bytes / void
        return kind is None or kind in "biuf"
    return False


def same_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if integration.is_device_scalar(a) or integration.is_device_scalar(b):
        return False  # comparing would wait for the GPU: record the value
    try:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return bool(a == b)
    except Exception:  # tensors, arrays: compare as "different" and record the value
        return False


# ---------------------------------------------------------------------------------------------------- params


def flatten(prefix: str, obj: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """`flatten("args", {"a": {"b": 1}, "c": [1, 2]})` -> `{"args.a.b": 1, "args.c": [1, 2]}`, by
    `ml_dash.integration.flatten_params` (never raises; values it cannot store as is become text)."""
    out = {} if out is None else out
    out.update(integration.flatten_params(obj, prefix))
    return out


def model_params(model: Any) -> dict[str, Any]:
    """`model.<config key>` for a model with a `config` (HF `PretrainedConfig`), plus parameter counts."""
    out: dict[str, Any] = {}
    if model is None:
        return out
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        try:
            flatten("model", to_dict(), out)
        except Exception:  # an exotic config must not stop training
            pass
    out["model.class"] = type(model).__name__
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        total = trainable = 0
        for p in parameters():
            n = int(p.numel())
            total += n
            if p.requires_grad:
                trainable += n
        out["model.num_parameters"] = total
        out["model.num_trainable_parameters"] = trainable
    return out


def default_prefix(args: Any) -> str:
    """`<args.project or "huggingface">/<run name>`; the run name is `args.run_name`, else the output folder."""
    project = getattr(args, "project", None) or "huggingface"
    output_dir = getattr(args, "output_dir", None) or "trainer_output"
    run_name = getattr(args, "run_name", None)
    if not run_name or run_name == output_dir:  # transformers 4.x defaults run_name to output_dir
        run_name = os.path.basename(os.path.normpath(output_dir))
    return f"{integration.safe_name(project)}/{integration.safe_name(run_name)}"
