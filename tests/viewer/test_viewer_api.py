"""The viewer's HTTP side against a real `ml-dash view` process: data fidelity, safety, bad input, live stream."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from ml_dash import Experiment
from viewer_runs import small_runs, spiky_run


def get(url: str, **kw) -> httpx.Response:
    return httpx.get(url, timeout=60, **kw)  # generous: the test machines are small and shared


def test_view_prints_url_and_lists_runs(tmp_path: Path, start_viewer) -> None:
    small_runs(tmp_path / ".dash", count=3)
    with Experiment("sweep/run-0/child", dash_root=tmp_path / ".dash").run as nested:  # nests under a run's prefix
        nested.metrics("train").log(loss=1.0)
    v = start_viewer(tmp_path / ".dash")
    assert v.url.startswith("http://127.0.0.1:")
    r = get(v.url + "/api/view/runs", params={"metrics": "train/loss"})
    runs = {x["prefix"]: x for x in r.json()["runs"]}
    assert set(runs) == {"sweep/run-0", "sweep/run-1", "sweep/run-2", "sweep/run-0/child"}
    assert runs["sweep/run-1"]["status"] == "COMPLETED" and runs["sweep/run-1"]["tags"] == ["ablation"]
    assert runs["sweep/run-0"]["params"]["lr"] == 0.1
    assert runs["sweep/run-0"]["metrics"]["train/loss"] == {"last": 1 / 50, "min": 1 / 50, "max": 1.0}
    page = get(v.url + "/run/sweep/run-0")
    assert page.status_code == 200 and "<script" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert get(v.url + "/static/vendor/uPlot.iife.min.js").status_code == 200


def test_min_max_buckets_keep_every_spike_at_every_zoom(tmp_path: Path, start_viewer) -> None:
    spikes = spiky_run(tmp_path / ".dash", n=20_000)
    v = start_viewer(tmp_path / ".dash")
    q = {"run": "proj/spiky", "stream": "train", "field": "loss", "n": 500}
    d = get(v.url + "/api/view/series", params=q).json()
    assert d["mode"] == "buckets" and len(d["x"]) <= 500
    hi = np.array([np.nan if x is None else x for x in d["runs"][0]["hi"]])
    assert int((hi > 3).sum()) == len(spikes)  # 11 of 11 spikes survive the reduction
    # zoom to 1 % around one spike: re-queried at full detail (raw points, every one of them)
    s = spikes[5]
    d = get(v.url + "/api/view/series", params={**q, "xmin": s - 100, "xmax": s + 99}).json()
    assert d["mode"] == "raw" and d["x"][0] == s - 100 and len(d["x"]) == 200
    assert max(d["runs"][0]["y"]) > 5


def test_smoothing_matches_tensorboard_debiased_ema(tmp_path: Path, start_viewer) -> None:
    root = tmp_path / ".dash"
    ys = [math.sin(i / 5) + (i % 7) / 10 for i in range(300)]
    with Experiment("p/s", dash_root=root) as e:
        for i, y in enumerate(ys):
            e.metrics("train").log(loss=y, step=i)
    v = start_viewer(root)
    d = get(v.url + "/api/view/series", params={"run": "p/s", "stream": "train", "field": "loss",
                                                      "smooth": "ema:0.6", "n": 1000}).json()
    last, num, ref = 0.0, 0, []
    for y in ys:  # TensorBoard's vz_line_chart smoothing
        last = last * 0.6 + (1 - 0.6) * y
        num += 1
        ref.append(last / (1 - 0.6 ** num))
    assert np.allclose(d["runs"][0]["s"], ref)
    d = get(v.url + "/api/view/series", params={"run": "p/s", "stream": "train", "field": "loss",
                                                      "smooth": "mean:10"}).json()
    assert math.isclose(d["runs"][0]["s"][20], sum(ys[11:21]) / 10)
    bad = get(v.url + "/api/view/series", params={"run": "p/s", "stream": "train", "field": "loss",
                                                        "smooth": "ema:7"})
    assert bad.status_code == 400 and "smoothing" in bad.json()["detail"]


def test_paths_never_leave_the_root(tmp_path: Path, start_viewer) -> None:
    root = tmp_path / ".dash"
    small_runs(root, count=1)
    secret = tmp_path / "secret" / "run"
    secret.mkdir(parents=True)
    (secret / "experiment.json").write_text('{"status": "COMPLETED"}')
    (root / "evil").mkdir()
    os.symlink(secret, root / "evil" / "link")  # a symlinked run folder pointing outside the root
    v = start_viewer(root)
    for prefix in ("../secret/run", "sweep/../../secret/run", "/etc/passwd", "evil/link", "sweep%2F..%2F..%2Fx"):
        r = get(v.url + "/api/view/run", params={"run": prefix})
        assert r.status_code in (400, 404), (prefix, r.status_code)
        assert "detail" in r.json()
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/run/..%2F..%2Fetc"):
        r = get(v.url + path)
        assert "import" not in r.text and "root:" not in r.text
    assert "evil/link" not in [x["prefix"] for x in get(v.url + "/api/view/runs").json()["runs"]]
    # a file index entry that points outside its run is refused
    run = root / "sweep" / "run-0"
    (run / "files").mkdir(exist_ok=True)
    (run / "files" / ".files_metadata.json").write_text(json.dumps(
        {"files": [{"id": "..", "path": "/../../..", "filename": "experiment.json"}]}))
    r = get(v.url + "/api/view/file", params={"run": "sweep/run-0", "id": ".."})
    assert r.status_code == 404


def test_bad_input_shows_what_can_be_shown(tmp_path: Path, start_viewer) -> None:
    root = tmp_path / ".dash"
    with Experiment("bad/run", dash_root=root) as e:
        e.metrics("train").log(loss=1.0, step=0)
        e.metrics("train").log(loss=0.5, step=1, extra=3.0)  # a field appears
        e.metrics("train").log(loss="n/a", step=2)  # not a number
        e.logs.info("ok")
    with Experiment("bad/empty", dash_root=root):
        pass
    run = root / "bad" / "run"
    with open(run / "metrics" / "train" / "data.jsonl", "ab") as f:
        f.write(b"not json\n")
        f.write(b'{"index": 3, "data": {"loss": 0.25, "step": 3, "name": "caf\xe9"}}\n')  # not UTF-8
        f.write(b'{"index": 4, "data": {"loss": 0.1')  # torn last line
    with open(run / "logs" / "logs.jsonl", "a") as f:  # a 10 MB log line (the SDK caps at 1 MB; others may not)
        f.write(json.dumps({"sequenceNumber": 1, "timestamp": "2026-01-01T00:00:00Z", "level": "info",
                            "message": "x" * (10 * 1024 * 1024)}) + "\n")
    v = start_viewer(root)
    info = get(v.url + "/api/view/run", params={"run": "bad/run"}).json()
    tr = info["streams"]["train"]
    # the non-UTF-8 row is shown or counted as skipped, never fatal; the torn last line waits for its end
    assert tr["rows"] + tr["invalid"] == 5 and tr["invalid"] >= 1
    assert "loss" in tr["fields"] and "extra" in tr["fields"]
    d = get(v.url + "/api/view/series", params={"run": "bad/run", "stream": "train", "field": "loss"}).json()
    assert d["x"][:2] == [0.0, 1.0] and d["runs"][0]["y"][:2] == [1.0, 0.5] and d["runs"][0]["invalid"] >= 1
    logs = get(v.url + "/api/view/logs", params={"run": "bad/run"}).json()
    assert logs["total"] == 2 and logs["rows"][0]["message"] == "ok"
    assert logs["rows"][1]["truncated"] == 10 * 1024 * 1024 and len(logs["rows"][1]["message"]) == 10_000
    empty = get(v.url + "/api/view/run", params={"run": "bad/empty"})
    assert empty.status_code == 200 and empty.json()["streams"] == {}
    import shutil

    shutil.rmtree(run)  # deleted while open
    gone = get(v.url + "/api/view/series", params={"run": "bad/run", "stream": "train", "field": "loss"})
    assert gone.status_code == 200 and gone.json()["notes"] and gone.json()["runs"] == []
    r = get(v.url + "/api/view/run", params={"run": "bad/run"})
    assert r.status_code == 404 and "deleted" in r.json()["detail"]


def _sse(url: str, subs: list, last_id: str | None, stop_after: float) -> tuple[list[dict], str | None]:
    events, eid = [], last_id
    headers = {"last-event-id": last_id} if last_id else {}
    deadline = time.monotonic() + stop_after
    with httpx.stream("GET", url + "/api/view/live", params={"subs": json.dumps(subs)}, headers=headers,
                      timeout=60) as r:
        cur: dict = {}
        for line in r.iter_lines():
            if line.startswith("id: "):
                cur["id"] = line[4:]
            elif line.startswith("event: "):
                cur["event"] = line[7:]
            elif line.startswith("data: "):
                cur["data"] = json.loads(line[6:])
            elif not line and cur:
                if "id" in cur:
                    eid = cur["id"]
                events.append(cur)
                cur = {}
            if time.monotonic() > deadline:
                break
    return events, eid


def test_live_stream_resumes_without_gaps_or_duplicates(tmp_path: Path, start_viewer) -> None:
    root = tmp_path / ".dash"
    e = Experiment("live/run", dash_root=root)
    e.run.start()
    e.metrics("train").log(loss=0.0, step=0)
    e.flush()
    v = start_viewer(root)
    offset = get(v.url + "/api/view/run", params={"run": "live/run"}).json()["streams"]["train"]["offset"]
    stop = threading.Event()

    def write() -> None:
        i = 1
        while not stop.is_set():
            e.metrics("train").log(loss=float(i), step=i)
            i += 1
            time.sleep(0.01)

    t = threading.Thread(target=write)
    t.start()
    try:
        subs = [["live/run", "metrics", "train", offset], ["live/run", "status", "", 0]]
        first, eid = _sse(v.url, subs, None, 1.5)
        second, _ = _sse(v.url, subs, eid, 1.5)  # a reconnect sends the last id back
    finally:
        stop.set()
        t.join()
        e.run.complete()
    steps = [r["step"] for ev in first + second if ev.get("event") == "metrics" for r in ev["data"]["rows"]]
    assert len(steps) > 20
    assert steps == list(range(1, len(steps) + 1))  # no gap, no duplicate across the reconnect
    assert any(ev.get("event") == "status" and ev["data"]["status"] == "RUNNING" for ev in first)


def test_cold_large_stream_answers_with_a_preview_then_exact(tmp_path: Path, start_viewer) -> None:
    root = tmp_path / ".dash"
    spiky_run(root, n=2_000)
    path = root / "proj" / "spiky" / "metrics" / "train" / "data.jsonl"
    line = path.read_bytes().splitlines(keepends=True)[5]
    with open(path, "ab") as f:  # grow the stream past the preview threshold with rows of the same shape
        row = json.loads(line)
        chunk = []
        for i in range(2_000, 200_000):
            row["index"], row["data"]["step"], row["data"]["loss"] = i, i, 1.0 / i
            chunk.append(json.dumps(row))
        f.write(("\n".join(chunk) + "\n").encode())
    import ml_dash.viewer.data as vd

    assert path.stat().st_size > vd.PREVIEW_BYTES
    pv = vd.preview_columns(path)  # evenly spaced rows over the whole file
    idx = pv.cols["index"]
    assert 3000 < pv.rows <= vd.PREVIEW_LINES and idx[-1] > 190_000 and (np.diff(idx) > 0).all()
    v = start_viewer(root)
    q = {"run": "proj/spiky", "stream": "train", "field": "loss", "n": 500}
    info = get(v.url + "/api/view/run", params={"run": "proj/spiky"}).json()
    assert "loss" in info["streams"]["train"]["fields"]
    seen = []
    for _ in range(200):
        d = get(v.url + "/api/view/series", params=q).json()
        seen.append(d["approximate"])
        if not d["approximate"]:
            break
        time.sleep(0.2)
    assert seen[-1] is False and d["runs"][0]["rows"] == 200_000  # the exact answer follows the preview


def test_a_running_run_whose_heartbeat_stopped_shows_crashed(tmp_path: Path, start_viewer) -> None:
    root = tmp_path / ".dash"
    small_runs(root, count=1)
    info_path = root / "sweep" / "run-0" / "experiment.json"
    info = json.loads(info_path.read_text())
    info.update(status="RUNNING", heartbeatAt="2020-01-01T00:00:00.000000Z")  # a writer killed long ago
    info_path.write_text(json.dumps(info))
    v = start_viewer(root)
    runs = get(v.url + "/api/view/runs").json()["runs"]
    assert runs[0]["status"] == "CRASHED"
    assert get(v.url + "/api/view/run", params={"run": "sweep/run-0"}).json()["status"] == "CRASHED"


def test_the_last_screen_of_a_long_log_is_read_from_its_end(tmp_path: Path, start_viewer) -> None:
    root = tmp_path / ".dash"
    with Experiment("logs/long", dash_root=root) as e:
        e.logs.info("first")
    path = root / "logs" / "long" / "logs" / "logs.jsonl"
    with open(path, "a") as f:
        f.write("not json\n")  # early in the file: the last screen never reads it
        for i in range(1, 30_000):
            f.write(json.dumps({"sequenceNumber": i, "timestamp": "2026-01-01T00:00:00.000000Z",
                                "level": "warn" if i % 7 == 0 else "info", "message": f"line {i}"}) + "\n")
        f.write('{"sequenceNumber": 30000, "message": "torn')  # no newline yet: not shown
    lines = path.read_bytes().count(b"\n")
    v = start_viewer(root)
    info = get(v.url + "/api/view/run", params={"run": "logs/long"}).json()
    assert info["logs"]["offset"] == path.read_bytes().rfind(b"\n") + 1  # live lines start after the last whole one
    last = get(v.url + "/api/view/logs", params={"run": "logs/long", "limit": 50}).json()
    assert [r["message"] for r in last["rows"]] == [f"line {i}" for i in range(29_950, 30_000)]
    assert last["total"] == lines and last["start"] == lines - 50 and last["offset"] == info["logs"]["offset"]
    assert [r["level"] for r in last["rows"]] == ["warn" if i % 7 == 0 else "info" for i in range(29_950, 30_000)]
    assert last["rows"][-1]["seq"] == 29_999
    found = get(v.url + "/api/view/logs", params={"run": "logs/long", "q": "line 29999"}).json()  # reads them all
    assert found["matched"] == 1 and found["rows"][0]["seq"] == 29_999
    again = get(v.url + "/api/view/logs", params={"run": "logs/long", "limit": 50}).json()
    assert again["rows"] == last["rows"] and again["total"] == lines - 1  # now counted exactly: one invalid line
    assert again["invalid"] == 1


def test_run_page_embeds_its_first_answers_as_inert_data(tmp_path: Path, start_viewer, monkeypatch) -> None:
    """The run page's HTML carries /api/view/run's and /api/view/logs's answers; no value can end the data block."""
    import html.parser

    root = tmp_path / ".dash"
    hostile = "</script><script>window.__pwned=4</script><!-- & \u2028\u2029 >"
    with Experiment("p/embed", dash_root=root, description=hostile) as e:
        e.params.set(note=hostile, lr=0.1)
        for i in range(1500):
            e.metrics("train").log(loss=1.0 / (i + 1), step=i, **{hostile: float(i % 7)})
        e.metrics("eval").log(acc=0.5, step=0)
        for i in range(300):
            e.logs.info(f"line {i}")
        e.logs.warn(hostile)
    monkeypatch.setenv("ML_DASH_VIEW_EMBED_MS", "60000")  # (however slow the machine: this test reads the blocks)
    v = start_viewer(root)
    page = get(v.url + "/run/p/embed")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"

    class Blocks(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.at: str | None = None
            self.blocks: dict[str, str] = {}
            self.scripts = 0

        def handle_starttag(self, tag: str, attrs: list) -> None:
            a = dict(attrs)
            if tag == "script" and a.get("type") == "application/json":
                self.at = a["id"]
                self.blocks[self.at] = ""
            elif tag == "script":
                self.scripts += 1

        def handle_data(self, data: str) -> None:
            if self.at:
                self.blocks[self.at] += data

        def handle_endtag(self, tag: str) -> None:
            self.at = None

    p = Blocks()
    p.feed(page.text)
    assert set(p.blocks) == {"mld-run", "mld-logs", "mld-series", *(f"mld-series-{i}" for i in range(3))}
    assert p.scripts == 2  # viewer.js and uPlot: nothing injected
    for text in p.blocks.values():
        assert not any(c in text for c in "<>&\u2028\u2029")
    # the first charts' data, in the page's order, each what the API answers for that chart at the index's width
    index = json.loads(p.blocks["mld-series"])
    streams = json.loads(p.blocks["mld-run"])["streams"]  # the page's order: streams as listed, their fields
    order = [[n, f] for n in streams for f in streams[n]["fields"] if f != "step"]
    assert index["run"] == "p/embed" and index["charts"] == order and len(order) == 3 and ["train", hostile] in order
    for i, (stream, field) in enumerate(index["charts"]):
        got = json.loads(p.blocks[f"mld-series-{i}"])
        assert got == get(v.url + "/api/view/series", params={"run": "p/embed", "stream": stream, "field": field,
                                                              "n": index["n"]}).json()
        assert got["runs"][0]["lastIndex"] == (0 if stream == "eval" else 1499)  # where its live rows resume
        assert got["mode"] == ("buckets" if stream == "train" else "raw")
    run = json.loads(p.blocks["mld-run"])
    logs = json.loads(p.blocks["mld-logs"])
    assert run == get(v.url + "/api/view/run", params={"run": "p/embed"}).json()
    assert run["params"]["note"] == hostile and run["description"] == hostile
    assert logs == get(v.url + "/api/view/logs", params={"run": "p/embed", "limit": 200}).json()
    assert len(logs["rows"]) == 200 and logs["rows"][-1]["message"] == hostile and logs["total"] == 301
    assert logs["offset"] == run["logs"]["offset"]  # the live tail resumes where the embedded lines end
    # a run that is not there: no data, the page asks the API and shows its answer
    missing = Blocks()
    missing.feed(get(v.url + "/run/p/none").text)
    assert missing.blocks == {}
    # a view other than the default one: its charts ask the API (at their own width)
    other = Blocks()
    other.feed(get(v.url + "/run/p/embed", params={"smooth": "ema:0.9"}).text)
    assert set(other.blocks) == {"mld-run", "mld-logs"}
