"""The keras-free parts of ml_dash_keras: stream rule, value cleaning, in-order batch rows, rank detection."""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from ml_dash_keras._rank import process_rank
from ml_dash_keras._rows import OrderedRows, batch_row, clean, split_logs


def test_split_logs_follows_the_stream_rule():
    logs = {
        "loss": 1.0,
        "val_loss": 2.0,
        "val/mae": 3.0,
        "test_acc": 4.0,
        "train_extra": 5.0,
        "learning_rate": 0.1,
        "validation_x": 6.0,  # "val" not followed by _ or /: not the val split
        "val_": 7.0,  # nothing after the separator: kept as is
    }
    assert split_logs(logs) == {
        "train": {"loss": 1.0, "extra": 5.0, "learning_rate": 0.1, "validation_x": 6.0, "val_": 7.0},
        "val": {"loss": 2.0, "mae": 3.0},
        "test": {"acc": 4.0},
    }
    assert split_logs({"loss": 1.0}, default="test") == {"test": {"loss": 1.0}}
    assert split_logs(None) == {}


@pytest.mark.parametrize("logs", [
    {"loss": 1.0, "accuracy": 0.5},
    {"loss": 1.0, "val_loss": 2.0, "epoch": 3, "batch": 4, "step": 5, "": 6.0, 7: 8.0, "ok": True, "none": None},
    {"loss": float("nan"), "n": 3},
    {"loss": np.float32(1.5), "text": "x"},  # not all plain numbers: the general path
    {}, None,
])
def test_batch_row_is_split_logs_train_then_step_epoch_batch(logs):
    """The per-batch row builder made once per key tuple gives what the general path gives, keys in order."""
    want = {**split_logs(logs).get("train", {}), "step": 10, "epoch": 1, "batch": 9}
    for _ in range(2):  # the second time from the cached builder
        got = batch_row(logs, 10, 1, 9)
        assert list(got.items()) == list(want.items())  # (a NaN compares equal here: the same object)


def test_clean_keeps_scalars_and_drops_arrays():
    assert clean(np.float32(1.5)) == (True, 1.5) and type(clean(np.float64(2.0))[1]) is float
    assert clean(np.array(3.0)) == (True, 3.0)
    assert clean(np.int64(7)) == (True, 7) and type(clean(np.int64(7))[1]) is int
    assert clean(True) == (True, True) and clean(None) == (True, None)
    assert clean(np.zeros(3)) == (False, None)
    assert clean(object()) == (False, None)
    ok, v = clean(float("nan"))
    assert ok and v != v
    assert split_logs({"loss": np.float32(0.5), "outputs": np.zeros((2, 2))}) == {"train": {"loss": 0.5}}


def test_ordered_rows_reorders_and_skips_empty_batches():
    out: list[dict] = []
    r = OrderedRows(out.append)
    r.start(stride=1)
    r.add(1, {"b": 1})
    r.add(2, None)
    r.add(3, {"b": 3})
    assert out == []  # batch 0 has not registered yet
    r.add(0, {"b": 0})
    assert [x["b"] for x in out] == [0, 1, 3]


def test_ordered_rows_with_stride_and_drain():
    out: list[dict] = []
    r = OrderedRows(out.append)
    r.start(stride=2)  # hooks at batches 1, 3, 5, ...
    r.add(3, {"b": 3})
    r.add(1, {"b": 1})
    assert [x["b"] for x in out] == [1, 3]
    r.add(7, {"b": 7})  # 5 never comes (a hand-written loop): drained at the epoch's end, in order
    r.add(9, {"b": 9})
    assert [x["b"] for x in out] == [1, 3]
    r.start(stride=2)
    assert [x["b"] for x in out] == [1, 3, 7, 9]
    r.add(1, {"b": 101})
    assert out[-1] == {"b": 101}


def test_ordered_rows_overflow_bounds_memory():
    out: list[dict] = []
    r = OrderedRows(out.append, max_pending=4)
    r.start(stride=1)
    for b in range(1, 5):  # batch 0 never registers
        r.add(b, {"b": b})
    assert out == []
    r.add(5, {"b": 5})  # a fifth waiting row: give up on batch 0, emit in order
    assert [x["b"] for x in out] == [1, 2, 3, 4, 5]
    r.add(6, {"b": 6})
    assert out[-1] == {"b": 6}
    r.add(0, {"b": 0})  # the stalled one finally arrives: written at once rather than held
    assert [x["b"] for x in out] == [1, 2, 3, 4, 5, 6, 0]


def test_ordered_rows_from_a_thread_pool_in_batch_order():
    # what Keras's async dispatch does: submit hooks in batch order to a pool; they finish in any order
    out: list[dict] = []
    r = OrderedRows(out.append, max_pending=10_000)  # no overflow however long a thread is preempted
    r.start(stride=1)
    rng = random.Random(1)
    delays = [rng.random() * 0.004 for _ in range(300)]

    def hook(b: int) -> None:
        time.sleep(delays[b])
        r.add(b, {"b": b} if b % 3 == 2 else None)

    with ThreadPoolExecutor(8) as pool:
        for b in range(300):
            pool.submit(hook, b)
    assert [x["b"] for x in out] == list(range(2, 300, 3))


def test_ordered_rows_emit_is_serialised():
    inside = threading.Semaphore(1)
    seen = []

    def emit(row):
        assert inside.acquire(blocking=False), "emit ran on two threads at once"
        seen.append(row["b"])
        time.sleep(0.0005)
        inside.release()

    r = OrderedRows(emit, max_pending=10_000)
    r.start(stride=1)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda b: r.add(b, {"b": b}), range(100)))
    assert seen == list(range(100))


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),
        ({"RANK": "3"}, 3),
        ({"RANK": "0"}, 0),
        ({"KERAS_DISTRIBUTION_PROCESS_ID": "2"}, 2),
        ({"RANK": "oops"}, 0),
    ],
)
def test_rank_from_environment(monkeypatch, env, rank):
    for name in ("RANK", "KERAS_DISTRIBUTION_PROCESS_ID", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert process_rank("numpy") == rank


@pytest.mark.parametrize(
    ("task", "cluster", "rank"),
    [
        ({"type": "chief", "index": 0}, {"chief": ["a"], "worker": ["b"]}, 0),
        ({"type": "worker", "index": 0}, {"chief": ["a"], "worker": ["b"]}, 1),
        ({"type": "worker", "index": 0}, {"worker": ["a", "b"]}, 0),
        ({"type": "worker", "index": 1}, {"worker": ["a", "b"]}, 1),
        ({"type": "evaluator", "index": 0}, {"worker": ["a"]}, 1),
    ],
)
def test_rank_on_tensorflow_multi_worker(monkeypatch, task, cluster, rank):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert process_rank("tensorflow") == rank
