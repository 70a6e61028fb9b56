"""One server-sent-events stream per tab carrying all its subscriptions: new rows only, resumable.

A subscription is ``[prefix, kind, name, offset]`` with kind ``metrics`` (name = stream), ``logs`` or
``status``. Each event's id is the comma-joined byte offsets of every subscription, so a browser that
reconnects sends them back as ``Last-Event-ID`` and the stream resumes where it stopped: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from .data import MAX_MESSAGE, BadName, Source, parse_time

POLL = 0.1  # seconds between checks of the subscribed streams
IDLE_EVERY = 10  # a subscription quiet for long is checked once per this many polls (once a second)
PING = 15.0  # seconds of silence before a keep-alive comment
READ_LIMIT = 4 * 1024 * 1024  # bytes read per subscription per event; a backlog goes out as several events
MAX_SUBS = 2000


def parse_subs(raw: str | None) -> list[list[Any]]:
    try:
        subs = json.loads(raw or "[]")
    except ValueError:
        raise BadName("'subs' must be a JSON list of [prefix, kind, name, offset]") from None
    if not isinstance(subs, list) or len(subs) > MAX_SUBS:
        raise BadName(f"'subs' must be a JSON list of at most {MAX_SUBS} subscriptions")
    out = []
    for s in subs:
        if (not isinstance(s, list) or len(s) != 4 or not isinstance(s[0], str) or s[1] not in (
                "metrics", "logs", "status") or not isinstance(s[2], str) or not isinstance(s[3], int)
                or s[3] < 0):
            raise BadName(f"invalid subscription {s!r}: expected [prefix, 'metrics'|'logs'|'status', name, offset]")
        out.append(list(s))
    return out


def _metric_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d = r.get("data")
        row = dict(d) if isinstance(d, dict) else {}
        row["index"] = r.get("index")
        out.append(row)
    return out


def _log_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        msg = r.get("message")
        msg = msg if isinstance(msg, str) else str(msg)
        row = {"seq": r.get("sequenceNumber"), "ts": parse_time(r.get("timestamp")),
               "level": str(r.get("level") or "info").lower(), "message": msg[:MAX_MESSAGE]}
        if len(msg) > MAX_MESSAGE:
            row["truncated"] = len(msg)
        out.append(row)
    return out


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)


def _safe(obj: Any) -> Any:
    """NaN and infinities become null (JSON has no token for them)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_safe(v) for v in obj]
    return obj


async def events(root: Source, subs: list[list[Any]], last_id: str | None,
                 disconnected: Callable[[], Any], status_of: Callable[[str], str]) -> AsyncIterator[str]:
    if last_id:
        try:
            offs = [int(x) for x in last_id.split(",")]
        except ValueError:
            offs = []
        if len(offs) == len(subs):
            for s, o in zip(subs, offs, strict=True):
                s[3] = o
    memos: list[dict[str, Any]] = [{} for _ in subs]
    last_status: dict[str, str] = {}
    yield "retry: 1000\n\n"
    quiet_since = time.monotonic()
    batch = getattr(root, "batch", None)
    tick = 0

    def poll_all(due: list[int]) -> list[tuple[str, dict[str, Any], str]]:
        """One tick's checks in one thread hop (each run's folder resolved once)."""
        out = []
        with batch() if batch is not None else contextlib.nullcontext():
            for i in due:
                event = _poll(root, subs, i, memos[i], last_status, status_of)
                memos[i]["idle"] = 0 if event is not None or subs[i][1] == "status" else memos[i].get("idle", 0) + 1
                if event is not None:  # with every offset as of this event: its resume point
                    out.append((*event, ",".join(str(s[3]) for s in subs)))
        return out

    while True:
        if await disconnected():
            return
        # a subscription with nothing new for a while is checked less often: every tick for its first second of
        # quiet, then backing off to once per IDLE_EVERY ticks (a run that moves is checked every tick)
        due = [i for i in range(len(subs)) if _due(memos[i].get("idle", 0), tick)]
        tick += 1
        sent = False
        for kind, payload, eid in await asyncio.to_thread(poll_all, due) if due else []:
            yield f"event: {kind}\nid: {eid}\ndata: {_dumps(_safe(payload))}\n\n"
            sent = True
        if sent:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > PING:
            yield ": ping\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL)


def _due(idle: int, tick: int) -> bool:
    if idle < 10:
        return True
    return tick % min(IDLE_EVERY, 1 + idle // 10) == 0


def _poll(root: Source, subs: list[list[Any]], i: int, memo: dict[str, Any], last_status: dict[str, str],
          status_of: Callable[[str], str]) -> tuple[str, dict[str, Any]] | None:
    sub = subs[i]
    if sub[1] == "status":
        if not root.status_changed(sub[0], memo):
            return None
        st = status_of(sub[0])
        if st == last_status.get(sub[0]):
            return None
        last_status[sub[0]] = st
        return "status", {"k": i, "prefix": sub[0], "status": st}
    tail = root.tail(sub[0], sub[1], sub[2], sub[3], memo, READ_LIMIT)
    if tail is None:
        return None
    if not tail.rows and not tail.reset and not tail.invalid:
        sub[3] = tail.offset
        return None
    rows = _metric_rows(tail.rows) if sub[1] == "metrics" else _log_rows(tail.rows)
    sub[3] = tail.offset
    return sub[1], {"k": i, "rows": rows, "invalid": tail.invalid, "reset": tail.reset}
