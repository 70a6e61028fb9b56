"""Fixtures for the viewer tests: a real `ml-dash view` process on loopback and one headless Chromium per session
(Debian's chromium-headless-shell driven by Playwright; never a downloaded browser). Every page blocks and
records any request that would leave the machine."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from viewer_env import BROWSERS, LAUNCH_ARGS, REPO, _env, browser_path  # noqa: F401


class Viewer:
    def __init__(self, root: Path, *extra: str) -> None:
        self.root = root
        self.proc = subprocess.Popen([sys.executable, "-m", "ml_dash.cli", "view", str(root), "--port", "0",
                                      "--no-open", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=_env())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"http://[^\s]+", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"ml-dash view printed no URL: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.url = m.group(0).rstrip("/")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def start_viewer() -> Iterator[Any]:
    started: list[Viewer] = []

    def start(root: Path, *extra: str) -> Viewer:
        v = Viewer(root, *extra)
        started.append(v)
        return v

    yield start
    for v in started:
        v.close()


class Page:
    """A browser page that refuses every request not to loopback or file://, and remembers them."""

    def __init__(self, browser: Any) -> None:
        self.ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        self.ctx.set_default_timeout(90_000)  # waits end when their condition holds; test machines are slow at times
        self.page = self.ctx.new_page()
        self.external: list[str] = []
        self.errors: list[str] = []
        self.page.route("**/*", self._route)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def _route(self, route: Any) -> None:
        u = urlparse(route.request.url)
        if u.scheme in ("file", "data", "blob") or u.hostname in ("127.0.0.1", "localhost", "::1", "[::1]"):
            route.continue_()
        else:
            self.external.append(route.request.url)
            route.abort()

    def charts(self) -> list[dict[str, Any]]:
        return self.page.evaluate("() => window.__mlDash.charts.map(c => Object.assign({}, c))")

    def chart(self, cid: str, timeout: float = 90_000) -> dict[str, Any]:
        self.page.wait_for_function(f"() => (window.__mlDash.charts || []).some(c => c.id === {cid!r})",
                                    timeout=timeout)
        return next(c for c in self.charts() if c["id"] == cid)


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    p = Page(browser)
    yield p
    p.ctx.close()
    assert not p.external, f"the page tried to reach outside the machine: {p.external}"
