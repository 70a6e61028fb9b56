"""Compare: switching single runs off and on (also inside a group); a logarithmic x axis; a run with 500 metrics
draws only the charts in view."""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path

from ml_dash import Experiment
from viewer_runs import small_runs

CHART = "MLD.allCharts.find(c => c.id === 'train/loss')"


def _ready(p) -> None:
    p.page.wait_for_function("() => window.__mlDash && window.__mlDash.ready", timeout=90_000)


def test_compare_switches_single_runs_off_and_on_in_groups_too(tmp_path: Path, start_viewer, page) -> None:
    root = tmp_path / ".dash"
    prefixes = small_runs(root, count=4)  # opt: sgd for run-0 and run-2, adam for run-1 and run-3
    v = start_viewer(root)
    pg = page.page
    pg.goto(v.url + "/compare?runs=" + ",".join(prefixes))
    _ready(page)
    assert sorted(page.chart("train/loss")["runs"]) == sorted(prefixes)
    pg.uncheck(".run-on[data-prefix='sweep/run-1']")
    pg.wait_for_function("() => window.__mlDash.charts.find(c => c.id === 'train/loss').runs.length === 3")
    assert "sweep/run-1" not in page.chart("train/loss")["runs"]
    assert "off=sweep/run-1" in pg.url
    pg.select_option("#group-by", "opt")
    pg.wait_for_function(f"() => {CHART}.data.runs.length === 2 && {CHART}.data.runs.every(r => r.members)")
    members = pg.evaluate(f"() => Object.fromEntries({CHART}.data.runs.map(r => [r.prefix, r.members]))")
    assert members == {"opt=sgd": ["sweep/run-0", "sweep/run-2"], "opt=adam": ["sweep/run-3"]}
    pg.check(".run-on[data-prefix='sweep/run-1']")
    pg.wait_for_function(f"() => {CHART}.data.runs.some(r => r.prefix === 'opt=adam' && r.members.length === 2)")
    assert "off=" not in pg.url
    # the state lives in the URL: a reload shows the same runs switched off
    pg.uncheck(".run-on[data-prefix='sweep/run-0']")
    pg.wait_for_function(f"() => {CHART}.data.runs.some(r => r.prefix === 'opt=sgd' && r.members.length === 1)")
    pg.reload()
    _ready(page)
    pg.wait_for_function(f"() => {CHART} && {CHART}.data && {CHART}.data.runs.length === 2")
    assert not pg.is_checked(".run-on[data-prefix='sweep/run-0']")
    members = pg.evaluate(f"() => Object.fromEntries({CHART}.data.runs.map(r => [r.prefix, r.members]))")
    assert members["opt=sgd"] == ["sweep/run-2"]
    assert not page.errors, page.errors


def _series(url: str, **q: str) -> dict:
    from urllib.parse import urlencode

    with urllib.request.urlopen(url + "/api/view/series?" + urlencode(q), timeout=30) as r:
        return json.loads(r.read())


