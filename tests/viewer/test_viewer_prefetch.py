"""A compare page's request starts reading its runs' metric streams (side by side, `colcache.read_many`) before
the page asks for them: against a real `ml-dash view` process, its column cache fills without a series request."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from viewer_runs import small_runs


def test_compare_page_reads_its_runs_streams_ahead(tmp_path: Path, start_viewer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ML_DASH_CACHE_DIR", str(cache))
    prefixes = small_runs(tmp_path / ".dash", count=4, rows=300)
    v = start_viewer(tmp_path / ".dash")
    r = httpx.get(v.url + "/compare", params={"runs": ",".join(prefixes)}, timeout=60)
    assert r.status_code == 200
    deadline = time.monotonic() + 60
    entries: list[Path] = []
    while time.monotonic() < deadline:
        entries = list(cache.rglob("*.cols"))
        if len(entries) >= 2 * len(prefixes):  # train and val of each run
            break
        time.sleep(0.1)
    assert len(entries) == 2 * len(prefixes), entries
