"""Column reads (`metrics(name).columns()`, tracks, logs) against a reference parse of the same files, and the
incremental column cache: torn lines, concurrent writers, restarts, truncation and replacement."""

from __future__ import annotations

import gc
import json
import math
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import ml_dash
import numpy as np
import pytest
from ml_dash import colcache, columns


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("ML_DASH_CACHE_DIR", str(d))
    colcache.clear_memory()
    return d


# ---- the reference: stdlib json, line by line, written independently of the code under test -----------------
def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def reference(path: Path, kind: str) -> tuple[int, dict[str, np.ndarray], dict[str, list[Any]]]:
    rows = []
    for line in path.read_bytes().split(b"\n")[:-1]:  # complete lines only
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    if kind == "metrics":
        rows.sort(key=lambda r: r.get("index", 0))
        flat = []
        for r in rows:
            f = {"index": r["index"]} if "index" in r else {}
            data = {("data.index" if k == "index" else k): v for k, v in r["data"].items()}
            f.update(_flatten(data))
            flat.append(f)
    else:
        flat = [_flatten(r) for r in rows]
    names = {k for f in flat for k in f}
    num, other = {}, {}
    for k in names:
        vals = [f.get(k) for f in flat]
        if all(v is None or isinstance(v, (int, float)) for v in vals):
            if any(v is not None for v in vals):
                num[k] = np.array([np.nan if v is None else float(v) for v in vals])
        else:
            other[k] = vals
    return len(flat), num, other


def assert_matches(cols: Any, path: Path, kind: str) -> None:
    n, num, other = reference(path, kind)
    assert cols.rows == n
    assert set(cols) == set(num), (sorted(cols), sorted(num))
    for k, want in num.items():
        got = np.asarray(cols[k], dtype=np.float64)
        assert np.array_equal(got, want, equal_nan=True), k
    assert set(cols.other) == set(other)
    for k, vals in other.items():
        got_o = list(cols.other[k])
        for g, w in zip(got_o, vals, strict=True):
            if isinstance(w, float) and math.isnan(w):
                assert isinstance(g, float) and math.isnan(g)
            else:
                assert g == w or (w is not None and float(g) == float(w)), (k, g, w)


# ---- random rows ------------------------------------------------------------------------------------------
FIELDS = ["loss", "acc", "lr", "step", "epoch", "train/loss", "grad norm", "ünï"]


def rand_value(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.55:
        return rng.choice([rng.random(), rng.uniform(-1e6, 1e6), rng.random() * 1e-8, 1e300 * rng.random(),
                           float(rng.randint(0, 9))])
    if r < 0.75:
        return rng.choice([rng.randint(-5, 5), rng.randint(0, 2**40), -(2**31)])
    if r < 0.82:
        return rng.choice([True, False])
    if r < 0.9:
        return rng.choice([math.nan, math.inf, -math.inf])
    if r < 0.95:
        return None
    return {"a": rng.random(), "b": rng.randint(0, 3)}


def rand_rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        k = rng.randint(1, len(FIELDS))
        keys = rng.sample(FIELDS, k) if rng.random() < 0.3 else FIELDS[:k]
        rows.append({key: rand_value(rng) for key in keys})
    return rows


def metric_line(i: int, data: dict[str, Any], style: int) -> str:
    rec = {"index": i, "data": data, "createdAt": "2026-11-30T10:18:10.%06dZ" % (i % 1000000)}
    if style == 0:  # this project's writer and the reference SDK: json.dumps defaults
        return json.dumps(rec)
    if style == 1:  # compact
        return json.dumps(rec, separators=(",", ":"))
    if style == 2:  # keys in another order, indented spacing
        return json.dumps({"createdAt": rec["createdAt"], "data": data, "index": i}, separators=(" , ", " : "))
    return json.dumps(rec, ensure_ascii=False)


@pytest.mark.parametrize("min_lines", [1, 64])
def test_random_rows_equal_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, min_lines: int) -> None:
    monkeypatch.setattr(columns, "CHUNK", 16384)  # many chunks: templates carried across them
    monkeypatch.setattr(columns, "MIN_LINES", min_lines)  # 1: every shape through the fast path
    rng = random.Random(14)
    path = tmp_path / "data.jsonl"
    lines = []
    for i, data in enumerate(rand_rows(rng, 1500)):
        style = 0 if rng.random() < 0.8 else rng.randint(1, 3)
        lines.append(metric_line(i, data, style))
        if rng.random() < 0.01:
            lines.append("")  # blank line
        if rng.random() < 0.01:
            lines.append('{"index": 5, "data": {"loss": 1.0}')  # corrupt: skipped by every reader
        if rng.random() < 0.01:
            lines.append(json.dumps({"index": i, "data": {"note": "a \"quoted\" [x]", "loss": 0.5}}))
    path.write_text("\n".join(lines) + "\n")
    buf = path.read_bytes()
    fast = columns.parse(buf, "metrics")
    general = columns.parse_general(buf, "metrics")
    assert fast.n == general.n
    assert set(fast.num) == set(general.num)
    for k in general.num:
        assert np.array_equal(fast.num[k], general.num[k], equal_nan=True), k
    assert fast.text == general.text
    from ml_dash.colview import build

    assert_matches(build(colcache.read(path, "metrics"), None, "m"), path, "metrics")