def test_log_x_axis_buckets_evenly_on_the_log_scale(tmp_path: Path, start_viewer, page) -> None:
    root = tmp_path / ".dash"
    with Experiment("proj/logx", dash_root=root) as e:
        m = e.metrics("train")
        for i in range(20_000):
            m.log(step=i, loss=1.0 / (i + 1) + (3.0 if i == 7 else 0.0))
    v = start_viewer(root)
    d = _series(v.url, run="proj/logx", stream="train", field="loss", n="200", xlog="1")
    assert d["mode"] == "buckets" and d["xlog"] is True
    xs = d["x"]
    assert xs[0] > 0  # step 0 has no place on a log axis
    ratios = [b / a for a, b in zip(xs[len(xs) // 2:], xs[len(xs) // 2 + 1:], strict=False)]
    assert max(ratios) / min(ratios) < 1.01  # equal widths on the log scale (every bucket is filled there)
    assert max(v for v in d["runs"][0]["hi"] if v is not None) > 3.0  # the spike at step 7 is kept
    assert math.isclose(min(v for v in d["runs"][0]["lo"] if v is not None), 1 / 20_000)
    pg = page.page
    pg.goto(v.url + "/run/proj/logx")
    _ready(page)
    page.chart("train/loss")
    pg.check("#log-x")
    pg.wait_for_function(f"() => {CHART}.u && {CHART}.u.scales.x.distr === 3 && {CHART}.data.xlog")
    assert "logx=1" in pg.url
    assert page.chart("train/loss")["yMax"] > 3.0
    assert not page.errors, page.errors


def test_a_run_with_500_metrics_draws_only_the_charts_in_view(tmp_path: Path, start_viewer, page,
                                                              monkeypatch) -> None:
    root = tmp_path / ".dash"
    fields = [f"m{k:03d}" for k in range(500)]
    with Experiment("proj/wide", dash_root=root) as e:
        m = e.metrics("train")
        for i in range(20):
            m.log(step=i, **{f: i * 0.5 + k for k, f in enumerate(fields)})
    monkeypatch.setenv("ML_DASH_VIEW_EMBED_MS", "60000")  # (however slow the machine: the first screen is embedded)
    v = start_viewer(root)
    pg = page.page
    pg.goto(v.url + "/run/proj/wide")
    _ready(page)
    page.chart("train/m000")
    pg.wait_for_timeout(500)  # let anything that would load eagerly load
    assert pg.evaluate("() => document.querySelectorAll('[data-chart]').length") == 500
    drawn = len(page.charts())
    assert 0 < drawn <= 40, f"{drawn} charts drawn with a few in view"
    asked = pg.evaluate("() => performance.getEntriesByType('resource').map(r => r.name)"
                        ".filter(n => n.includes('/api/view/series') || n.includes('/api/view/multiseries'))")
    # the first screen's charts draw from the data in the page's HTML; any other chart in view asks with the
    # others that came into view together (one request, two if the browser reported them in two turns)
    assert len(asked) <= 2 and all("multiseries" in a for a in asked), asked
    assert not any("field=m000" in a for a in asked) and page.chart("train/m000")["points"] == 20
    for c in page.charts():
        assert c["points"] == 20 and c["yMin"] == float(fields.index(c["id"].split("/")[1])), c  # each its own field
    pg.eval_on_selector("[data-chart='train/m499']", "e => e.scrollIntoView()")
    page.chart("train/m499")
    drawn2 = len(page.charts())
    assert drawn2 <= drawn + 40, f"scrolling to the end drew {drawn2 - drawn} more charts: the ones passed too"
    assert not page.errors, page.errors


def test_logs_show_the_last_lines_first_then_earlier_ones_in_order(tmp_path: Path, start_viewer, page) -> None:
    root = tmp_path / ".dash"
    with Experiment("proj/logs", dash_root=root) as e:
        for i in range(450):
            e.logs.info(f"line {i}")
    v = start_viewer(root)
    pg = page.page
    pg.goto(v.url + "/run/proj/logs")
    _ready(page)
    msgs = "() => [...document.querySelectorAll('#log-lines .log .msg')].map(m => m.textContent)"
    # the last screen is shown first, the rest of the last 200 lines follows: in file order, the view at the end
    pg.wait_for_function("() => document.querySelectorAll('#log-lines .log').length === 200")
    assert pg.evaluate(msgs) == [f"line {i}" for i in range(250, 450)]
    assert pg.evaluate("() => { const l = document.querySelector('#log-lines');"
                       " return l.scrollTop + l.clientHeight >= l.scrollHeight - 2; }")
    pg.click("#log-earlier")
    pg.wait_for_function("() => document.querySelectorAll('#log-lines .log').length === 400")
    assert pg.evaluate(msgs) == [f"line {i}" for i in range(50, 450)]
    pg.click("#log-earlier")
    pg.wait_for_function("() => document.querySelectorAll('#log-lines .log').length === 450")
    assert pg.evaluate(msgs) == [f"line {i}" for i in range(450)]  # each line once
    assert pg.is_disabled("#log-earlier")
    assert not page.errors, page.errors


def test_many_runs_keep_their_min_max_band_and_its_spikes_in_range(tmp_path: Path, start_viewer, page) -> None:
    root = tmp_path / ".dash"
    prefixes = [f"many/run-{k:02d}" for k in range(21)]  # above 20 runs the bands are filled by hand
    for k, p in enumerate(prefixes):
        with Experiment(p, dash_root=root) as e:
            m = e.metrics("train")
            for i in range(1000):
                m.log(step=i, loss=1.0 + k * 0.01 + (50.0 if (k == 0 and i == 501) else 0.0))
    v = start_viewer(root)
    pg = page.page
    pg.goto(v.url + "/compare?runs=" + ",".join(prefixes))
    _ready(page)
    c = page.chart("train/loss")
    assert sorted(c["runs"]) == prefixes and c["yMax"] == 51.0  # the spike is in the band, so in the chart
    got = pg.evaluate(f"""() => {{ const ch = {CHART}; const m = ch.map[0];
        return [ch.data.mode, m.band[0].filter(v => v > 50).length, ch.u.data[m.y].filter(v => v > 50).length,
                ch.u.scales.y.max] }}""")
    mode, in_band, on_line, ymax = got
    assert mode == "buckets" and in_band == 1 and on_line == 0, got  # the line (last per bucket) misses it
    assert ymax >= 51.0, got  # the y range holds the band: the spike is not cut off
    with pg.expect_download() as dl:
        pg.click("[data-chart='train/loss'] button:has-text('CSV')")
    head, *rows = Path(dl.value.path()).read_text().splitlines()
    cols = head.split(",")
    assert "many/run-00 max" in cols and "many/run-20 min" in cols, head  # the bands are in the CSV too
    assert max(float(r.split(",")[cols.index("many/run-00 max")]) for r in rows) == 51.0
    assert not page.errors, page.errors
