"""The writer turns ring lines into journal lines without parsing metric rows: the bytes it writes must be the
bytes the row-by-row formatter writes, whatever the rows hold (keys or strings with "},{", nested values,
non-finite floats, None, big integers), for one stream and for streams, logs and tracks interleaved."""

from __future__ import annotations

import re
from pathlib import Path

from ml_dash.jsonio import dumpb, iso
from ml_dash.layout import ExperimentDir
from ml_dash.ring import (
    LOG,
    METRIC,
    METRIC_NONE,
    TRACK,
    decode_lines,
    encode_group,
    journal_items,
    split_items,
)

ROWS = [
    {"step": 0, "loss": 0.5, "_ts": 1.5},
    {"step": 1, "a},{b": 2, "_ts": 1.6},  # a key that holds the cut
    {"step": 2, "note": "x},{y", "_ts": 1.7},  # a string value that holds it
    {"step": 3, "hist": [{"a": 1}, {"b": 2}], "_ts": 1.8},  # nested dicts in a list: "},{" inside the row
    {"step": 4, "loss": float("nan"), "hi": float("inf"), "_ts": 1.9},
    {"step": 5, "none": None, "big": 2**70, "_ts": 2.0},
    {},
    {"step": 7, "text": "caf\u00e9 \t\n\"q\"", "_ts": 2.1},
]


def _journal(path: Path) -> list[str]:
    return [re.sub(r'"createdAt":"[^"]*"', '"createdAt":"T"', ln) for ln in path.read_text().splitlines()]


def _expected(tmp: Path, streams: dict[str | None, list[dict]]) -> dict[str | None, list[str]]:
    d = ExperimentDir(tmp / "expected", "p/r")
    for name, rows in streams.items():
        for r in rows:  # row by row: the formatter the fast path must match
            d.append_metrics(name, [dict(r)])
    return {name: _journal(d.stream_path("metrics", name)) for name in streams}


def _written(tmp: Path, chunk: bytes) -> tuple[ExperimentDir, list, list]:
    d = ExperimentDir(tmp / "written", "p/r")
    runs, tracks, logs = journal_items(chunk)
    for name, pieces in runs:
        d.append_metric_pieces(name, pieces)
    return d, tracks, logs


def test_one_stream_plain_rows_are_cut_without_parsing(tmp_path: Path) -> None:
    rows = [{"step": i, "loss": 1 / (i + 1), "acc": 0.5, "_ts": 1.7e9 + i} for i in range(100)]
    chunk = b"".join(encode_group(METRIC, "train", rows[i:i + 8]) for i in range(0, 100, 8))
    d, _, _ = _written(tmp_path, chunk)
    assert _journal(d.stream_path("metrics", "train")) == _expected(tmp_path, {"train": rows})["train"]


def test_every_kind_of_row_gives_the_same_bytes(tmp_path: Path) -> None:
    lines = [encode_group(METRIC, "train", ROWS[i:i + 3]) for i in range(0, len(ROWS), 3)]
    lines += [encode_group(METRIC, "train", [r]) for r in ROWS]
    d, _, _ = _written(tmp_path, b"".join(lines))
    assert _journal(d.stream_path("metrics", "train")) == _expected(tmp_path, {"train": ROWS + ROWS})["train"]


def test_interleaved_streams_logs_and_tracks(tmp_path: Path) -> None:
    val = [{"step": i, "loss": 0.25, "_ts": 3.0 + i} for i in range(5)]
    plain = [{"x": i, "_ts": 4.0 + i} for i in range(4)]
    lines = [
        encode_group(METRIC, "train", ROWS[:4]),
        encode_group(LOG, "", [(1.0, "info", "a"), (1.1, "warn", "b},{", {"k": 1})]),
        encode_group(METRIC, "val", val[:2]),
        encode_group(METRIC_NONE, "", plain[:2]),
        encode_group(TRACK, "robot/pos", [{"timestamp": 1.0, "x": 1}, {"timestamp": 2.0, "x": 2}]),
        encode_group(METRIC, "train", ROWS[4:]),
        encode_group(METRIC, "val", val[2:]),
        encode_group(METRIC_NONE, "", plain[2:]),
    ]
    chunk = b"".join(lines)
    d, tracks, logs = _written(tmp_path, chunk)
    want = _expected(tmp_path, {"train": ROWS, "val": val, None: plain})
    for name in ("train", "val", None):
        assert _journal(d.stream_path("metrics", name)) == want[name], name
    assert logs == [[1.0, "info", "a"], [1.1, "warn", "b},{", {"k": 1}]]
    assert tracks == [("robot/pos", [{"timestamp": 1.0, "x": 1}, {"timestamp": 2.0, "x": 2}])]
    # readers of the ring (recovery, counting) see the same records as items
    m, t, g = split_items(decode_lines(chunk))
    assert [k for k, _ in m] == ["train"] * 4 + ["val"] * 2 + [None] * 2 + ["train"] * 4 + ["val"] * 3 + [None] * 2
    assert [e for _, e in t] == tracks[0][1] and [x[2] for x in g] == ["a", "b},{"]


