"""The viewer inside ``ml-dash serve``: the same pages at ``/``, behind the server's token.

A browser signs in once on ``/login`` with the token and gets an HttpOnly, SameSite=Strict session cookie
(``EventSource`` cannot send an ``Authorization`` header). The cookie opens the viewer's GET routes only; the
write API under ``/api/v1`` still wants the bearer token, so a cookie can never be used to write.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

COOKIE = "ml_dash_session"
SESSION_SECONDS = 7 * 24 * 3600
MAX_SESSIONS = 10_000
PAGES = ("/", "/compare", "/login", "/logout")
PREFIXES = ("/run/", "/api/view/", "/static/")


def is_viewer_path(path: str) -> bool:
    return path in PAGES or path.startswith(PREFIXES)


class Sessions:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = [t.encode() for t in tokens]
        # sessions are signed, not remembered: every server process holding the same tokens accepts a session any
        # of them issued (a load balancer may send each request elsewhere), and a restart keeps it
        self._key = hashlib.sha256(b"ml-dash viewer session\0" + b"\0".join(sorted(self.tokens))).digest()
        self._dropped: OrderedDict[str, None] = OrderedDict()  # signed out on this process

    def token_ok(self, token: str) -> bool:
        ok = False
        for t in self.tokens:  # every token compared: no early exit timing
            ok = hmac.compare_digest(token.encode(), t) or ok
        return ok

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def new(self) -> str:
        body = f"{int(time.time() + SESSION_SECONDS)}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._sign(body)}"

    def _session_ok(self, value: str) -> bool:
        body, _, sig = value.rpartition(".")
        exp = body.partition(".")[0]
        if not body or not exp.isdigit() or not hmac.compare_digest(sig, self._sign(body)):
            return False
        return int(exp) > time.time() and value not in self._dropped

    def valid(self, scope: Any) -> bool:
        for k, v in scope.get("headers") or []:
            if k == b"cookie":
                for part in bytes(v).decode("latin-1").split(";"):
                    name, _, value = part.strip().partition("=")
                    if name == COOKIE and self._session_ok(value):
                        return True
            elif k == b"authorization":
                scheme, _, cred = bytes(v).decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and self.token_ok(cred.strip()):
                    return True
        return False

    def drop(self, scope: Any) -> None:
        for k, v in scope.get("headers") or []:
            if k == b"cookie":
                for part in bytes(v).decode("latin-1").split(";"):
                    name, _, value = part.strip().partition("=")
                    if name == COOKIE:
                        self._dropped[value] = None
                        while len(self._dropped) > MAX_SESSIONS:
                            self._dropped.popitem(last=False)


def _safe_next(target: str | None) -> str:
    """Only a path on this server (never '//host' or a scheme) may be the place to go after signing in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_page(next_path: str, error: str = "") -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ml-dash · sign in</title>"
            "<link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main class=\"login\">"
            "<h1>ml-dash</h1><p>Sign in with the server's token (the one given to <code>ml-dash serve "
            "--token</code>).</p>"
            + (f"<p class=\"note warn\">{escape(error)}</p>" if error else "") +
            "<form method=\"post\" action=\"/login\">"
            f"<input type=\"hidden\" name=\"next\" value=\"{escape(next_path)}\">"
            "<input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" "
            "placeholder=\"token\" autofocus required> <button type=\"submit\" id=\"sign-in\">sign in</button>"
            "</form></main></body></html>")


class ViewerGate:
    """In front of the server: viewer paths go to the viewer (signed in by cookie), everything else to ``api``."""

    def __init__(self, api: Any, root: str | Path | Any, tokens: list[str]) -> None:
        """``root``: the `.dash` folder the viewer reads, or any `data.Source`."""
        from .app import SecurityHeaders, error_handlers, routes

        self.api = api
        self.sessions = Sessions(tokens)
        self.open = not tokens
        r, _ = routes(root)
        r += [Route("/login", self.login_form, methods=["GET"]), Route("/login", self.login, methods=["POST"]),
              Route("/logout", self.logout, methods=["GET", "POST"])]
        self.viewer = SecurityHeaders(Starlette(routes=r, exception_handlers=error_handlers()))

    async def login_form(self, request: Request) -> Response:
        if self.open:
            return RedirectResponse("/", 303)
        return HTMLResponse(login_page(_safe_next(request.query_params.get("next"))))

    async def login(self, request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token") or "")
        nxt = _safe_next(str(form.get("next") or "/"))
        if not self.open and not self.sessions.token_ok(token):
            return HTMLResponse(login_page(nxt, "That token is not accepted by this server."), 401)
        resp = RedirectResponse(nxt, 303)
        resp.set_cookie(COOKIE, self.sessions.new(), max_age=SESSION_SECONDS, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
        return resp

    async def logout(self, request: Request) -> Response:
        self.sessions.drop(request.scope)
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not is_viewer_path(path):
            await self.api(scope, receive, send)
            return
        method = scope.get("method", "GET")
        public = path.startswith("/static/") or path == "/login"
        if method not in ("GET", "HEAD") and path not in ("/login", "/logout"):
            await JSONResponse({"detail": "the viewer is read-only"}, 405)(scope, receive, send)
            return
        if public or self.open or self.sessions.valid(scope):
            await self.viewer(scope, receive, send)
            return
        if path.startswith("/api/view/"):
            resp: Response = JSONResponse({"detail": "sign in at /login with the server's token"}, 401)
        else:
            qs = scope.get("query_string", b"").decode("latin-1")
            resp = RedirectResponse("/login?next=" + quote(path + ("?" + qs if qs else ""), safe=""), 303)
        await resp(scope, receive, send)
