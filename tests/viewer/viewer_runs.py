"""Runs for the viewer tests, written by the real SDK (and, for hostile input, by hand into the layout)."""

from __future__ import annotations

import math
from pathlib import Path

from ml_dash import Experiment

XSS_LOG = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned=2\">"
XSS_PARAM = "<img src=x onerror=\"window.__pwned=3\">"


def spiky_run(root: Path, prefix: str = "proj/spiky", n: int = 20_000, spikes: int = 11) -> list[int]:
    """A smooth decay with ``spikes`` isolated +5 spikes; returns their steps."""
    at = [round(i * (n - 1) / (spikes - 1)) for i in range(spikes)]
    spike = set(at)
    with Experiment(prefix, dash_root=root) as e:
        e.params.set(lr=0.001, batch=32, note=XSS_PARAM)
        m = e.metrics("train")
        for i in range(n):
            m.log(loss=math.exp(-i / n) + (5.0 if i in spike else 0.0), step=i)
    return at


def small_runs(root: Path, count: int = 3, rows: int = 50) -> list[str]:
    out = []
    for k in range(count):
        prefix = f"sweep/run-{k}"
        with Experiment(prefix, dash_root=root, tags=["ablation"] if k % 2 else ["base"]) as e:
            e.params.set(lr=10 ** -(k + 1), depth=k + 2, opt="adam" if k % 2 else "sgd")
            for i in range(rows):
                e.metrics("train").log(loss=1.0 / (i + 1 + k), acc=i / rows, step=i)
            e.metrics("val").log(acc=0.5 + k / 10, step=rows - 1)
            e.logs.info(f"run {k} done")
            e.logs.warn(XSS_LOG)
            e.tracks("robot/pos").append(x=0.0, y=0.0, _ts=1.0)
            e.tracks("robot/pos").append(x=1.0, y=2.0, _ts=2.0)
        out.append(prefix)
    return out
