"""The viewer inside `ml-dash serve`, on each engine (the `.dash` folder and PostgreSQL): the same answers from
its JSON routes for runs logged through the server, live rows over server-sent events, and the page in a real
browser."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from ml_dash import Experiment
from serverproc import TOKEN

AUTH = {"authorization": f"Bearer {TOKEN}"}


def get(server: Any, path: str, **params: Any) -> Any:
    r = httpx.get(server.url + path, params=params, headers=AUTH, timeout=60)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def _runs(server: Any, local: Path) -> None:
    for i, lr in enumerate((0.1, 0.01)):
        with Experiment(f"proj/run{i}", dash_root=local, dash_url=server.url, tags=["t"] if i else []) as exp:
            exp.params.set(lr=lr, model={"depth": 3})
            for s in range(300):
                exp.metrics("train").log(step=s, loss=1.0 / (s + 1), note="x" if s == 7 else None)
            exp.metrics("eval/sub").log(step=299, acc=0.5 + i, bad=math.inf)
            exp.tracks("robot/pos").append(_ts=1.0, x=1.5)
            exp.tracks("robot/pos").append(_ts=2.0, x=2.5)
            exp.logs.info("hello")
            exp.logs.warning("careful: 1 < 2")
            exp.files("docs").save_text("some text\n", to="notes.txt")


def test_viewer_routes_answer_alike_on_each_engine(server: Any, tmp_path: Path) -> None:
    _runs(server, tmp_path / "local")
    runs = {r["prefix"]: r for r in get(server, "/api/view/runs", metrics="train/loss")["runs"]}
    assert set(runs) == {"proj/run0", "proj/run1"}
    r1 = runs["proj/run1"]
    assert r1["status"] == "COMPLETED" and r1["tags"] == ["t"] and r1["params"]["lr"] == 0.01
    assert r1["params"]["model.depth"] == 3 and r1["start"] > 1e9 and r1["duration"] >= 0
    assert r1["metrics"]["train/loss"] == {"last": 1 / 300, "min": 1 / 300, "max": 1.0}

    info = get(server, "/api/view/run", run="proj/run0")
    assert set(info["streams"]) == {"train", "eval/sub"}
    train = info["streams"]["train"]
    assert train["rows"] == 300 and "loss" in train["fields"] and train["nonNumeric"] == ["note"]
    assert info["topics"] == ["robot/pos"] and info["files"] == 1
    assert info["logs"]["total"] == 2
    many = get(server, "/api/view/runinfo", run=["proj/run0", "proj/run1", "proj/none"])
    assert [r["prefix"] for r in many["runs"]] == ["proj/run0", "proj/run1"] and len(many["notes"]) == 1

    s = get(server, "/api/view/series", run=["proj/run0", "proj/run1"], stream="train", field="loss", n=1000)
    assert s["mode"] == "raw" and s["x"] == list(range(300))
    assert s["runs"][0]["y"] == [1.0 / (k + 1) for k in range(300)] and s["runs"][1]["rows"] == 300
    b = get(server, "/api/view/series", run="proj/run0", stream="train", field="loss", n=10)
    assert b["mode"] == "buckets" and b["runs"][0]["hi"][0] == 1.0
    sub = get(server, "/api/view/series", run="proj/run0", stream="eval/sub", field="acc")
    assert sub["runs"][0]["y"] == [0.5]
    grouped = get(server, "/api/view/series", run=["proj/run0", "proj/run1"], stream="train", field="loss",
                  group="lr")
    assert sorted(g["prefix"] for g in grouped["runs"]) == ["lr=0.01", "lr=0.1"]

    logs = get(server, "/api/view/logs", run="proj/run0")
    assert [r["message"] for r in logs["rows"]] == ["hello", "careful: 1 < 2"] and logs["total"] == 2
    assert [r["level"] for r in get(server, "/api/view/logs", run="proj/run0", level="warn")["rows"]] == ["warn"]

    tr = get(server, "/api/view/track", run="proj/run0", topic="robot/pos")
    assert tr["rows"] == 2 and tr["columns"]["x"] == [1.5, 2.5] and tr["numeric"] == ["x"]

    files = get(server, "/api/view/files", run="proj/run0")["files"]
    assert [f["filename"] for f in files] == ["notes.txt"]
    pre = get(server, "/api/view/file", run="proj/run0", id=files[0]["id"], preview="1")
    assert pre["text"] == "some text\n" and pre["truncated"] is False
    raw = httpx.get(server.url + "/api/view/file", params={"run": "proj/run0", "id": files[0]["id"]}, headers=AUTH,
                    timeout=60)
    assert raw.status_code == 200 and raw.content == b"some text\n" and "attachment" in raw.headers[
        "content-disposition"]

    # bad names and unknown runs: 400 and 404, never a 500
    for path, params, code in [("/api/view/run", {"run": "proj/none"}, 404), ("/api/view/run", {"run": "../x"}, 400),
                               ("/api/view/track", {"run": "proj/run0", "topic": "nope"}, 404),
                               ("/api/view/file", {"run": "proj/run0", "id": "nope"}, 404),
                               ("/api/view/logs", {"run": "proj/none"}, 404)]:
        r = httpx.get(server.url + path, params=params, headers=AUTH, timeout=60)
        assert r.status_code == code, (path, params, r.status_code, r.text)
    assert httpx.get(server.url + "/api/view/runs", timeout=60).status_code == 401


def _sse(url: str, subs: list[Any], last_id: str | None, seconds: float) -> tuple[list[dict[str, Any]], str | None]:
    headers = dict(AUTH)
    if last_id:
        headers["last-event-id"] = last_id
    events: list[dict[str, Any]] = []
    eid = last_id
    deadline = time.monotonic() + seconds
    with httpx.stream("GET", url + "/api/view/live", params={"subs": json.dumps(subs)}, headers=headers,
                      timeout=30) as r:
        assert r.status_code == 200
        cur: dict[str, Any] = {}
        for line in r.iter_lines():
            if line.startswith("event: "):
                cur["event"] = line[7:]
            elif line.startswith("id: "):
                eid = line[4:]
            elif line.startswith("data: "):
                cur["data"] = json.loads(line[6:])
            elif not line and cur:
                events.append(cur)
                cur = {}
            if time.monotonic() > deadline:
                break
    return events, eid


def test_live_rows_resume_without_gaps_or_duplicates(server: Any, tmp_path: Path) -> None:
    e = Experiment("live/run", dash_root=tmp_path / "local", dash_url=server.url)
    e.run.start()
    e.metrics("train").log(loss=0.0, step=0)
    e.logs.info("first")
    e.flush()
    deadline = time.monotonic() + 30
    while get(server, "/api/view/run", run="live/run")["streams"].get("train", {}).get("rows") != 1:
        assert time.monotonic() < deadline, "the first row never reached the server"
        time.sleep(0.2)
    info = get(server, "/api/view/run", run="live/run")
    stop = threading.Event()

    def write() -> None:
        i = 1
        while not stop.is_set():
            e.metrics("train").log(loss=float(i), step=i)
            if i % 10 == 0:
                e.logs.info(f"line {i}")
            i += 1
            time.sleep(0.01)

    t = threading.Thread(target=write)
    t.start()
    try:
        subs = [["live/run", "metrics", "train", info["streams"]["train"]["offset"]],
                ["live/run", "logs", "", info["logs"]["offset"]], ["live/run", "status", "", 0]]
        first, eid = _sse(server.url, subs, None, 2.5)
        second, _ = _sse(server.url, subs, eid, 2.5)  # a reconnect sends the last id back
    finally:
        stop.set()
        t.join()
        e.run.complete()
    steps = [r["step"] for ev in first + second if ev.get("event") == "metrics" for r in ev["data"]["rows"]]
    assert len(steps) > 10
    assert steps == list(range(1, len(steps) + 1))  # no gap, no duplicate across the reconnect
    lines = [r["message"] for ev in first + second if ev.get("event") == "logs" for r in ev["data"]["rows"]]
    assert lines and lines == [f"line {10 * (k + 1)}" for k in range(len(lines))]
    assert any(ev.get("event") == "status" and ev["data"]["status"] == "RUNNING" for ev in first)


def test_run_page_in_a_browser(server: Any, tmp_path: Path, browser: Any) -> None:
    _runs(server, tmp_path / "local")
    external: list[str] = []
    errors: list[str] = []

    def route(r: Any) -> None:
        u = urlparse(r.request.url)
        if u.scheme in ("data", "blob") or u.hostname in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})  # the session's browser (tests/conftest.py)
    try:
        ctx.set_default_timeout(90_000)  # waits end when their condition holds; test machines are slow at times
        page = ctx.new_page()
        page.route("**/*", route)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/run/proj/run1")
        page.wait_for_selector("#token")
        page.fill("#token", TOKEN)
        page.click("#sign-in")
        page.wait_for_function("() => window.__mlDash && window.__mlDash.ready", timeout=90_000)
        page.wait_for_function("() => (window.__mlDash.charts || []).some(c => c.id === 'train/loss')",
                               timeout=90_000)
        chart = page.evaluate("() => Object.assign({}, window.__mlDash.charts.find(c => c.id === 'train/loss'))")
        assert chart["runs"] == ["proj/run1"]
        page.wait_for_function("() => window.__mlDash.live && window.__mlDash.live.connected", timeout=90_000)
        page.goto(server.url + "/")
        page.wait_for_function("() => window.__mlDash && window.__mlDash.ready", timeout=90_000)
        assert "proj/run0" in page.content() and "proj/run1" in page.content()
    finally:
        ctx.close()
    assert not errors, errors
    assert not external, external


def test_a_viewer_session_holds_on_every_server_process(make_server: Any, tmp_path: Path) -> None:
    """Behind a load balancer each request may reach another process: a session one issued opens the others
    (same tokens), survives a restart, and a forged or tampered cookie opens none."""
    a, b = make_server(), make_server()
    ok = httpx.post(a.url + "/login", data={"token": TOKEN, "next": "/"}, timeout=60)
    assert ok.status_code == 303
    jar = {"ml_dash_session": ok.cookies["ml_dash_session"]}
    for s in (a, b):
        assert httpx.get(s.url + "/api/view/runs", cookies=jar, timeout=60).status_code == 200
    b.stop()
    b.start()
    assert httpx.get(b.url + "/api/view/runs", cookies=jar, timeout=60).status_code == 200
    exp, nonce, sig = jar["ml_dash_session"].split(".")
    for forged in (f"{int(exp) + 999}.{nonce}.{sig}", f"{exp}.{nonce}.{'0' * len(sig)}", "x", "1.2", ""):
        r = httpx.get(b.url + "/api/view/runs", cookies={"ml_dash_session": forged}, timeout=60)
        assert r.status_code == 401, forged
    other = make_server(token="another-token")  # a server with other tokens refuses it
    assert httpx.get(other.url + "/api/view/runs", cookies=jar, timeout=60).status_code == 401
