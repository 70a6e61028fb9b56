"""`ml-dash export-html`: a static copy that opens from file:// with no server and no network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from viewer_env import _env
from viewer_runs import XSS_LOG, small_runs, spiky_run


def test_export_html_opens_offline_from_file_url(tmp_path: Path, page) -> None:
    root = tmp_path / ".dash"
    prefixes = small_runs(root, count=2)
    spikes = spiky_run(root, n=20_000)
    out = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "ml_dash.cli", "export-html", *prefixes, "proj/spiky", "--root",
                        str(root), "-o", str(out)], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (out / "index.html").is_file() and (out / "run-2.html").is_file() and (out / "static" / "app.js").is_file()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert size < 5 * 1024 * 1024
    pg = page.page
    pg.goto((out / "index.html").as_uri())
    pg.wait_for_function("() => window.__mlDash && window.__mlDash.ready", timeout=90_000)
    assert pg.inner_text("#run-count") == "3 of 3 runs"
    pg.click("a.run-link:has-text('proj/spiky')")
    pg.wait_for_function("() => window.__mlDash && window.__mlDash.ready && window.__mlDash.page === 'run'")
    c = page.chart("train/loss")
    assert c["yMax"] > 5.9 and c["approximate"] is True
    hi = pg.evaluate("() => { const ch = MLD.allCharts.find(c => c.id === 'train/loss');"
                     " return ch.u.data[ch.map[0].hi].filter(v => v > 3).length }")
    assert hi == len(spikes)
    pg.goto((out / "run-0.html").as_uri())
    pg.wait_for_function("() => window.__mlDash && window.__mlDash.ready")
    page.chart("train/loss")
    pg.wait_for_selector("#log-lines .log")
    assert XSS_LOG in pg.inner_text("#log-lines")
    pg.goto((out / "compare.html").as_uri())
    pg.wait_for_function("() => window.__mlDash && window.__mlDash.ready")
    assert len(page.chart("train/loss")["runs"]) == 3
    assert not page.errors, page.errors
    # refusing to overwrite, and a clear error for an unknown run
    again = subprocess.run([sys.executable, "-m", "ml_dash.cli", "export-html", "nope/run", "--root", str(root),
                            "-o", str(tmp_path / "other")], env=_env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "nope/run" in again.stderr
    full = subprocess.run([sys.executable, "-m", "ml_dash.cli", "export-html", prefixes[0], "--root", str(root),
                           "-o", str(out)], env=_env(), capture_output=True, text=True, timeout=60)
    assert full.returncode == 2 and "not an empty folder" in full.stderr
