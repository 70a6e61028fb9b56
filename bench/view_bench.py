"""Viewer benchmark: the issue's targets P1-P13 in headless Chromium against a real `ml-dash view` process.

    python bench/view_bench.py [--scale 1.0] [--repeat 5] [--only P1,P3]

Data is written by ml-dash itself (the SDK for metrics, the layout's JSONL for the 10,000-run table and the
1M log lines). Chromium is the system's chromium-headless-shell driven by Playwright. Prints a table of medians;
docs/viewer.md records a run of it. --scale 0.1 makes every dataset ten times smaller (a quick check).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "packages" / "core" / "src"))
ENV = dict(os.environ, PYTHONPATH=str(REPO / "packages" / "core" / "src"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


class Viewer:
    def __init__(self, root: Path, cache: Path | None = None) -> None:
        env = dict(ENV)
        if cache is not None:
            env["ML_DASH_CACHE_DIR"] = str(cache)
        self.proc = subprocess.Popen([sys.executable, "-m", "ml_dash.cli", "view", str(root), "--port", "0",
                                      "--no-open"], stdout=subprocess.PIPE, env=env, text=True)
        assert self.proc.stdout is not None
        self.url = re.search(r"http://\S+", self.proc.stdout.readline()).group(0).rstrip("/")  # type: ignore[union-attr]

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_metric_run(root: Path, prefix: str, n: int, spikes: int = 0, offset: float = 0.0) -> None:
    """A run written by the SDK (its first row, params, status), then grown to ``n`` rows in the same line
    format (writing a million rows through log() would dominate the benchmark's time on a small machine)."""
    from ml_dash import Experiment

    at = {round(i * (n - 1) / (spikes - 1)) for i in range(spikes)} if spikes else set()
    with Experiment(prefix, dash_root=root) as e:
        e.params.set(lr=0.001, seed=len(prefix))
        e.metrics("train").log(step=0, loss=1.0 + offset + (5.0 if 0 in at else 0.0))
    path = root.joinpath(*prefix.split("/"), "metrics", "train", "data.jsonl")
    t0 = time.time()
    with open(path, "a") as f:
        for start in range(1, n, 100_000):
            f.write("".join(json.dumps({"index": i, "data": {
                "loss": math.exp(-i / n) + offset + (5.0 if i in at else 0.0), "step": i, "_ts": t0 + i * 1e-3},
                "createdAt": "2026-01-01T00:00:00.000000Z"}) + "\n" for i in range(start, min(n, start + 100_000))))


def write_table_runs(root: Path, count: int, params: int) -> None:
    for k in range(count):
        d = root / "table" / f"run-{k:05d}"
        d.mkdir(parents=True)
        (d / "experiment.json").write_text(json.dumps({"name": d.name, "project": "table", "status": "COMPLETED",
                                                        "tags": ["ablation"] if k % 3 == 0 else [],
                                                        "created_at": "2026-01-01T00:00:00Z",
                                                        "endedAt": "2026-01-01T01:00:00Z"}))
        (d / "parameters.json").write_text(json.dumps({"version": 1, "data": {f"p{j}": (k * 7 + j) % 101 / 100
                                                                             for j in range(params)}}))


def write_log_run(root: Path, n: int) -> None:
    from ml_dash import Experiment

    with Experiment("logs/big", dash_root=root) as e:
        e.logs.info("start")
    path = root / "logs" / "big" / "logs" / "logs.jsonl"
    with open(path, "a") as f:
        for i in range(1, n):
            f.write(json.dumps({"sequenceNumber": i, "timestamp": "2026-01-01T00:00:00.000000Z",
                                "level": "warn" if i % 97 == 0 else "info",
                                "message": f"step {i} loss {1 / (i + 1):.6f} batch {i % 512}"}) + "\n")


def mark_time(page: Any, name: str, timeout: float = 120_000) -> float:
    page.wait_for_function(f"() => performance.getEntriesByName({name!r}).length > 0", timeout=timeout)
    return page.evaluate(f"() => performance.getEntriesByName({name!r})[0].startTime")


def exact_time(page: Any, cid: str = "train/loss") -> float:
    """When the chart was first drawn from exact data (a cold read first shows a sampled preview)."""
    page.wait_for_function(f"() => (window.__mlDash.charts || []).some(c => c.id === {cid!r} && !c.approximate)",
                           timeout=300_000)
    return page.evaluate(f"() => performance.getEntriesByName('chart:{cid}:drawn').at(-1).startTime")


def new_page(browser: Any) -> Any:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    return ctx, ctx.new_page()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    want = lambda p: only is None or p in only  # noqa: E731
    big = max(1000, int(1_000_000 * a.scale))
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    tmp = Path(tempfile.mkdtemp(prefix="view-bench-"))
    rows: list[tuple[str, str, str]] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=ARGS)
            root = tmp / "one"
            if want("P1") or want("P2") or want("P3") or want("P7") or want("P13"):
                t0 = time.perf_counter()
                write_metric_run(root, "big/run", big, spikes=11)
                print(f"wrote {big} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
                cold, preview, warm, spikes, zoom = [], [], [], [], []
                for _ in range(a.repeat):
                    v = Viewer(root, cache=tmp / f"cache-{time.monotonic_ns()}")
                    ctx, page = new_page(browser)
                    page.goto(v.url + "/run/big/run")
                    preview.append(mark_time(page, "chart:train/loss:drawn"))
                    cold.append(exact_time(page))
                    page.reload()
                    warm.append(exact_time(page))
                    spikes.append(page.evaluate("() => { const c = MLD.allCharts.find(c => c.id === 'train/loss');"
                                                " return c.u.data[c.map[0].hi].filter(v => v > 3).length }"))
                    lo, hi = page.evaluate("() => [MLD.allCharts[0].data.x[0], MLD.allCharts[0].data.x.at(-1)]")
                    t = page.evaluate(f"""() => new Promise(res => {{
                        const t0 = performance.now(); const n = performance.getEntriesByName('chart:train/loss:drawn').length;
                        MLD.zoom({lo + (hi - lo) * 0.5}, {lo + (hi - lo) * 0.51});
                        const poll = () => performance.getEntriesByName('chart:train/loss:drawn').length > n ?
                            res(performance.now() - t0) : requestAnimationFrame(poll);
                        poll(); }})""")
                    zoom.append(t)
                    ctx.close()
                    if want("P13") and _ == 0:
                        rss_one = v.rss_mb()
                    v.close()
                rows += [("P1", f"first chart, {big:,} rows, warm", f"{median(warm):.0f} ms"),
                         ("P2", f"first chart, {big:,} rows, cold (fresh server and cache): first draw; exact",
                          f"{median(preview):.0f} ms; {median(cold):.0f} ms"),
                         ("P3", f"spikes kept of 11, {big:,} rows", f"{min(spikes)}/11"),
                         ("P7", "zoom to 1 % → full-detail redraw", f"{median(zoom):.0f} ms")]
            if want("P4") or want("P13"):
                root4 = tmp / "many"
                nruns, nrows = 100, max(100, int(10_000 * a.scale))
                for r in range(nruns):
                    write_metric_run(root4, f"many/run-{r:03d}", nrows, offset=r / 100)
                runs = ",".join(f"many/run-{r:03d}" for r in range(nruns))
                cold4, warm4, reqs = [], [], []
                for _ in range(a.repeat):
                    v = Viewer(root4, cache=tmp / f"cache4-{time.monotonic_ns()}")
                    ctx, page = new_page(browser)
                    page.goto(v.url + "/compare?runs=" + runs + "&only=train/loss")
                    cold4.append(exact_time(page))
                    page.reload()
                    warm4.append(exact_time(page))
                    reqs.append(page.evaluate("() => performance.getEntriesByType('resource')"
                                              ".filter(r => r.name.includes('/api/view/series')).length"))
                    if want("P13") and _ == 0:
                        # the 1M-row run cached in the same process as well
                        if root.exists():
                            page.goto(v.url.replace("/compare", "") + "/")
                        rss = v.rss_mb()
                    ctx.close()
                    v.close()
                rows += [("P4", f"{nruns} runs × {nrows:,} rows in one chart, warm / cold",
                          f"{median(warm4):.0f} ms / {median(cold4):.0f} ms, {max(reqs)} series request(s)")]
                if want("P13"):
                    rows.append(("P13", "server RSS after P4 (100 runs cached)", f"{rss:.0f} MB"))
                    if root.exists():
                        rows.append(("P13", f"server RSS after one {big:,}-row run", f"{rss_one:.0f} MB"))
            if want("P5"):
                root5 = tmp / "live"
                script = textwrap.dedent(f"""
                    import sys, time
                    from ml_dash import Experiment
                    exps = [Experiment(f"live/run-{{k}}", dash_root={str(root5)!r}) for k in range(10)]
                    for e in exps:
                        e.run.start(); e.metrics("train").log(step=0, loss=1.0)
                    for e in exps: e.flush()
                    print("ready", flush=True); sys.stdin.readline()
                    t0 = time.time()
                    i = 1
                    while time.time() - t0 < 15:
                        for e in exps: e.metrics("train").log(step=i, loss=1.0 / (i + 1))
                        i += 1
                        time.sleep(0.05)
                    for e in exps: e.run.complete()
                """)
                w = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
                assert w.stdout is not None and w.stdin is not None
                w.stdout.readline()
                v = Viewer(root5)
                ctx, page = new_page(browser)
                cdp = ctx.new_cdp_session(page)
                cdp.send("Network.enable")
                live_ids: set[str] = set()
                live_bytes = [0]
                cdp.on("Network.requestWillBeSent",
                       lambda e: live_ids.add(e["requestId"]) if "/api/view/live" in e["request"]["url"] else None)
                cdp.on("Network.dataReceived",
                       lambda e: live_bytes.__setitem__(0, live_bytes[0] + e["dataLength"])
                       if e["requestId"] in live_ids else None)
                page.goto(v.url + "/compare?runs=" + ",".join(f"live/run-{k}" for k in range(10)) + "&only=train/loss")
                mark_time(page, "chart:train/loss:drawn")
                files = list(root5.rglob("metrics/train/data.jsonl"))
                before = sum(f.stat().st_size for f in files)
                page.wait_for_timeout(300)
                live_bytes[0] = 0
                page.evaluate("""() => { window.__lat = []; let last = 0;
                    const tick = () => { const c = window.__mlDash.charts.find(c => c.id === 'train/loss');
                      if (c && c.lastTs && c.lastTs !== last) { last = c.lastTs; window.__lat.push(Date.now() / 1000 - c.lastTs); }
                      requestAnimationFrame(tick); }; tick(); }""")
                w.stdin.write("go\n")
                w.stdin.flush()
                w.wait(60)
                page.wait_for_timeout(500)
                appended = sum(f.stat().st_size for f in files) - before
                lat = sorted(page.evaluate("() => window.__lat"))
                p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
                rows.append(("P5", "log() → pixel, 10 live runs at 20 rows/s", f"p50 {p(0.5):.0f} ms, p95 {p(0.95):.0f} ms"
                             f" ({len(lat)} samples)"))
                rows.append(("P6", "live bytes received / bytes appended to the streams (15 s, 10 runs)",
                             f"{live_bytes[0] / 1024:.0f} KB / {appended / 1024:.0f} KB"))
                ctx.close()
                v.close()
            if want("P8"):
                static = REPO / "packages" / "core" / "src" / "ml_dash" / "viewer" / "static"
                files = [f for f in static.rglob("*") if f.suffix in (".js", ".css")]
                raw = sum(f.stat().st_size for f in files)
                gz = sum(len(gzip.compress(f.read_bytes(), 9)) for f in files)
                rows.append(("P8", "all JS + CSS", f"{gz / 1024:.0f} KB gzip ({raw / 1024:.0f} KB raw)"))
            if want("P9"):
                root9 = tmp / "wide"
                n9 = max(100, int(2_000 * a.scale))
                script = textwrap.dedent(f"""
                    from ml_dash import Experiment
                    with Experiment("wide/run", dash_root={str(root9)!r}) as e:
                        m = e.metrics("train")
                        for i in range({n9}):
                            m.log(step=i, **{{f"m{{k:03d}}": (i % 97) * 0.01 + k for k in range(500)}})
                """)
                subprocess.run([sys.executable, "-c", script], env=ENV, check=True, capture_output=True)
                v = Viewer(root9)
                first9, long9, drawn9 = [], [], []
                for _ in range(a.repeat):
                    ctx, page = new_page(browser)
                    page.add_init_script("""window.__long = []; new PerformanceObserver((l) => {
                        for (const e of l.getEntries()) window.__long.push([e.startTime, e.duration]); })
                        .observe({ type: "longtask", buffered: true });""")
                    page.goto(v.url + "/run/wide/run")
                    page.wait_for_function("""() => { const cards = [...document.querySelectorAll('[data-chart]')]
                        .filter(c => { const r = c.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; });
                        return cards.length && cards.every(c => performance.getEntriesByName('chart:' + c.dataset.chart + ':drawn').length); }""",
                                           timeout=120_000)
                    first9.append(page.evaluate("() => Math.max(...performance.getEntriesByType('mark')"
                                                ".filter(m => m.name.startsWith('chart:')).map(m => m.startTime))"))
                    t_scroll = page.evaluate("() => performance.now()")
                    page.evaluate("""() => new Promise(res => { const step = () => {
                        if (innerHeight + scrollY >= document.body.scrollHeight - 2) return setTimeout(res, 1000);
                        scrollBy(0, 600); setTimeout(step, 50); }; step(); })""")
                    long9.append(page.evaluate(f"() => Math.max(0, ...window.__long.filter(e => e[0] >= {t_scroll})"
                                               ".map(e => e[1]))"))
                    drawn9.append(page.evaluate("() => window.__mlDash.charts.length"))
                    ctx.close()
                v.close()
                rows.append(("P9", f"run with 500 metrics ({n9:,} rows): first screen drawn; longest task while "
                             "scrolling to the end; charts drawn in all",
                             f"{median(first9):.0f} ms; {median(long9):.0f} ms; {max(drawn9)} of 500"))
            if want("P10"):
                root10 = tmp / "table"
                n10 = max(100, int(10_000 * a.scale))
                write_table_runs(root10, n10, 30)
                v = Viewer(root10)
                t10, filt = [], []
                for _ in range(a.repeat):
                    ctx, page = new_page(browser)
                    page.goto(v.url + "/")
                    t10.append(mark_time(page, "runs:rendered"))
                    t = page.evaluate("""() => new Promise(res => { const f = document.querySelector('#filter');
                        const t0 = performance.now(); f.value = 'p3<0.5 tag:ablation'; f.dispatchEvent(new Event('input'));
                        requestAnimationFrame(() => res(performance.now() - t0)); })""")
                    filt.append(t)
                    ctx.close()
                v.close()
                rows.append(("P10", f"runs table, {n10:,} runs × 30 params; filter keystroke → rows",
                             f"{median(t10):.0f} ms; {median(filt):.0f} ms"))
            if want("P11"):
                root11 = tmp / "logs"
                n11 = max(1000, int(1_000_000 * a.scale))
                write_log_run(root11, n11)
                v = Viewer(root11)
                t11, rx = [], []
                for _ in range(a.repeat):
                    ctx, page = new_page(browser)
                    page.goto(v.url + "/run/logs/big")
                    t11.append(mark_time(page, "logs:shown"))
                    t = page.evaluate("""() => new Promise(res => {
                        const n = performance.getEntriesByName('logs:shown').length;
                        document.querySelector('#log-regex').checked = true;
                        const s = document.querySelector('#log-search'); const t0 = performance.now();
                        s.value = 'step 9+5 loss'; s.dispatchEvent(new Event('input'));
                        const poll = () => performance.getEntriesByName('logs:shown').length > n ?
                            res(performance.now() - t0 - 150) : setTimeout(poll, 5); poll(); })""")
                    rx.append(t)
                    ctx.close()
                v.close()
                rows.append(("P11", f"{n11:,} log lines: last screen; regex search",
                             f"{median(t11):.0f} ms; {median(rx):.0f} ms"))
            if want("P12"):
                root12 = tmp / "export"
                script = textwrap.dedent(f"""
                    import math
                    from ml_dash import Experiment
                    for r in range(10):
                        with Experiment(f"exp/run-{{r}}", dash_root={str(root12)!r}) as e:
                            m = e.metrics("train")
                            for i in range({max(100, int(10_000 * a.scale))}):
                                m.log(step=i, **{{f"m{{k}}": math.sin(i / 50 + k + r) for k in range(20)}})
                """)
                subprocess.run([sys.executable, "-c", script], env=ENV, check=True, capture_output=True)
                out = tmp / "site"
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "ml_dash.cli", "export-html", *[f"exp/run-{r}" for r in range(10)],
                                "--root", str(root12), "-o", str(out)], env=ENV, check=True, capture_output=True)
                dt = time.perf_counter() - t0
                size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
                ctx, page = new_page(browser)
                blocked: list[str] = []
                page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else (
                    blocked.append(r.request.url), r.abort()))
                page.goto((out / "compare.html").as_uri())
                mark_time(page, "chart:train/m0:drawn")
                ctx.close()
                rows.append(("P12", "static export, 10 runs × 20 metrics",
                             f"{dt:.1f} s, {size / 1e6:.1f} MB, opens offline ({len(blocked)} blocked requests)"))
            browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n| # | what | measured (median of {a.repeat}, scale {a.scale}) |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