# mutations of one line of the common shape: each must give what the general parser gives for that line
MUTATIONS = [
    lambda ln, rng: ln.replace('"loss": ' + ln.split('"loss": ')[1].split(",")[0],
                               '"loss": ' + rng.choice(["NaN", "Infinity", "-Infinity", "null", "true", "false",
                                                        str(2**70), "-0", "1E+2", "1e-7", "01", "1.", ".5", "-",
                                                        '"x"', "{}", "Nan", "nul", "tru", "1 2", "1,2", "[1]"])),
    lambda ln, rng: ln.replace('"loss"', '"lsos"'),  # same length, other key
    lambda ln, rng: ln.replace('"acc": ', '"acc":  '),  # other spacing
    lambda ln, rng: ln.replace('"acc": ', '"acc": 1, "extra": '),  # a field more
    lambda ln, rng: ln[: rng.randint(1, len(ln) - 1)],  # corrupt
    lambda ln, rng: "",  # blank
    lambda ln, rng: ln.replace("Z\"", "123Z\""),  # a longer string value
    lambda ln, rng: ln.replace('"index": ', '"index": -'),
    lambda ln, rng: ln.replace(', "createdAt"', '}, "createdAt"', 1),  # unbalanced
]


def assert_same_as_general(fast: columns.Batch, buf: bytes) -> None:
    """``fast`` (the columns of ``buf`` by the fast paths) equals what the general parser gives."""
    general = columns.parse_general(buf, "metrics")
    assert (fast.n, fast.skipped) == (general.n, general.skipped)
    assert set(fast.num) == set(general.num)
    for k in general.num:
        assert np.array_equal(fast.num[k], general.num[k], equal_nan=True), k
    assert fast.text == general.text