def test_the_buffer_writes_every_kind_of_row_as_the_row_by_row_formatter_does(tmp_path: Path) -> None:
    from ml_dash import Experiment
    from ml_dash.buffer import BufferConfig

    rows = [r for r in ROWS if "_ts" in r]
    plain = [{"step": i, "loss": 0.5, "_ts": 5.0 + i} for i in range(40)]
    want = plain[:20] + rows + plain[20:] + rows[::-1]
    with Experiment("p/r", dash_root=tmp_path / "run", buffer_config=BufferConfig(quiet=True)).run as exp:
        for r in want:  # spills of 8 mix plain rows with keys and values holding the cut, NaN, None, nesting
            exp.metrics("train").log(**r)
    got = _journal(ExperimentDir(tmp_path / "run", "p/r").stream_path("metrics", "train"))
    assert got == _expected(tmp_path, {"train": want})["train"]


def test_a_torn_last_line_is_left_out(tmp_path: Path) -> None:
    good = encode_group(METRIC, "train", ROWS[:2])
    torn = encode_group(METRIC, "train", ROWS[2:4])[:-9]
    d, _, _ = _written(tmp_path, good + torn)
    assert len(_journal(d.stream_path("metrics", "train"))) == 2


LOG_LINES = [
    (1.5, "info", "plain", None),
    (1.5000004, "warn", 'a "quoted", comma', {"k": 1}),
    (2.25, "error", "null here", None),  # the text "null": the standard encoder writes this line
    (3.0, "debug", "x},{y", None),  # the cut inside a message
    (4.0, "info", "caf\u00e9 \t\n", {"nan": float("nan")}),
    (5.0, "fatal", "nested", {"l": [{"a": 1}, {"b": 2}]}),
    (1.7e9 + 0.123456, "info", "ends with a backslash \\", None),
]
TRACK_ENTRIES = [
    {"timestamp": 1.0, "x": 1},
    {"timestamp": 1.0, "y": 2},  # same timestamp: merged into the entry before
    {"timestamp": 2.0, "s": "a},{b"},
    {"timestamp": 3.0, "v": float("inf")},
    {"timestamp": 4.0, "z": None},
    {"timestamp": 5.0, "t": "caf\u00e9"},
]


def _log_line(n: int, ts: float, level: str, message: str, meta: object) -> bytes:
    """The row-by-row formatter of a log line (what the journal held before lines were formatted in batches)."""
    return (b'{"sequenceNumber":%d,"timestamp":"%s","level":%b,"message":%b,"metadata":%b}\n'
            % (n, iso(ts).encode(), dumpb(level), dumpb(message), b"null" if meta is None else dumpb(meta)))


def test_log_lines_in_a_batch_are_the_bytes_of_the_row_by_row_formatter(tmp_path: Path) -> None:
    for k, lines in enumerate([LOG_LINES, LOG_LINES[:2], [LOG_LINES[0]] * 3, LOG_LINES[2:3]]):
        d = ExperimentDir(tmp_path / str(k), "p/r")
        d.append_logs(list(lines))
        d.append_logs([list(x[:3]) if x[3] is None else list(x) for x in lines])  # as the ring gives them
        want = b"".join(_log_line(n, *x) for n, x in enumerate(list(lines) * 2))
        assert d.stream_path("logs", None).read_bytes() == want


def test_track_entries_in_a_batch_are_the_bytes_of_the_row_by_row_formatter(tmp_path: Path) -> None:
    for k, entries in enumerate([TRACK_ENTRIES, TRACK_ENTRIES[2:3], TRACK_ENTRIES[4:], TRACK_ENTRIES[5:]]):
        d = ExperimentDir(tmp_path / str(k), "p/r")
        d.append_tracks("robot/pos", [dict(e) for e in entries])
        merged: list[dict] = []
        for e in entries:
            if merged and merged[-1]["timestamp"] == e["timestamp"]:
                merged[-1] = {**merged[-1], **e}
            else:
                merged.append(dict(e))
        want = b"".join(dumpb(e) + b"\n" for e in merged)
        assert d.stream_path("tracks", "robot/pos").read_bytes() == want


def test_plain_log_lines_put_together_without_a_step_per_line_are_the_same_bytes(tmp_path: Path) -> None:
    import numpy  # noqa: F401  (the timestamps of a batch are formatted by numpy once it is imported)

    messages = ["plain", "caf\u00e9 \t\n", "x},{y", "a/b\\\\c", "", "\u2603 snow", "ends with \\\\", "tab\there"]
    cases = {
        "plain": [(1.7e9 + k * 0.0137, "info", messages[k % len(messages)]) for k in range(40)],
        "levels": [(1.7e9 + k, ("info", "warn", "error", "debug", "fatal")[k % 5], f"line {k}") for k in range(20)],
        "a quote": [(1.5 + k, "info", f'say "{k}"') for k in range(20)],  # the cut could be wrong: row by row
        "null": [(1.5 + k, "info", "null" if k == 3 else "x") for k in range(20)],  # `dumpb` writes it otherwise
        "metadata": [(1.5 + k, "info", "m", {"k": k} if k == 5 else None) for k in range(20)],
        "before 1970": [(-1.5 - k, "info", "m") for k in range(20)],
    }
    for name, lines in cases.items():
        d = ExperimentDir(tmp_path / name.replace(" ", "-"), "p/r")
        d.append_logs([list(x) for x in lines])
        want = b"".join(_log_line(n, *(tuple(x) + (None,))[:4]) for n, x in enumerate(lines))
        assert d.stream_path("logs", None).read_bytes() == want, name
