"""The example plugin (examples/plugins/tensorboard_mirror), installed and found through its entry point, mirrors
every metric row into TensorBoard event files; TensorBoard's own reader gets every value back at its step."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from ml_dash import load
from plugin_helpers import run_py

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SCRIPT = """
import random, sys
from ml_dash import Experiment

rng = random.Random(0)
exp = Experiment("proj/tb-run", stores=["tensorboard"])
with exp.run:
    exp.params.set(lr=0.1)
    for step in range(200):
        row = {"step": step, "loss": rng.random() * 10, "acc": rng.random(), "count": step * 7,
               "flag": step % 2 == 0, "note": "s%d" % step, "missing": None}
        if step == 17: row["loss"] = float("nan")
        if step == 18: row["loss"] = float("inf")
        if step == 19: row["acc"] = float("-inf")
        exp.metrics("train").log(**row)
        if step % 20 == 0:
            exp.metrics.log(epoch=step // 20, eval={"loss": rng.random(), "step": step})
            exp.metrics("eval/sub").log(step=step, big=2 ** 40 + step)
    exp.metrics.log(lr=0.5)      # the unnamed metric, no step: at its journal index
    exp.metrics.log(lr=0.25)
exp.run.start()                  # re-opened: a second event file in the same run folder, steps go on
for step in range(200, 230):
    exp.metrics("train").log(step=step, loss=step / 1000)
exp.run.complete()
print("plugin loaded:", "ml_dash_tensorboard" in sys.modules)
"""


def expected_scalars(dash_root: Path, prefix: str) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard should hold, built from the journal: each numeric field at the row's step."""
    view = load(prefix, dash_root=str(dash_root))
    out: dict[str, list[tuple[int, float]]] = {}
    for name in view.metrics.names():
        for row in view.metrics(name).read():
            data = row["data"]
            step = data["step"] if isinstance(data.get("step"), int) else row["index"]
            for field, v in data.items():
                if field in ("step", "_ts") or v is None or isinstance(v, str):
                    continue
                tag = field if name == "None" else f"{name}/{field}"
                out.setdefault(tag, []).append((step, float(np.float32(v))))  # TensorBoard keeps float32
    return out


def read_tensorboard(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return len(a) == len(b) and all(
        sa == sb and (va == vb or (math.isnan(va) and math.isnan(vb))) for (sa, va), (sb, vb) in zip(a, b, strict=True))


def test_every_metric_value_and_step_reaches_tensorboard(tb_plugin, tmp_path):
    res = run_py(SCRIPT, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "plugin loaded: True" in res.stdout
    assert "MLDashWarning" not in res.stderr, res.stderr

    logdir = tmp_path / "runs" / "proj" / "tb-run"  # "tensorboard": runs/<prefix> next to the .dash root
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 2  # one per opening of the run
    want = expected_scalars(tmp_path / ".dash", "proj/tb-run")
    got = read_tensorboard(logdir)

    assert set(got) == {"train/loss", "train/acc", "train/count", "train/flag", "eval/loss", "eval/epoch",
                        "eval/sub/big", "lr"}
    assert set(got) == set(want)
    for tag in want:
        assert same(got[tag], want[tag]), f"{tag}: {got[tag][:5]}... != {want[tag][:5]}..."
    # spot checks against the script itself, not only against the journal
    assert len(got["train/loss"]) == 230 and [s for s, _ in got["train/loss"]] == list(range(230))
    loss = dict(got["train/loss"])
    assert math.isnan(loss[17]) and loss[18] == math.inf and dict(got["train/acc"])[19] == -math.inf
    assert loss[229] == pytest.approx(0.229, rel=1e-6)
    assert got["train/flag"][:3] == [(0, 1.0), (1, 0.0), (2, 1.0)]
    assert got["eval/epoch"] == [(s, float(s // 20)) for s in range(0, 200, 20)]
    assert got["lr"] == [(0, 0.5), (1, 0.25)]
    assert "train/note" not in got and "train/missing" not in got


def test_store_writes_are_idempotent_by_index(tb_plugin, tmp_path):
    from ml_dash_tensorboard.store import TensorBoardStore

    logdir = tmp_path / "tb"
    rows = [{"index": i, "data": {"step": 10 * i, "loss": i / 2, "_ts": 1000.0 + i}} for i in range(6)]
    store = TensorBoardStore(logdir)
    store.write_metrics("train", rows[:4])
    store.write_metrics("train", rows[:4])        # a batch delivered again (crash before the cursor was saved)
    store.write_metrics("train", rows[2:6])       # overlapping batch
    store.close()
    again = TensorBoardStore(logdir)               # a later process: the state file remembers what is there
    again.write_metrics("train", rows)
    again.write_metrics("eval", rows[:1])
    again.close()
    got = read_tensorboard(logdir)
    assert got["train/loss"] == [(10 * i, i / 2) for i in range(6)]
    assert got["eval/loss"] == [(0, 0.0)]


def test_destination_names(tb_plugin, tmp_path, monkeypatch):
    from ml_dash_tensorboard import logdir_root

    dash = tmp_path / ".dash"
    assert logdir_root("tensorboard", dash) == tmp_path / "runs"
    assert logdir_root("tensorboard:///abs/tb", dash) == Path("/abs/tb")
    assert logdir_root("tensorboard:rel/tb", dash) == Path("rel/tb")
    monkeypatch.setenv("ML_DASH_TENSORBOARD_DIR", str(tmp_path / "elsewhere"))
    assert logdir_root("tensorboard", dash) == tmp_path / "elsewhere"
    assert logdir_root("http://host", dash) is None and logdir_root("tensorboardx", dash) is None
    with pytest.raises(ValueError, match="names no folder"):
        logdir_root("tensorboard:", dash)
