"""Reading many small streams side by side (`colcache.read_many`) and parsing lines out of a padded read buffer
(`columns.parse_parts(..., start=...)`): the same columns as the general parser and as `colcache.read` of one
stream at a time, for files with a torn last line, no trailing newline, another line shape, no bytes at all, and
while writers append."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ml_dash import colcache, columns
from ml_dash.colview import build
from test_columns import MUTATIONS, assert_matches, assert_same_as_general, metric_line


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("ML_DASH_CACHE_DIR", str(d))
    colcache.clear_memory()
    return d


def _lines(rng: random.Random, n: int, start: int = 0, style: int = 0, mutate: bool = False) -> list[str]:
    out = []
    for i in range(start, start + n):
        line = metric_line(i, {"loss": rng.random(), "acc": rng.uniform(-1e6, 1e6), "_ts": 1.7e9 + i * 0.01}, style)
        if mutate and rng.random() < 0.02:
            line = MUTATIONS[rng.randrange(len(MUTATIONS))](line, rng)
        out.append(line)
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alone", [False, True])
def test_lines_between_start_and_end_of_a_padded_buffer(monkeypatch: pytest.MonkeyPatch, seed: int,
                                                        alone: bool) -> None:
    """The bytes before ``start`` and after ``end`` (quotes, newlines, digits, the start of a torn line: what a
    reused read buffer holds) are read across by the passes but never parsed."""
    monkeypatch.setattr(columns, "MIN_PIECE", 4096)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    rng = random.Random(seed)
    text = ("\n".join(_lines(rng, 3000, mutate=seed % 2 == 1)) + "\n").encode()
    junk = bytes(rng.choice(b'0123456789."\n{}:, ') for _ in range(columns.FRONT + 40))
    torn = metric_line(3000, {"loss": 0.5}, 0).encode()[:30]
    buf = bytearray(junk[-columns.FRONT - seed :] + text + torn + junk)
    start = columns.FRONT + seed
    end = start + len(text)
    if alone:
        with columns.solo():
            parts = columns.parse_parts(buf, "metrics", start=start, end=end)
    else:
        parts = columns.parse_parts(buf, "metrics", start=start, end=end)
    assert_same_as_general(columns.concat(parts), text)
    with pytest.raises(ValueError, match="start"):
        columns.parse_parts(buf, "metrics", start=end + 1, end=end)


def _files(root: Path, rng: random.Random) -> list[Path]:
    """Streams of one writer's shape (several lengths), a torn last line, no trailing newline, another shape,
    lines that differ, an empty file, a missing file, and one large enough to be read on its own."""
    root.mkdir(parents=True, exist_ok=True)
    texts = {
        "a": "\n".join(_lines(rng, 2000)) + "\n",
        "b": "\n".join(_lines(rng, 700)) + "\n",
        "torn": "\n".join(_lines(rng, 900)) + "\n" + metric_line(900, {"loss": 1.0}, 0)[:25],
        "no_newline": "\n".join(_lines(rng, 500)),
        "other_shape": "\n".join(_lines(rng, 800, style=2)) + "\n",
        "mutated": "\n".join(_lines(rng, 1500, mutate=True)) + "\n",
        "empty": "",
        "one_line": metric_line(0, {"loss": 0.25}, 1) + "\n",
        "large": "\n".join(_lines(rng, 6000)) + "\n",
    }
    paths = []
    for name, text in texts.items():
        p = root / f"{name}.jsonl"
        p.write_text(text)
        paths.append(p)
    paths.insert(3, root / "missing.jsonl")
    return paths


def _check(snaps: list[Any], paths: list[Path]) -> None:
    assert len(snaps) == len(paths)
    for snap, p in zip(snaps, paths, strict=True):
        if not p.exists() or b"\n" not in p.read_bytes():
            assert snap.n == 0 and not snap.num
            continue
        assert_matches(build(snap, None, p.name), p, "metrics")


@pytest.mark.parametrize("seed", range(2))
def test_read_many_equals_reference_and_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  seed: int) -> None:
    monkeypatch.setattr(colcache, "SOLO_BELOW", 500_000)  # the "large" stream is read on its own, with threads
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    rng = random.Random(seed)
    paths = _files(tmp_path / "runs", rng)
    assert (tmp_path / "runs/large.jsonl").stat().st_size >= colcache.SOLO_BELOW
    snaps = colcache.read_many(paths, "metrics")
    _check(snaps, paths)
    # appended lines (the torn one completed, a line more elsewhere): only those parsed, same as a fresh read
    with open(paths[2], "a") as f:
        f.write(metric_line(900, {"loss": 1.0}, 0)[25:] + "\n")
    for p in paths[:2] + paths[-1:]:
        with open(p, "a") as f:
            f.write("\n".join(_lines(rng, 300, start=10_000)) + "\n")
    again = colcache.read_many(paths, "metrics")
    _check(again, paths)
    for plain, snap in zip(colcache.read_many(paths, "metrics", order=False), again, strict=True):
        assert plain.n == snap.n and not plain.ints and plain.ordered  # (order=False: no order computed)
    colcache.clear_memory()
    for snap, p in zip(again, paths, strict=True):
        one = colcache.read(p, "metrics")  # from the disk entries the threads wrote, plus nothing new
        assert one.n == snap.n and set(one.num) == set(snap.num)
        for k in one.num:
            assert np.array_equal(one.num[k], snap.num[k], equal_nan=True), (p.name, k)
    with pytest.raises(ValueError, match="limits"):
        colcache.read_many(paths, "metrics", limits=[None])


def test_read_many_with_limits(tmp_path: Path) -> None:
    rng = random.Random(3)
    paths = _files(tmp_path / "runs", rng)[:3]
    limits = []
    for p in paths:
        data = p.read_bytes()
        limits.append(data.index(b"\n", len(data) // 2) + 1)  # the committed size: half of the lines
    snaps = colcache.read_many(paths, "metrics", limits=limits)
    for snap, p, lim in zip(snaps, paths, limits, strict=True):
        assert snap.offset == lim and snap.n == p.read_bytes()[:lim].count(b"\n")


def test_read_many_while_writers_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers append to 8 streams (each line in two writes, so a reader often meets a torn last line) while
    they are read side by side, over and over: every read is a consistent prefix of its stream."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    paths = [tmp_path / f"s{i}.jsonl" for i in range(8)]
    for p in paths:
        p.write_bytes(b"")
    stop, half = threading.Event(), threading.Event()

    def writer(p: Path, k: int) -> None:
        with open(p, "a") as f:
            i = 0
            while not stop.is_set() and i < 6000:
                if i == 3000:  # the second half once the reader has read the first (reads overlap appends)
                    half.wait(30)
                rows = "".join(metric_line(j, {"loss": j * 0.5, "acc": (j % 7) / 7}, 0) + "\n"
                               for j in range(i, i + 200))
                cut = len(rows) - 17 - k
                f.write(rows[:cut])
                f.flush()
                f.write(rows[cut:])
                f.flush()
                i += 200

    threads = [threading.Thread(target=writer, args=(p, k)) for k, p in enumerate(paths)]
    for t in threads:
        t.start()
    seen = set()
    try:
        for r in range(20):
            if r == 10:  # the writers go on, and each is past its first half before the next read
                half.set()
                deadline = time.monotonic() + 60
                while any(p.read_bytes().count(b"\n") <= 3000 for p in paths) and time.monotonic() < deadline:
                    time.sleep(0.005)
            for snap in colcache.read_many(paths, "metrics"):
                n = snap.n
                seen.add(n)
                assert np.array_equal(snap.num.get("index", np.empty(0)), np.arange(n))
                if n:
                    assert np.array_equal(snap.num["loss"], np.arange(n) * 0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    final = colcache.read_many(paths, "metrics")
    for snap, p in zip(final, paths, strict=True):
        assert snap.n == p.read_bytes().count(b"\n")
        assert_matches(build(snap, None, p.name), p, "metrics")
    assert min(seen) <= 3000 < max(seen), seen  # it read before and after appends it did not wait for


def test_read_many_of_logs_and_tracks(tmp_path: Path) -> None:
    logs = tmp_path / "logs.jsonl"
    logs.write_text("".join(json.dumps({"timestamp": "2026-11-30T10:18:10Z", "level": "info", "message": f"m{i}",
                                        "sequenceNumber": i}) + "\n" for i in range(50)))
    got = colcache.read_many([logs, logs], "logs")
    assert [s.n for s in got] == [50, 50] and got[0].num["sequenceNumber"].tolist() == list(range(50))
    track = tmp_path / "track.jsonl"
    track.write_text("".join(json.dumps({"timestamp": i * 0.5, "x": i}) + "\n" for i in range(300)))
    (snap,) = colcache.read_many([track], "tracks")
    assert snap.n == 300 and snap.num["x"].tolist() == list(range(300))


def _cols(cache_dir: Path) -> list[Path]:
    return list((cache_dir / "columns").rglob("*.cols")) if (cache_dir / "columns").exists() else []


def _streams(root: Path, seed: int, count: int, rows: int) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        p = root / f"s{i}.jsonl"
        p.write_text("\n".join(_lines(rng, rows)) + "\n")
        paths.append(p)
    return paths


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one at every ``parse_parts`` call of the column cache."""
    parsed: list[int] = []
    real = colcache.parse_parts
    monkeypatch.setattr(colcache, "parse_parts", lambda buf, kind, t=None, end=None, start=0: parsed.append(1)
                        or real(buf, kind, t, end=end, start=start))
    return parsed