@pytest.mark.parametrize("seed", range(6))
def test_whole_chunk_path_equals_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Chunks of one line shape take the whole-chunk path; any line that differs (special tokens, other keys,
    spacing, corrupt or blank lines, longer strings, invalid numbers) must give what the general parser gives,
    with chunks parsed in parallel threads and the line shapes carried from one read to the next."""
    monkeypatch.setattr(columns, "CHUNK", 8192)  # about 50 lines a chunk
    monkeypatch.setattr(columns, "MIN_LINES", 16)
    spy = _Spy(monkeypatch)
    rng = random.Random(seed)
    lines = []
    for i in range(3000):
        data = {"loss": rng.choice([rng.random(), rng.uniform(-1e6, 1e6), float(rng.randint(0, 9)), 1e-300]),
                "acc": rng.random(), "_ts": 1.7e9 + i * 0.01}
        line = metric_line(i, data, 0)
        if i % 61 == 7 + seed:  # one line in a few chunks: the others of those chunks are of the common shape
            line = MUTATIONS[(i // 61 + seed) % len(MUTATIONS)](line, rng)
        lines.append(line)
    buf = ("\n".join(lines) + "\n").encode()
    templates: list[columns.Template] = []
    cut = buf.index(b"\n", len(buf) // 3) + 1  # two reads: the second starts with the shapes of the first
    parts = [columns.parse(buf[:cut], "metrics", templates), columns.parse(buf[cut:], "metrics", templates)]
    fast = columns.concat(parts)
    assert_same_as_general(fast, buf)
    assert spy.took >= 10 and spy.refused >= 10, (spy.took, spy.refused)  # both ways were taken


@pytest.mark.parametrize("seed", range(3))
def test_a_small_stream_cut_into_one_piece_per_core_equals_reference(monkeypatch: pytest.MonkeyPatch,
                                                                      seed: int) -> None:
    """A stream of about one chunk is cut into pieces at line ends, one per core, prepared on threads: the pieces
    (each whole-chunk, or refused for a line that differs) give exactly what the general parser gives."""
    monkeypatch.setattr(columns, "MIN_PIECE", 4096)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    spy = _Spy(monkeypatch)
    rng = random.Random(seed)
    lines = []
    for i in range(4000):
        line = metric_line(i, {"loss": rng.random(), "acc": rng.uniform(-1e6, 1e6), "_ts": 1.7e9 + i * 0.01}, 0)
        if i == 3000 + seed:
            line = MUTATIONS[(1, 3, 4)[seed]](line, rng)  # other key, a field more, corrupt
        lines.append(line)
    buf = ("\n".join(lines) + "\n").encode()
    assert len(buf) < columns.CHUNK  # one chunk after the head: without the cut, one thread would do it all
    fast = columns.parse(buf, "metrics")
    assert_same_as_general(fast, buf)
    assert spy.took >= 3 and spy.refused >= 1, (spy.took, spy.refused)  # the head and >= 2 pieces; one refused


class _Spy:
    """Counts the chunks the whole-chunk path took and refused (in its check, or in decoding the numbers)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.took = self.refused = 0
        prepare, finish = columns._prepare, columns._finish

        def spy_prepare(*args: Any) -> Any:
            got = prepare(*args)
            self.refused += got is None
            return got

        def spy_finish(p: Any) -> Any:
            got = finish(p)
            self.took += got is not None
            self.refused += got is None
            return got

        monkeypatch.setattr(columns, "_prepare", spy_prepare)
        monkeypatch.setattr(columns, "_finish", spy_finish)


def test_whole_chunk_path_null_and_special_columns() -> None:
    lines = [metric_line(i, {"loss": v, "gone": None, "b": i % 2 == 0}, 1)
             for i, v in enumerate([math.nan, math.inf, -math.inf, None, 0.5] * 40)]
    buf = ("\n".join(lines) + "\n").encode()
    templates = [columns.make_template(lines[-1].encode(), "metrics")]
    assert templates[0] is not None
    fast = columns.parse(buf, "metrics", templates)  # type: ignore[arg-type]
    general = columns.parse_general(buf, "metrics")
    assert set(fast.num) == set(general.num) == {"index", "loss", "b"}
    for k in general.num:
        assert np.array_equal(fast.num[k], general.num[k], equal_nan=True), k
    # as many quotes in the chunk as its lines of the common shape hold, but not on every line
    lines = [metric_line(i, {"loss": i * 0.5, "acc": 1.0}, 0) for i in range(100)]
    lines[10] = lines[10].replace('"acc": ', '"acc": 1, "extra": ')
    lines[20] = lines[20].replace('"acc": ', 'acc: ')
    buf = ("\n".join(lines) + "\n").encode()
    templates = [columns.make_template(lines[0].encode(), "metrics")]
    fast = columns.parse(buf, "metrics", templates)  # type: ignore[arg-type]
    general = columns.parse_general(buf, "metrics")
    assert fast.n == general.n == 99 and set(fast.num) == set(general.num) == {"index", "loss", "acc", "extra"}
    for k in general.num:
        assert np.array_equal(fast.num[k], general.num[k], equal_nan=True), k


