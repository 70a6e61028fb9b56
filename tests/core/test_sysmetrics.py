"""The opt-in system-metrics sampler: a `sys` stream written by its own thread, off by default."""

from __future__ import annotations

import threading
import time

import ml_dash
import pytest


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # the training thread never calls ml-dash meanwhile
        pass


def _busy_until_rows(exp: ml_dash.Experiment, n: int, limit: float = 30.0) -> None:
    """Spin (no ml-dash call while spinning) until the sampler has appended n rows; a loaded machine is slower."""
    end = time.perf_counter() + limit
    while time.perf_counter() < end:
        _busy(0.2)
        if len(exp.metrics("sys").read()) >= n:
            return


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ml-dash-sysmetrics"]


def test_sampler_writes_sys_rows_from_its_own_thread():
    with ml_dash.Experiment("sys/on", system_metrics=0.1) as exp:
        _busy_until_rows(exp, 3)
        assert len(_sampler_threads()) == 1
    assert _sampler_threads() == []  # stopped with the run
    rows = [r["data"] for r in ml_dash.load("sys/on").metrics("sys").read()]
    assert len(rows) >= 3
    for r in rows:
        assert r["proc_cpu"] >= 0 and r["proc_rss_mb"] > 0
    assert any(r["proc_cpu"] > 5 for r in rows)  # the busy loop shows up in the process's CPU
    pytest.importorskip("psutil")
    assert {"cpu", "mem", "disk_read_mbs", "net_sent_mbs"} <= set(rows[-1])
    assert 0 < rows[-1]["mem"] <= 100


def test_off_by_default_and_env_var_turns_it_on(monkeypatch):
    with ml_dash.Experiment("sys/off") as exp:
        exp.metrics("train").log(step=0, loss=1.0)
        _busy(0.3)
    assert ml_dash.load("sys/off").metrics.names() == ["train"]
    monkeypatch.setenv("ML_DASH_SYSTEM_METRICS", "0.1")
    with ml_dash.Experiment("sys/env") as exp:
        _busy_until_rows(exp, 2)
    assert len(ml_dash.load("sys/env").metrics("sys").read()) >= 2


@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (0.0, ValueError), (float("nan"), ValueError), ("10", TypeError), ([1], TypeError)],
)
def test_bad_periods_are_refused_at_the_call(value, error):
    with pytest.raises(error, match="system_metrics"):
        ml_dash.Experiment("sys/bad", system_metrics=value)


def test_bad_env_value_is_named(monkeypatch):
    monkeypatch.setenv("ML_DASH_SYSTEM_METRICS", "often")
    with pytest.raises(ValueError, match="ML_DASH_SYSTEM_METRICS"):
        ml_dash.Experiment("sys/badenv")
