"""Runs that end their own process: completion by ml-dash's exit hook, and a real SIGTERM mid-fit."""

from __future__ import annotations

import json

from lightning_tiny import expected_rows, same
from ml_dash import load


def rows(root: str, prefix: str, stream: str) -> list[dict]:
    return [r["data"] for r in load(prefix, dash_root=root).metrics(stream).read()]


def test_fit_validate_test_records_every_metric_and_completes(tmp_path, dash_root, run_script):
    out = str(tmp_path / "calls.json")
    run_script("fit_validate_test", dash_root, "proj/fvt", out)
    calls = [(m, s) for m, s in json.load(open(out))["calls"]]
    assert len(calls) > 16  # 2 epochs x 8 steps, plus validation and test epochs

    view = load("proj/fvt", dash_root=dash_root)
    assert view.status == "COMPLETED"
    want = expected_rows(calls)
    assert set(want) == {"train", "val", "test"}
    assert set(view.metrics.names()) >= set(want)
    for stream, expected in want.items():
        got = rows(dash_root, "proj/fvt", stream)
        assert len(got) == len(expected), stream
        for g, e in zip(got, expected, strict=True):
            assert set(g) - {"_ts"} == set(e), (stream, g, e)
            assert all(same(g[k], e[k]) for k in e), (stream, g, e)
    # Lightning numbers steps from 0; the training rows follow the global step
    assert [r["step"] for r in rows(dash_root, "proj/fvt", "train")] == list(range(16))
    assert [r["epoch"] for r in rows(dash_root, "proj/fvt", "train")] == [0] * 8 + [1] * 8

    params = view.params.get()
    assert params["lr"] == 0.05 and params["hidden"] == 8
    assert params["opt.name"] == "sgd" and params["opt.momentum"] == 0.0


def test_real_sigterm_mid_fit_is_cancelled_with_data_kept(tmp_path, dash_root, run_script):
    # ml-dash's SIGTERM handler closes the run and ends the process with SIGTERM (rc -15); Lightning's own
    # graceful path (SIGTERMException, rc 1) is covered in test_lightning_fit.py. Either way: CANCELLED.
    proc = run_script("sigterm", dash_root, "proj/kill", str(tmp_path / "unused"), expect_rc=None)
    assert proc.returncode in (-15, 1), proc.stderr[-3000:]
    view = load("proj/kill", dash_root=dash_root)
    assert view.status == "CANCELLED"
    assert [r["step"] for r in rows(dash_root, "proj/kill", "train")] == [0, 1, 2]