def test_fast_path_takes_the_rows_this_project_and_the_reference_write() -> None:
    for style in (0, 1, 2, 3):
        line = metric_line(3, {"loss": 0.25, "step": 7, "ok": True, "x": math.nan, "_ts": 1.7e9}, style).encode()
        tpl = columns.make_template(line, "metrics")
        assert tpl is not None and sorted(f for f in tpl.items if f and f != columns._STR) == ["_ts", "index", "loss", "ok", "step", "x"]
    assert columns.make_template(b'{"timestamp": 1.5, "x": 2, "a.b": -Infinity}', "tracks") is not None
    assert columns.make_template(b'{"index": 1, "data": {"s": "text"}}', "metrics") is None  # strings: general


def test_project_writer_rows_equal_reference(tmp_path: Path) -> None:
    rng = random.Random(7)
    rows = rand_rows(rng, 2000)
    root = tmp_path / ".dash"
    with ml_dash.Experiment("proj/run", dash_root=root) as exp:
        for r in rows:
            exp.metrics("eval/sub").log(**r)
            exp.tracks("robot/arm").append(_ts=float(rng.randint(0, 500)), **{k: v for k, v in r.items()
                                                                              if not isinstance(v, dict)})
        exp.logs.info("hello", step=1)
        exp.logs.error("bad")
    v = ml_dash.load("proj/run", root)
    cols = v.metrics("eval/sub").columns()
    assert_matches(cols, root / "proj/run/metrics/eval/sub/data.jsonl", "metrics")
    assert cols["index"].dtype == np.int64 and list(cols["index"][:3]) == [0, 1, 2]
    assert cols["_ts"].dtype == np.float64 and not np.isnan(cols["_ts"]).any()
    # tracks: entries sharing a timestamp come back merged, as read() gives them
    tc = v.tracks("robot/arm").columns()
    merged = v.tracks("robot/arm").read()
    assert tc.rows == len(merged)
    assert np.array_equal(tc["timestamp"], [e["timestamp"] for e in merged])
    lc = v.logs.columns()
    assert list(lc["level"]) == ["info", "error"] and list(lc["message"]) == ["hello", "bad"]
    assert lc["sequenceNumber"].dtype == np.int64 and lc["timestamp"].dtype == np.float64
    assert abs(lc["timestamp"][0] - time.time()) < 600


def test_fields_selection_and_errors(tmp_path: Path) -> None:
    root = tmp_path / ".dash"
    with ml_dash.Experiment("p/e", dash_root=root) as exp:
        for i in range(10):
            exp.metrics("train").log(step=i, loss=1.0 / (i + 1), ok=i % 2 == 0, note=f"n{i}" if i == 3 else None)
        m = exp.metrics("train")
        cols = m.columns(["step", "loss"])
        assert list(cols) == ["step", "loss"]
        assert cols["step"].tolist() == list(range(10))
        assert m.columns("ok")["ok"].tolist() == [1.0, 0.0] * 5
        assert "note" not in m.columns() and list(m.columns().other) == ["note"]
        assert m.columns(["note"])["note"][3] == "n3"
        with pytest.raises(KeyError, match="'nope'.*step"):
            m.columns(["nope"])
        with pytest.raises(TypeError):
            m.columns([1])  # type: ignore[list-item]
        assert exp.metrics("never").columns(["loss"])["loss"].size == 0
        with pytest.raises(ValueError):
            cols["loss"][0] = 5.0  # shared with the cache: read-only
        df = m.to_pandas() if _has("pandas") else None
        if df is not None:
            assert list(df.columns[:2]) == ["index", "_ts"] and len(df) == 10


