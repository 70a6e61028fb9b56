"""Bad input (issue 3): a clear error at the call naming the field, never a later background failure that loses
or duplicates other rows."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

from ml_dash import Experiment, load  # noqa: E402
from ml_dash.buffer import BufferConfig  # noqa: E402

PREFIX = "proj/run"


@pytest.fixture
def exp(tmp_path: Path) -> Any:
    e = Experiment(PREFIX, dash_root=tmp_path / "root",
                   buffer_config=BufferConfig(write_interval=0.01, close_timeout=2, quiet=True))
    e.run.start()
    yield e
    e.run.complete()


_calls = [0]


def good_rows_survive(exp: Experiment, bad: Callable[[], Any], exc: type[BaseException], *words: str) -> None:
    """Good rows before and after the bad call are stored exactly once; the bad call raised, naming the field."""
    root = exp.dash_root
    _calls[0] += 1
    tag = f"ok{_calls[0]}"
    for i in range(5):
        exp.metrics(tag).log(i=i)
        exp.log(f"{tag} {i}")
    with pytest.raises(exc) as ei:
        bad()
    for w in words:
        assert w in str(ei.value), (w, str(ei.value))
    for i in range(5, 10):
        exp.metrics(tag).log(i=i)
        exp.log(f"{tag} {i}")
    assert exp.flush(timeout=5)
    v = load(PREFIX, dash_root=root)
    assert [r["data"]["i"] for r in v.metrics(tag).read()] == list(range(10))
    assert [g["message"] for g in v.logs.read() if g["message"].startswith(tag + " ")] == \
        [f"{tag} {i}" for i in range(10)]
    # nothing escaped the experiment folder
    outside = [p for p in root.rglob("*") if exp.folder not in p.parents and p != exp.folder
               and p not in exp.folder.parents]
    assert outside == [], outside


# ---- names -----------------------------------------------------------------------------------------------------
BAD_NAMES = ["", "..", "../../x", "/abs/x", "a/../b", "a\x00b", "a\nb", "a\x1bb", "a//b", "a\\b"]


@pytest.mark.parametrize("prefix", ["", "solo", "../x", "/abs/x", "p/../x", "p/a\x00", "p/\n", "p//x"])
def test_bad_prefix(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Experiment(prefix, dash_root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_non_str_prefix(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="prefix"):
        Experiment(123, dash_root=tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_metric_name(exp: Experiment, name: str) -> None:
    good_rows_survive(exp, lambda: exp.metrics(name).log(x=1), ValueError, "metric name")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_track_topic(exp: Experiment, name: str) -> None:
    good_rows_survive(exp, lambda: exp.tracks(name).append(x=1), ValueError, "track topic")


@pytest.mark.parametrize("name", ["../x", "a/../b", "a\x00", ".."])
def test_bad_files_folder(exp: Experiment, name: str) -> None:
    good_rows_survive(exp, lambda: exp.files(name).save_text("x", to="a.txt"), ValueError, "files folder")


@pytest.mark.parametrize("name", ["", "..", "a/b", "../x", "a\x00", "x\n"])
def test_bad_file_name(exp: Experiment, name: str) -> None:
    good_rows_survive(exp, lambda: exp.files("d").save_text("x", to=name), ValueError, "file name")


def test_upload_missing_file(exp: Experiment, tmp_path: Path) -> None:
    good_rows_survive(exp, lambda: exp.files("d").upload(tmp_path / "nope.txt"), FileNotFoundError, "nope.txt")


@pytest.mark.parametrize("name", ["é" * 200, "/".join(["abcdefghij" * 3] * 10)])
def test_names_too_long_for_the_filesystem(exp: Experiment, name: str) -> None:
    """A name that passes the per-segment check but cannot be a path (NAME_MAX is 255 bytes, a track topic is
    one folder): refused at the call, not retried forever in the background."""
    good_rows_survive(exp, lambda: exp.metrics(name.replace("/", "_")).log(x=1), ValueError, "metric name")
    good_rows_survive(exp, lambda: exp.tracks(name).append(x=1), ValueError, "track topic")


def test_name_that_cannot_be_encoded(exp: Experiment) -> None:
    good_rows_survive(exp, lambda: exp.metrics("loss\ud800").log(x=1), ValueError, "metric name")


# ---- keys and values ------------------------------------------------------------------------------------------
def test_non_str_keys(exp: Experiment) -> None:
    good_rows_survive(exp, lambda: exp.params.set(model={1: "a"}), TypeError, "1")
    good_rows_survive(exp, lambda: exp.metrics.log(epoch=1, train={2: 0.5}), TypeError, "2")
    good_rows_survive(exp, lambda: exp.metrics("m").log(cfg={3: 1}), TypeError, "cfg")
    good_rows_survive(exp, lambda: exp.tracks("t").append(pos={4: 1.0}), TypeError, "4")
    good_rows_survive(exp, lambda: exp.log("x", metadata={5: 1}), TypeError, "5")


class Opaque:
    pass


@pytest.mark.parametrize("value", [Opaque(), {1, 2}, b"bytes", 1 + 2j, print, np.complex128(1 + 1j),
                                   np.datetime64("2024-01-01"), np.array(Opaque()),
                                   np.array([Opaque()], dtype=object), np.array(["2024-01-01"], dtype="M8[D]")])
def test_unserialisable_metric_value(exp: Experiment, value: Any) -> None:
    good_rows_survive(exp, lambda: exp.metrics("m").log(step=0, weird=value), TypeError, "weird")


@pytest.mark.parametrize("value", [Opaque(), 1 + 2j, np.datetime64("2024-01-01")])
def test_unserialisable_values_elsewhere(exp: Experiment, value: Any) -> None:
    good_rows_survive(exp, lambda: exp.params.set(odd=value), TypeError, "odd")
    good_rows_survive(exp, lambda: exp.tracks("t").append(odd=value), TypeError, "odd")
    good_rows_survive(exp, lambda: exp.log("x", odd=value), TypeError, "odd")


@pytest.mark.parametrize("ts", ["soon", True, None, [1.0]])
def test_bad_metric_timestamp_type(exp: Experiment, ts: Any) -> None:
    good_rows_survive(exp, lambda: exp.metrics("m").log(step=0, _ts=ts), TypeError, "_ts")


@pytest.mark.parametrize("ts", [float("nan"), float("inf"), 1e300, -1e300])
def test_odd_metric_timestamp_is_refused_or_stored(exp: Experiment, ts: float) -> None:
    """Either a clear error at the call, or the row is stored like any other (never a background failure)."""
    try:
        exp.metrics("m").log(step=0, _ts=ts)
    except ValueError as e:
        assert "_ts" in str(e)
        return
    exp.metrics("m").log(step=1)
    assert exp.flush(timeout=5)
    assert [r["data"]["step"] for r in load(PREFIX, dash_root=exp.dash_root).metrics("m").read()] == [0, 1]


def test_huge_values(exp: Experiment) -> None:
    big = "x" * ((1 << 20) + 1)
    good_rows_survive(exp, lambda: exp.metrics("m").log(text=big), ValueError, "text")
    good_rows_survive(exp, lambda: exp.log(big), ValueError, "too long")
    good_rows_survive(exp, lambda: exp.metrics("m").log(arr=np.zeros(1_000_000)), ValueError, "arr")
    good_rows_survive(exp, lambda: exp.metrics("m").log(lst=list(range(200_000))), ValueError, "lst")
    good_rows_survive(exp, lambda: exp.params.set(blob=big), ValueError, "blob")


def test_documented_conversions_round_trip(exp: Experiment) -> None:
    import math

    exp.metrics("m").log(a=np.float32(0.5), b=np.int64(3), c=np.bool_(True), d=np.array(2.5), e=float("nan"),
                         f=float("inf"), g=[np.int8(1), 2], h=10 ** 30)
    exp.flush()
    (row,) = load(PREFIX, dash_root=exp.dash_root).metrics("m").read()
    d = row["data"]
    assert (d["a"], d["b"], d["c"], d["d"], d["g"], d["h"]) == (0.5, 3, True, 2.5, [1, 2], 10 ** 30)
    assert math.isnan(d["e"]) and d["f"] == math.inf


def test_bad_level_and_message(exp: Experiment) -> None:
    good_rows_survive(exp, lambda: exp.log("x", level="loud"), ValueError, "level")
    good_rows_survive(exp, lambda: exp.log(123), TypeError, "message")  # type: ignore[arg-type]


def test_bad_constructor_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        Experiment(PREFIX, dash_root=tmp_path, bufer_config=BufferConfig())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="buffer_config"):
        Experiment(PREFIX, dash_root=tmp_path, buffer_config={"write_interval": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tags"):
        Experiment(PREFIX, dash_root=tmp_path, tags="a")  # type: ignore[arg-type]
