"""`ml-dash serve` serves the viewer at / behind its token: sign in once, then a session cookie."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from viewer_env import _env
from viewer_runs import small_runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(root: Path, token: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    p = subprocess.Popen([sys.executable, "-m", "ml_dash.cli", "serve", "--root", str(root), "--port", str(port),
                          "--token", token], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return p, url
        except httpx.HTTPError:
            time.sleep(0.2)
    p.kill()
    raise RuntimeError("ml-dash serve did not start")


def test_serve_viewer_needs_sign_in_and_never_writes(tmp_path: Path, page) -> None:
    root = tmp_path / "srv"
    small_runs(root, count=2)
    proc, url = _serve(root, "s3cret")
    try:
        assert httpx.get(url + "/api/view/runs", timeout=30).status_code == 401
        r = httpx.get(url + "/run/sweep/run-0", timeout=30)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
        bad = httpx.post(url + "/login", data={"token": "wrong", "next": "/"}, timeout=30)
        assert bad.status_code == 401 and "set-cookie" not in bad.headers
        ok = httpx.post(url + "/login", data={"token": "s3cret", "next": "//evil.example/"}, timeout=30)
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # never a redirect off this server
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        jar = {"ml_dash_session": ok.cookies["ml_dash_session"]}
        assert httpx.get(url + "/api/view/runs", cookies=jar, timeout=30).status_code == 200
        # the cookie opens the viewer's GET routes only: never the write API, never a write
        assert httpx.post(url + "/api/view/runs", cookies=jar, timeout=30).status_code == 405
        w = httpx.post(url + "/api/v1/experiments", json={"prefix": "x/y"}, cookies=jar, timeout=30)
        assert w.status_code == 401
        assert httpx.get(url + "/api/v1/experiments", headers={"authorization": "Bearer s3cret"},
                         timeout=30).status_code == 200
        # in the browser: sign in through the form, land on the page asked for, charts and live stream work
        page.page.goto(url + "/run/sweep/run-1")
        page.page.wait_for_selector("#token")
        page.page.fill("#token", "s3cret")
        page.page.click("#sign-in")
        page.page.wait_for_function("() => window.__mlDash && window.__mlDash.ready", timeout=90_000)
        assert page.page.url.endswith("/run/sweep/run-1")
        assert page.chart("train/loss")["runs"] == ["sweep/run-1"]
        page.page.wait_for_function("() => window.__mlDash.live && window.__mlDash.live.connected")
        cookies = page.ctx.cookies()
        assert [c for c in cookies if c["name"] == "ml_dash_session"][0]["httpOnly"] is True
        assert not page.errors, page.errors
    finally:
        proc.terminate()
        proc.wait(10)
