"""Shared test set-up: every test gets its own working directory, so a default `.dash` lands in tmp; one headless
Chromium per session for the browser tests of every folder (Playwright's sync API runs once per thread: a second
`sync_playwright()` while the first is open fails, so no test starts its own)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path_factory, monkeypatch):
    work = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(work)
    monkeypatch.delenv("ML_DASH_ROOT", raising=False)
    for k in [k for k in os.environ if k.startswith("ML_DASH_")]:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ML_DASH_CACHE_DIR", str(work / ".ml-dash-cache"))  # the column cache, not ~/.cache
    yield


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "viewer"))
    from viewer_env import LAUNCH_ARGS, browser_path

    exe = browser_path()
    if exe is None:
        if os.environ.get("CI") or os.environ.get("ML_DASH_REQUIRE_BROWSER"):
            pytest.fail("no chromium-headless-shell in CI (.ci/run installs it with apt-get)")
        pytest.skip("no chromium-headless-shell on this machine (apt-get install chromium-headless-shell)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") or os.environ.get("ML_DASH_REQUIRE_BROWSER"):
            raise
        pytest.skip("the playwright package is not installed (pip install playwright; no `playwright install`)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=LAUNCH_ARGS)
        yield b
        b.close()