def test_cache_writes_wait_for_quiet_reads_and_never_block_a_reader(tmp_path: Path, cache_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole cache entries are written once reads have gone quiet, so a loop of cold reads of many streams is not
    slowed by them; a read that needs an entry not written yet (an append to it, a load of it) writes it itself."""
    monkeypatch.setattr(colcache, "WRITE_WAIT_MAX", 60.0)
    paths = _streams(tmp_path, 5, 3, 1000)
    rng = random.Random(5)
    with colcache._parsing():  # another reader parsing all along (a loop of reads, a busy viewer)
        snaps = colcache.read_many(paths, "metrics")
        assert [s.n for s in snaps] == [1000, 1000, 1000]
        time.sleep(0.3)
        assert _cols(cache_dir) == []  # asked for, not written while reads parse
        with open(paths[0], "a") as f:
            f.write("\n".join(_lines(rng, 10, start=1000)) + "\n")
        done: list[int] = []
        t = threading.Thread(target=lambda: done.append(colcache.read(paths[0], "metrics").n))
        t.start()
        t.join(20)
        assert done == [1010]  # the append wrote the entry first, then its block, without waiting for quiet
        assert len(_cols(cache_dir)) == 1 and _cols(cache_dir)[0].read_bytes().count(b"MLDCEND") == 2
        with colcache._mem_lock:
            colcache._mem.clear()  # (a new reader of the other streams: it loads their entries)
        parsed = _count_parses(monkeypatch)
        assert colcache.read(paths[1], "metrics").n == 1000 and parsed == []  # written by this read, then loaded
    deadline = time.monotonic() + 20
    while len(_cols(cache_dir)) < 3 and time.monotonic() < deadline:  # quiet now: the writer thread writes the last
        time.sleep(0.02)
    assert len(_cols(cache_dir)) == 3


def test_read_many_writes_no_cache_entry_while_it_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entries of a ``read_many`` go to the writer thread when it is done (even with no wait for quiet)."""
    monkeypatch.setattr(colcache, "WRITE_WAIT_MAX", 0.0)
    paths = _streams(tmp_path, 6, 8, 3000)
    parsed = _count_parses(monkeypatch)
    during: list[int] = []
    real = colcache.DiskEntry._write_whole

    def spy(self: Any, data: Any) -> None:
        during.append(len(parsed))  # streams parsed when this entry is written
        real(self, data)

    monkeypatch.setattr(colcache.DiskEntry, "_write_whole", spy)
    assert [s.n for s in colcache.read_many(paths, "metrics")] == [3000] * 8
    colcache.flush()
    assert during == [8] * 8
