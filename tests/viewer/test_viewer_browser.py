"""The viewer in a real headless Chromium: every page, the test hooks, zoom, live push, compare, safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ml_dash import Experiment
from viewer_env import _env
from viewer_runs import XSS_LOG, XSS_PARAM, small_runs, spiky_run


def _ready(p) -> None:
    p.page.wait_for_function("() => window.__mlDash && window.__mlDash.ready", timeout=90_000)


def test_runs_table_filter_sort_and_untrusted_text(tmp_path: Path, start_viewer, page) -> None:
    root = tmp_path / ".dash"
    small_runs(root, count=4)
    spiky_run(root, n=200)
    v = start_viewer(root)
    page.page.goto(v.url + "/")
    _ready(page)
    pg = page.page
    assert pg.inner_text("#run-count") == "5 of 5 runs"
    assert XSS_PARAM in pg.inner_text("#runs-table")  # shown as written, never as markup
    pg.fill("#filter", "lr<0.005 tag:ablation")
    pg.wait_for_function("() => document.querySelector('#run-count').textContent.startsWith('1 of')")
    assert [r.get_attribute("data-prefix") for r in pg.query_selector_all(".vrows .vrow")] == ["sweep/run-3"]
    pg.fill("#filter", "status:COMPLETED run-[12]$")
    pg.wait_for_function("() => document.querySelector('#run-count').textContent.startsWith('2 of')")
    assert "filter=" in pg.url  # the view state lives in the URL
    pg.fill("#filter", "")
    pg.click(".vhead .vcell:has-text('lr')")
    pg.click(".vhead .vcell:has-text('lr')")  # descending
    first = pg.query_selector(".vrows .vrow").get_attribute("data-prefix")
    assert first == "sweep/run-0"  # lr 0.1 is the largest
    pg.check(".vrow[data-prefix='sweep/run-0'] input.sel")
    pg.check(".vrow[data-prefix='sweep/run-1'] input.sel")
    pg.click("#compare")
    pg.wait_for_url("**/compare?runs=*")
    _ready(page)
    page.chart("train/loss")
    assert pg.evaluate("() => window.__pwned") is None
    assert not page.errors, page.errors


def test_run_page_charts_band_logs_tracks_and_hooks(tmp_path: Path, start_viewer, page) -> None:
    root = tmp_path / ".dash"
    spikes = spiky_run(root, n=20_000)
    small_runs(root, count=1)
    v = start_viewer(root)
    page.page.goto(v.url + "/run/proj/spiky")
    _ready(page)
    c = page.chart("train/loss")
    assert c["runs"] == ["proj/spiky"] and c["approximate"] is False
    assert c["yMax"] > 5.9 and 0 < c["points"] <= 1400  # bucketed to the chart's width, spikes in the band
    band_hi = page.page.evaluate("() => { const ch = MLD.allCharts.find(c => c.id === 'train/loss');"
                                 " return ch.u.data[ch.map[0].hi].filter(v => v > 3).length }")
    assert band_hi == len(spikes)  # 11 of 11 spikes drawn
    marks = page.page.evaluate("() => performance.getEntriesByName('chart:train/loss:drawn').length")
    assert marks >= 1
    # zoom: drag over a small part of the plot: every chart re-queries at full detail
    box = page.page.query_selector("[data-chart='train/loss'] .u-over").bounding_box()
    page.page.mouse.move(box["x"] + box["width"] * 0.50, box["y"] + 20)
    page.page.mouse.down()
    page.page.mouse.move(box["x"] + box["width"] * 0.505, box["y"] + 20, steps=4)
    page.page.mouse.up()
    page.page.wait_for_function("() => MLD.state.xmin !== null && MLD.allCharts[0].data.mode === 'raw'")
    zoomed = page.chart("train/loss")
    assert zoomed["points"] < 400 and "xmin=" in page.page.url
    # a run with logs, tracks and params: text stays text
    page.page.goto(v.url + "/run/sweep/run-0")
    _ready(page)
    page.chart("train/acc")
    page.page.wait_for_selector("#log-lines .log")
    assert XSS_LOG in page.page.inner_text("#log-lines")
    assert page.page.evaluate("() => window.__pwned") is None
    page.page.wait_for_function("() => window.__mlDash.trajectories === 1")
    page.page.fill("#log-search", "done")
    page.page.wait_for_function("() => document.querySelector('#log-count').textContent.startsWith('1 of 2')")
    page.page.click("#log-lines .log")  # jump to its time on the charts
    page.page.wait_for_function("() => MLD.state.x === 'wall' && window.__mlDash.marker > 0")
    assert "0.1" in page.page.inner_text("#params-table")
    # keyboard: ? opens the help, d toggles dark mode, l log scale
    page.page.keyboard.press("?")
    assert page.page.is_visible("#help")
    page.page.keyboard.press("Escape")
    dark = page.page.evaluate("() => document.body.classList.contains('dark')")
    page.page.keyboard.press("d")
    assert page.page.evaluate("() => document.body.classList.contains('dark')") != dark
    page.page.keyboard.press("l")
    page.page.wait_for_function("() => location.search.includes('log=1')")
    with page.page.expect_download() as dl:
        page.page.click("[data-chart='train/acc'] button:has-text('CSV')")
    text = Path(dl.value.path()).read_text()
    assert text.splitlines()[0].startswith("x,sweep/run-0") and len(text.splitlines()) > 40
    assert not page.errors, page.errors


def test_live_rows_are_pushed_over_one_stream(tmp_path: Path, start_viewer, page) -> None:
    root = tmp_path / ".dash"
    script = textwrap.dedent(f"""
        import sys, time
        from ml_dash import Experiment
        with Experiment("live/run", dash_root={str(root)!r}) as e:
            for i in range(10):
                e.metrics("train").log(loss=1.0 / (i + 1), step=i)
            e.flush()
            print("ready", flush=True)
            sys.stdin.readline()
            for i in range(10, 60):
                e.metrics("train").log(loss=1.0 / (i + 1), step=i)
                e.logs.info(f"row {{i}}")
                time.sleep(0.02)
            e.flush()
            sys.stdin.readline()
    """)
    w = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=_env())
    try:
        assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        v = start_viewer(root)
        page.page.goto(v.url + "/run/live/run")
        _ready(page)
        c = page.chart("train/loss")
        assert c["points"] == 10
        page.page.wait_for_function("() => window.__mlDash.live && window.__mlDash.live.connected")
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
        page.page.wait_for_function(
            "() => window.__mlDash.charts.find(c => c.id === 'train/loss').points === 60", timeout=90_000)
        page.page.wait_for_function("() => document.querySelectorAll('#log-lines .log').length === 50")
        streams = page.page.evaluate(
            "() => performance.getEntriesByType('resource').filter(r => r.name.includes('/api/view/live')).length")
        assert streams <= 1  # one event stream for the tab (an open stream may not be listed yet)
        w.stdin.write("done\n")
        w.stdin.flush()
        w.wait(30)
        page.page.wait_for_function("() => document.querySelector('#run-status').textContent === 'COMPLETED'",
                                    timeout=90_000)
    finally:
        w.kill()
    assert not page.errors, page.errors


def test_compare_groups_diff_and_parallel_coordinates(tmp_path: Path, start_viewer, page) -> None:
    root = tmp_path / ".dash"
    prefixes = small_runs(root, count=4)
    v = start_viewer(root)
    page.page.goto(v.url + "/compare?runs=" + ",".join(prefixes))
    _ready(page)
    c = page.chart("train/loss")
    assert sorted(c["runs"]) == sorted(prefixes)
    assert page.page.evaluate("() => window.__mlDash.parallel.lines") == 4
    diff = page.page.inner_text("#params-diff")
    assert "lr" in diff and "depth" in diff
    page.page.select_option("#group-by", "opt")
    page.page.wait_for_function("() => window.__mlDash.charts.find(c => c.id === 'train/loss').runs.length === 2")
    assert sorted(page.chart("train/loss")["runs"]) == ["opt=adam", "opt=sgd"]
    assert "group=opt" in page.page.url
    assert not page.errors, page.errors


def test_system_metrics_get_their_own_section(tmp_path: Path, start_viewer, page) -> None:
    root = tmp_path / ".dash"
    with Experiment("sys/run", dash_root=root, system_metrics=0.1) as e:
        for i in range(5):
            e.metrics("train").log(loss=1.0 / (i + 1), step=i)
            time.sleep(0.1)
    v = start_viewer(root)
    page.page.goto(v.url + "/run/sys/run")
    _ready(page)
    page.page.wait_for_selector("#stream-sys [data-chart^='sys/']")
    sections = page.page.eval_on_selector_all("section h2", "hs => hs.map(h => h.textContent)")
    assert sections.index("System (sys)") > sections.index("Metrics: train")
    page.page.eval_on_selector("#stream-sys", "e => e.scrollIntoView()")
    cid = page.page.get_attribute("#stream-sys [data-chart^='sys/']", "data-chart")
    assert page.chart(cid)["points"] >= 1
    assert not page.errors, page.errors


def test_files_gallery_preview_and_download(tmp_path: Path, start_viewer, page) -> None:
    root = tmp_path / ".dash"
    with Experiment("files/run", dash_root=root) as e:
        for step in (0, 10, 20):
            img = np.zeros((8, 8, 3), dtype=np.uint8)
            img[..., 0] = step * 10
            e.files("samples").save_image(img, to=f"sample_{step}.png", metadata={"step": step})
        e.files("results").save_json({"acc": 0.9, "note": XSS_LOG}, to="summary.json")
        e.files("results").save_text("<b>not bold</b>", to="evil.html")
    v = start_viewer(root)
    page.page.goto(v.url + "/run/files/run")
    _ready(page)
    pg = page.page
    pg.wait_for_selector("#gallery-step")
    pg.wait_for_function("() => document.querySelector('#gallery-image').naturalWidth === 8")
    assert "step 20" in pg.inner_text("#gallery-label")
    pg.fill("#gallery-step", "0")
    pg.wait_for_function("() => document.querySelector('#gallery-label').textContent.includes('step 0')")
    pg.click("#files-table tr:has-text('summary.json') button:has-text('preview')")
    pg.wait_for_function("() => document.querySelector('#file-preview').textContent.includes('\"acc\": 0.9')")
    assert XSS_LOG.replace('"', '\\"') in pg.inner_text("#file-preview")
    with pg.expect_download() as dl:
        pg.click("#files-table tr:has-text('evil.html') a:has-text('download')")
    assert Path(dl.value.path()).read_text() == "<b>not bold</b>"
    assert pg.evaluate("() => window.__pwned") is None
    assert not page.errors, page.errors


def test_live_rows_continue_the_charts_drawn_from_the_html(tmp_path: Path, start_viewer, page, monkeypatch) -> None:
    """Rows written while the page loads: the chart drawn from the data in the HTML goes on with the live rows,
    none missing and none twice."""
    root = tmp_path / ".dash"
    script = textwrap.dedent(f"""
        import sys, time
        from ml_dash import Experiment
        with Experiment("live/embed", dash_root={str(root)!r}) as e:
            for i in range(20):
                e.metrics("train").log(loss=float(i), step=i)
            e.flush()
            print("ready", flush=True)
            for i in range(20, 400):
                e.metrics("train").log(loss=float(i), step=i)
                if i % 10 == 0:
                    e.flush()
                time.sleep(0.005)
            e.flush()
            sys.stdin.readline()
    """)
    monkeypatch.setenv("ML_DASH_VIEW_EMBED_MS", "60000")
    w = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=_env())
    try:
        assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        v = start_viewer(root)
        page.page.goto(v.url + "/run/live/embed")
        page.chart("train/loss")
        page.page.wait_for_function(
            "() => window.__mlDash.charts.find(c => c.id === 'train/loss').points >= 400", timeout=90_000)
        page.page.wait_for_timeout(300)  # (a row shown twice would come with the others)
        c = page.chart("train/loss")
        assert c["points"] == 400 and c["yMin"] == 0 and c["yMax"] == 399, c
        xs = page.page.evaluate("() => MLD.allCharts.find(c => c.id === 'train/loss').cols[0]")
        assert xs == list(range(400))  # every step once, in order
        asked = page.page.evaluate("() => performance.getEntriesByType('resource').map(r => r.name)")
        assert not [u for u in asked if "series?" in u], asked  # drawn first from the page's HTML
        assert w.stdin is not None
        w.stdin.write("done\n")
        w.stdin.flush()
        w.wait(30)
    finally:
        w.kill()
    assert not page.errors, page.errors


@pytest.mark.parametrize("embed_ms", ["60000", "0"])
def test_run_page_starts_from_the_answers_in_its_html(tmp_path: Path, start_viewer, page, monkeypatch,
                                                     embed_ms: str) -> None:
    """The run page's info and last log lines come in its HTML: no request for them, hostile text stays text.
    With no wait for them (0 ms) the page asks the API, which hands over the answers under way."""
    root = tmp_path / ".dash"
    small_runs(root, count=1)
    monkeypatch.setenv("ML_DASH_VIEW_EMBED_MS", embed_ms)
    v = start_viewer(root)
    page.page.goto(v.url + "/run/sweep/run-0")
    _ready(page)
    page.page.wait_for_selector("#log-lines .log")
    assert XSS_LOG in page.page.inner_text("#log-lines") and page.page.evaluate("() => window.__pwned") is None
    asked = page.page.evaluate("() => performance.getEntriesByType('resource').map(r => r.name)")
    api = [u for u in asked if "/api/view/run?" in u or "/api/view/logs?" in u]
    assert len(api) == (0 if embed_ms != "0" else 2), asked
    # the charts on the first screen too (drawn from their data in the HTML); without it they ask the server
    page.chart("train/loss")
    page.chart("val/acc")
    asked = page.page.evaluate("() => performance.getEntriesByType('resource').map(r => r.name)")
    series = [u for u in asked if "/api/view/series?" in u or "/api/view/multiseries?" in u]
    assert (not series) if embed_ms != "0" else len(series) >= 1, series
    assert page.page.evaluate("() => document.querySelectorAll('script[type=\"application/json\"]').length") == 0
    page.page.fill("#log-search", "done")  # a later question is asked of the server
    page.page.wait_for_function("() => document.querySelector('#log-count').textContent.startsWith('1 of 2')")
    assert "adam" not in page.page.inner_text("#params-table") and "0.1" in page.page.inner_text("#params-table")
    assert not page.errors, page.errors
