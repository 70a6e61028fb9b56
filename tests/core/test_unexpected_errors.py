"""A write that fails with an error nobody planned for (a bug, not I/O) keeps its records and retries them."""

from __future__ import annotations

import warnings

import ml_dash
from ml_dash import layout


def test_rows_survive_an_unexpected_exception_in_the_writer(monkeypatch):
    real = layout.ExperimentDir.append_metric_pieces  # what the writer calls for metric rows
    calls = {"n": 0}

    def flaky(self, name, rows, *a, **kw):  # the store boundary: the first two writes blow up
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("unexpected bug in a write")
        return real(self, name, rows, *a, **kw)

    monkeypatch.setattr(layout.ExperimentDir, "append_metric_pieces", flaky)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ml_dash.Experiment("err/unexpected") as exp:
            for i in range(2_000):
                exp.metrics("train").log(step=i, loss=float(i))
    steps = [r["data"]["step"] for r in ml_dash.load("err/unexpected").metrics("train").read()]
    assert calls["n"] > 2
    assert steps == list(range(2_000))