def _has(mod: str) -> bool:
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


def test_torn_last_line_waits(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(metric_line(0, {"loss": 1.0}, 0) + "\n" + '{"index": 1, "data": {"lo')
    assert colcache.read(path, "metrics").n == 1
    with open(path, "a") as f:
        f.write('ss": 2.0}, "createdAt": "2026-11-30T10:18:10Z"}\n')
    snap = colcache.read(path, "metrics")
    assert snap.n == 2 and snap.num["loss"].tolist() == [1.0, 2.0]


def test_concurrent_writer(tmp_path: Path) -> None:
    """A real run in another process appends while this one reads: every read is a consistent prefix."""
    root = tmp_path / ".dash"
    code = textwrap.dedent(f"""
        import ml_dash
        with ml_dash.Experiment("p/live", dash_root={str(root)!r}) as exp:
            for i in range(60000):
                exp.metrics("train").log(step=i, loss=i * 0.5, acc=(i % 7) / 7)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
    env["ML_DASH_WRITE_INTERVAL"] = "0.01"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = root / "p/live/metrics/train/data.jsonl"
    seen = []
    try:
        while proc.poll() is None:
            if path.exists():
                c = ml_dash.load("p/live", root).metrics("train").columns()
                n = c.rows
                seen.append(n)
                assert np.array_equal(c["index"], np.arange(n))
                if n:
                    assert np.array_equal(c["step"], np.arange(n))
                    assert np.array_equal(c["loss"], np.arange(n) * 0.5)
            time.sleep(0.005)
    finally:
        proc.wait(60)
    assert proc.returncode == 0, proc.stderr.read()
    c = ml_dash.load("p/live", root).metrics("train").columns()
    assert c.rows == 60000
    assert_matches(c, path, "metrics")
    assert len(set(seen)) > 2, seen  # it did read while the writer was appending


SPY = """
import json, sys
import ml_dash
from ml_dash import colcache
parsed = []
real = colcache.parse_parts
def spy(buf, kind, templates=None, end=None, start=0):
    parsed.append((len(buf) if end is None else end) - start)
    return real(buf, kind, templates, end=end, start=start)
colcache.parse_parts = spy
c = ml_dash.load("p/e", sys.argv[1]).metrics("train").columns()
print(json.dumps({"bytes": sum(parsed), "rows": c.rows, "last": float(c["loss"][-1])}))
"""


def _spy(tmp_path: Path, root: Path, cache: Path) -> dict[str, Any]:
    script = tmp_path / "spy.py"
    script.write_text(SPY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
    env["ML_DASH_CACHE_DIR"] = str(cache)
    out = subprocess.run([sys.executable, str(script), str(root)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write(root: Path, start: int, n: int) -> None:
    with ml_dash.Experiment("p/e", dash_root=root) as exp:
        for i in range(start, start + n):
            exp.metrics("train").log(step=i, loss=float(i))


def test_cache_survives_restart_and_reads_only_appended(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / ".dash"
    _write(root, 0, 5000)
    size = (root / "p/e/metrics/train/data.jsonl").stat().st_size
    first = _spy(tmp_path, root, cache_dir)
    assert first == {"bytes": size, "rows": 5000, "last": 4999.0}
    again = _spy(tmp_path, root, cache_dir)  # a new process: the columns come from the disk cache
    assert again == {"bytes": 0, "rows": 5000, "last": 4999.0}
    _write(root, 5000, 100)
    size2 = (root / "p/e/metrics/train/data.jsonl").stat().st_size
    third = _spy(tmp_path, root, cache_dir)
    assert third == {"bytes": size2 - size, "rows": 5100, "last": 5099.0}
    assert not any(p.name.startswith(".") or "cache" in p.name for p in (root / "p/e").iterdir()
                   if p.name not in (".ml_dash",))  # nothing of the cache inside .dash


def test_truncation_and_replacement_invalidate(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "data.jsonl"
    lines = [metric_line(i, {"loss": float(i)}, 0) + "\n" for i in range(100)]
    path.write_text("".join(lines))
    assert colcache.read(path, "metrics").n == 100
    path.write_text("".join(lines[:40]))  # truncated (same inode)
    snap = colcache.read(path, "metrics")
    assert snap.n == 40 and snap.num["loss"][-1] == 39.0
    # replaced by another file (new inode), longer than what was read
    other = tmp_path / "other.jsonl"
    other.write_text("".join(metric_line(i, {"acc": -float(i)}, 0) + "\n" for i in range(200)))
    os.replace(other, path)
    snap = colcache.read(path, "metrics")
    assert snap.n == 200 and "loss" not in snap.num and snap.num["acc"][5] == -5.0
    # rewritten in place with the same length and inode: the bytes before the parsed end changed
    text = path.read_text().replace('"acc": -199.0', '"acc": -777.0')
    with open(path, "r+") as f:
        f.write(text)
    snap = colcache.read(path, "metrics")
    assert snap.n == 200 and snap.num["acc"][-1] == -777.0
    # a new process sees the same through the disk cache
    colcache.clear_memory()
    snap = colcache.read(path, "metrics")
    assert snap.n == 200 and snap.num["acc"][-1] == -777.0
    path.write_text("")
    assert colcache.read(path, "metrics").n == 0


def test_disk_entry_blocks_torn_and_compacted(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read that parsed new rows appends one block to the stream's cache file; a torn last block (a crash
    while writing) ends the entry at the block before, and the rows after it are parsed again."""
    path = tmp_path / "data.jsonl"
    with open(path, "w") as f:
        f.write("".join(metric_line(i, {"loss": float(i)}, 0) + "\n" for i in range(100)))
    assert colcache.read(path, "metrics").n == 100
    for start in (100, 150):
        with open(path, "a") as f:
            f.write("".join(metric_line(i, {"loss": float(i), "acc": 1.0}, 0) + "\n" for i in range(start, start + 50)))
        assert colcache.read(path, "metrics").n == start + 50
    files = list((cache_dir / "columns").rglob("*.cols"))
    assert len(files) == 1
    raw = files[0].read_bytes()
    assert raw.count(b"MLDCEND") == 3
    files[0].write_bytes(raw[:-5])  # torn
    colcache.clear_memory()
    parsed: list[int] = []
    real = colcache.parse_parts
    monkeypatch.setattr(colcache, "parse_parts", lambda buf, kind, t=None, end=None, start=0:
                        parsed.append((end or len(buf)) - start) or real(buf, kind, t, end=end, start=start))
    snap = colcache.read(path, "metrics")
    assert snap.n == 200 and snap.num["loss"].tolist() == [float(i) for i in range(200)]
    assert np.isnan(snap.num["acc"][:100]).all() and (snap.num["acc"][100:] == 1.0).all()
    assert 0 < sum(parsed) < path.stat().st_size  # only what the lost block covered
    colcache.clear_memory()
    parsed.clear()
    assert files[0].read_bytes().count(b"MLDCEND") == 1  # a torn entry is written whole again
    monkeypatch.setattr(colcache, "MAX_BLOCKS", 2)  # then one block appended, then whole again
    for i, blocks in ((199, 2), (200, 1)):
        with open(path, "a") as f:
            f.write(metric_line(i + 1, {"loss": float(i + 1)}, 0) + "\n")
        assert colcache.read(path, "metrics").n == i + 2
        colcache.flush()  # (a whole entry is written in the background)
        assert files[0].read_bytes().count(b"MLDCEND") == blocks
    colcache.clear_memory()
    parsed.clear()
    snap = colcache.read(path, "metrics")
    assert parsed == [] and snap.n == 202 and snap.num["loss"][-1] == 201.0


def test_cache_dir_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("ML_DASH_CACHE_DIR", str(blocker / "cache"))  # ENOTDIR, even for root
    root = tmp_path / ".dash"
    _write(root, 0, 300)
    c = ml_dash.load("p/e", root).metrics("train").columns()
    assert c.rows == 300 and c["loss"][-1] == 299.0
    _write(root, 300, 10)
    assert ml_dash.load("p/e", root).metrics("train").columns().rows == 310


def test_no_per_row_objects_kept(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(metric_line(i, {"loss": i * 0.1, "acc": 0.5, "_ts": 1.7e9 + i}, 0) + "\n"
                            for i in range(100_000)))
    gc.collect()
    before = len(gc.get_objects())
    snap = colcache.read(path, "metrics")
    gc.collect()
    after = len(gc.get_objects())
    assert snap.n == 100_000
    assert after - before < 1000, after - before


# ---- hypothesis: rows of one shape with any values, whole chunks against the general parser -------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(), st.none(), st.sampled_from([0, -0.0, 1e-300, 5e-324, 1.7976931348623157e308, 0.1, 1e16, 1e22]),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(VALUE, VALUE, VALUE), min_size=1, max_size=150), st.sampled_from([0, 1]))
def test_whole_chunk_any_values(rows: list[tuple[Any, Any, Any]], style: int) -> None:
    lines = [metric_line(i, {"a": a, "b/c": b, "d": d}, style) for i, (a, b, d) in enumerate(rows)]
    shape = metric_line(0, {"a": 0.5, "b/c": 1, "d": 2.5}, style).encode()
    tpl = columns.make_template(shape, "metrics")
    assert tpl is not None
    buf = ("\n".join(lines) + "\n").encode()
    fast = columns.parse(buf, "metrics", [tpl])  # the whole-chunk path first, the line matcher when it refuses
    general = columns.parse_general(buf, "metrics")
    assert (fast.n, fast.skipped) == (general.n, general.skipped)
    assert set(fast.num) == set(general.num)
    for k in general.num:
        assert np.array_equal(fast.num[k], general.num[k], equal_nan=True), k
        assert np.array_equal(np.signbit(fast.num[k]), np.signbit(general.num[k])), k


def test_disk_entry_of_blocks_with_changing_fields_reads_back_as_parsed(tmp_path: Path) -> None:
    """Blocks appended by successive reads, each adding fields the earlier ones lacked: loaded from disk alone,
    the columns equal a reference parse (NaN where a row has no value)."""
    f = tmp_path / "data.jsonl"

    def add(rows: list[dict[str, Any]]) -> None:
        with open(f, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        colcache.read(f, "metrics")

    add([{"index": i, "a": i * 1.0} for i in range(10)])
    add([{"index": 10 + i, "b": -i} for i in range(5)])
    add([{"index": 15 + i, "a": 2.0, "b": 1} for i in range(3)])
    add([{"index": 18, "c": 5}])
    colcache.clear_memory()
    snap = colcache.read(f, "metrics")
    ref = columns.parse_general(f.read_bytes(), "metrics")
    assert snap.n == ref.n == 19 and set(snap.num) == set(ref.num) == {"index", "a", "b", "c"}
    for k, col in ref.num.items():
        assert np.array_equal(snap.num[k], col, equal_nan=True), k


@pytest.mark.parametrize("seed", range(3))
def test_shape_of_the_last_stream_checked_on_the_first_line(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """A stream read with no shapes of its own starts from the last stream's shape when its first line has it:
    then every piece goes to the threads at once (a piece with other lines is refused there and matched line by
    line). A stream whose first line has another shape finds its own. Either way: what the general parser gives."""
    monkeypatch.setattr(columns, "MIN_PIECE", 4096)
    monkeypatch.setattr(columns, "_RECENT", {})
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    rng = random.Random(seed)

    def stream(keys: tuple[str, ...], style: int, mutate: int | None = None) -> bytes:
        lines = [metric_line(i, {k: rng.random() for k in keys}, style) for i in range(3000)]
        if mutate is not None:
            lines[mutate] = MUTATIONS[(1, 3, 4)[seed]](lines[mutate], rng)  # other key, a field more, corrupt
        return ("\n".join(lines) + "\n").encode()

    first = stream(("loss", "acc"), 0)
    assert_same_as_general(columns.parse(first, "metrics"), first)
    shape = columns._RECENT["metrics"][0]
    same = stream(("loss", "acc"), 0, mutate=2000)  # the first line has the shape; one later line differs
    assert columns._fits(shape, same, same.index(b"\n"))
    spy = _Spy(monkeypatch)
    assert_same_as_general(columns.parse(same, "metrics"), same)
    assert spy.took >= 3 and spy.refused >= 1, (spy.took, spy.refused)
    for other in (stream(("loss", "acc", "lr"), 0), stream(("loss", "acc"), 1), stream(("acc", "loss"), 0)):
        assert not columns._fits(shape, other, other.index(b"\n"))
        assert_same_as_general(columns.parse(other, "metrics"), other)


def test_fits_accepts_the_lines_the_whole_chunk_path_takes() -> None:
    """The one-line check in Python agrees with the whole-chunk path on every mutation of a line (it must not
    refuse a line the path takes; a line it accepts and the path refuses only costs time)."""
    rng = random.Random(3)
    line = metric_line(7, {"loss": 0.25, "acc": 1e-5, "_ts": 1.7e9}, 0)
    tpl = columns.make_template(line.encode(), "metrics")
    assert tpl is not None and columns._fits(tpl, (line + "\n").encode(), len(line))
    taken = 0
    for i in range(300):
        mutated = MUTATIONS[i % len(MUTATIONS)](line, rng)
        buf = (mutated + "\n").encode()
        pad = np.zeros(len(buf) + columns.FRONT + 8, dtype=np.uint8)
        pad[columns.FRONT : columns.FRONT + len(buf)] = np.frombuffer(buf, np.uint8)
        takes = b"\\" not in buf and b"[" not in buf and columns._prepare(
            pad, columns.FRONT, columns.FRONT + len(buf), tpl) is not None
        if takes:
            assert columns._fits(tpl, buf, len(mutated)), mutated
            taken += 1
    assert 30 < taken < 270  # mutations of both kinds


def test_whole_entry_written_in_the_background_is_waited_for(tmp_path: Path, cache_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A first read's cache entry is written by a background thread: a read of the same stream, an append to the
    entry and ``flush`` wait for it, so the columns come from the disk, never from a half-written file; a process
    that exits right after a cold read leaves the whole entry (test_cache_survives_restart_and_reads_only_appended)."""
    path = tmp_path / "data.jsonl"
    path.write_text("".join(metric_line(i, {"loss": float(i)}, 0) + "\n" for i in range(3000)))
    slow = colcache.DiskEntry._write_whole

    def slow_write(self: Any, data: Any) -> None:
        time.sleep(1.0)
        slow(self, data)

    monkeypatch.setattr(colcache.DiskEntry, "_write_whole", slow_write)
    assert colcache.read(path, "metrics").n == 3000
    assert colcache._writes  # the read returned before its entry was written
    with colcache._mem_lock:
        colcache._mem.clear()  # (not clear_memory: that waits too)
    parsed: list[int] = []
    real = colcache.parse_parts
    monkeypatch.setattr(colcache, "parse_parts", lambda buf, kind, t=None, end=None, start=0: parsed.append(1)
                        or real(buf, kind, t, end=end, start=start))
    snap = colcache.read(path, "metrics")
    assert parsed == [] and snap.n == 3000 and snap.num["loss"][-1] == 2999.0  # from the disk entry
    with open(path, "a") as f:
        f.write(metric_line(3000, {"loss": 3000.0}, 0) + "\n")
    assert colcache.read(path, "metrics").n == 3001 and parsed == [1]
    colcache.flush()
    files = list((cache_dir / "columns").rglob("*.cols"))
    assert len(files) == 1 and files[0].read_bytes().count(b"MLDCEND") == 2  # the whole entry, one block appended
