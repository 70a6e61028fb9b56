"""Tensor values are recorded as they were at call time, and device values are read on the worker thread.

These run on the CPU everywhere; tests/gpu/ repeats the device half on a CUDA device where one exists.
"""

from __future__ import annotations

import ml_dash
import pytest

torch = pytest.importorskip("torch")


def test_cpu_tensor_value_is_the_value_at_call_time():
    x = torch.tensor(1.5)
    v = torch.tensor([1.0, 2.0])
    with ml_dash.Experiment("dev/cpu") as exp:
        exp.metrics("train").log(step=0, loss=x, vec=v)
        exp.tracks("pose").append(x=x)
        exp.params.set(lr=x, nested={"w": v})
        x.add_(10)  # changed in place right after the calls
        v.mul_(0)
    run = ml_dash.load("dev/cpu")
    row = run.metrics("train").read()[0]["data"]
    assert row["loss"] == 1.5 and row["vec"] == [1.0, 2.0]
    assert run.tracks("pose").read()[0]["x"] == 1.5
    assert run.params.get() == {"lr": 1.5, "nested.w": [1.0, 2.0]}


def test_non_cpu_tensors_are_deferred_to_the_worker():
    # `meta` is a real non-CPU device in every torch build; reading its value raises, which is exactly what the
    # worker must turn into a recorded error (the rest of the row kept), never an exception in the caller.
    m = torch.empty((), device="meta")
    with ml_dash.Experiment("dev/meta") as exp:
        exp.metrics("train").log(step=0, ok=1.0, dev=m)
        exp.params.set(p=m, q=2)
    run = ml_dash.load("dev/meta")
    row = run.metrics("train").read()[0]["data"]
    assert row["ok"] == 1.0 and row["dev"] is None and "dev" in row["_errors"]
    params = run.params.get()
    assert params["q"] == 2 and params["p"] is None


def test_lists_and_dicts_of_device_values_are_resolved_on_the_worker():
    m = torch.empty((), device="meta")
    with ml_dash.Experiment("dev/tree") as exp:
        exp.metrics("train").log(step=0, pair=[1.0, 2.0], nested={"a": 1})
        with pytest.raises(TypeError):
            exp.metrics("train").log(step=1, bad=object())
        exp.metrics("train").log(step=2, tree=[m, 1.0])
    rows = ml_dash.load("dev/tree").metrics("train").read()
    assert rows[0]["data"]["pair"] == [1.0, 2.0]
    assert rows[1]["data"]["step"] == 2 and rows[1]["data"]["tree"] is None
    assert "tree" in rows[1]["data"]["_errors"]


def test_complex_tensors_are_refused_at_the_call_and_block_nothing():
    with ml_dash.Experiment("dev/complex") as exp:
        with pytest.raises(TypeError, match="'z'.*complex"):
            exp.metrics("train").log(step=0, z=torch.tensor(1 + 2j))
        exp.metrics("train").log(step=1, ok=1.0)
    rows = ml_dash.load("dev/complex").metrics("train").read()
    assert [r["data"]["step"] for r in rows] == [1]


def test_adapter_kit_hands_device_scalars_through_and_reads_cpu_ones():
    from ml_dash import integration

    assert integration.param_value(torch.tensor(0.5)) == 0.5
    m = torch.empty((), device="meta")
    assert integration.is_device_scalar(m) and not integration.is_device_scalar(torch.tensor(1.0))
    assert integration.param_value(m) is m  # not read here: the core's worker reads it
    assert integration.flatten_params({"a": {"b": m}})["a.b"] is m
