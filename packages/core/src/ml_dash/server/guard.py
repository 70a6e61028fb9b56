"""The ASGI layer in front of the routes: prefix-path decoding, bearer-token auth, body limits, fault injection.

Names travel as single percent-encoded path segments (``proj%2Fexp``, as GitLab's API encodes project paths),
so the router sees an encoded ``/`` as the unit separator ``\\x1f`` (a character no valid name contains) and
the handlers turn it back into ``/``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SEP = "\x1f"
PUBLIC = {"/health", "/api/v1/openapi.json"}
_EXPERIMENTS = "/api/v1/experiments/"
AUTH_HINT = ("send 'Authorization: Bearer <token>'; from Python, run `ml-dash login --token TOKEN --url URL` "
             "or set ML_DASH_TOKEN")


def decode_path(raw: bytes) -> str:
    """Percent-decode each segment; an encoded '/' inside a segment becomes SEP. Raises ValueError."""
    segs = []
    for seg in raw.split(b"/"):
        text = unquote_to_bytes(seg).decode("utf-8")
        if SEP in text:
            raise ValueError("control character in path")
        segs.append(text.replace("/", SEP))
    return "/".join(segs)


async def send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
                + (headers or [])})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """Wraps the Starlette app. ``fault_every``/``stall_every`` are testing aids (see ``ml-dash serve --help``)."""

    def __init__(self, app: ASGIApp, tokens: list[str], *, max_body: int, max_file: int,
                 fault_every: int = 0, stall_every: int = 0, stall_seconds: float = 0.0) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens]
        self.max_body = max_body
        self.max_file = max_file
        self.fault_every = fault_every
        self.stall_every = stall_every
        self.stall_seconds = stall_seconds
        self._faults = 0
        self._stalls = 0
        self.metric_append: Callable[[Scope, Receive, Send, str, str], Awaitable[None]] | None = None
        """``POST /api/v1/experiments/{prefix}/metrics/{name}``, the route every training run calls most, served
        here without the router and its middleware (set by `app.create_app`; the same work and answers)."""

    def _authorized(self, scope: Scope) -> bool:
        if not self.tokens:
            return True
        for k, v in scope.get("headers") or []:
            if k == b"authorization":
                scheme, _, cred = bytes(v).partition(b" ")
                if scheme.lower() != b"bearer":
                    return False
                cred = cred.strip()
                ok = False
                for t in self.tokens:  # compare against every token: no early exit timing
                    ok = hmac.compare_digest(cred, t) or ok
                return ok
        return False

    def _limit(self, scope: Scope) -> int:
        if scope.get("method") == "POST" and scope["path"].endswith("/files"):
            return self.max_file + 1024 * 1024  # room for the entry part and the multipart framing
        return self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path")
        if raw:
            try:
                scope["path"] = decode_path(bytes(raw).split(b"?", 1)[0])
            except ValueError:
                await send_json(send, 400, {"detail": "the path is not valid UTF-8 once percent-decoded, or "
                                                      "holds a control character"})
                return
        path = scope["path"]
        if path in PUBLIC:
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            await send_json(send, 401, {"detail": "missing or invalid bearer token; " + AUTH_HINT},
                            [(b"www-authenticate", b'Bearer realm="ml-dash"')])
            return
        limit = self._limit(scope)
        scope.setdefault("state", {})["ml_dash_limit"] = limit
        for k, v in scope.get("headers") or []:
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = -1
                if n < 0 or n > limit:
                    await send_json(send, 413, {"detail": f"request body of {n} bytes exceeds the limit of "
                                                          f"{limit} bytes"}, [(b"connection", b"close")])
                    return
        if self.stall_every:
            self._stalls += 1
            if self._stalls % self.stall_every == 0:
                await asyncio.sleep(self.stall_seconds)
        if self.fault_every:
            self._faults += 1
            if self._faults % self.fault_every == 0:
                if (self._faults // self.fault_every) % 2:  # odd faults: refuse before doing anything
                    await send_json(send, 500, {"detail": "injected fault (--fault-every)"})
                    return
                # even faults: do the work, then lose the answer (a retry must not store it twice)
                async def swallow(message: Message) -> None:
                    return None

                await self.app(scope, receive, swallow)
                await send_json(send, 500, {"detail": "injected fault after handling (--fault-every)"})
                return
        if self.metric_append is not None and scope.get("method") == "POST" and path.startswith(_EXPERIMENTS):
            parts = path[len(_EXPERIMENTS):].split("/")
            if len(parts) == 3 and parts[1] == "metrics" and parts[0] and parts[2]:
                await self.metric_append(scope, receive, send, parts[0].replace(SEP, "/"),
                                         parts[2].replace(SEP, "/"))
                return
        await self.app(scope, receive, send)
