"""The remote store: uploads a run's local `.dash` copy to an ``ml-dash serve`` server over HTTP (httpx).

Its replicator thread calls it batch by batch; every request is idempotent on the server (positions are
deduplicated per source), so a batch may be retried any number of times. Failures are classified here:
connection errors, timeouts, 408, 429 and 5xx raise `RetryLater` (retried with backoff, honouring
``Retry-After``); 401/403 raise `AuthError` (retried too, since a later ``ml-dash login`` or ``ml-dash sync``
may fix it); any other 4xx raises `PermanentError` (that batch is set aside in quarantine).

Several URLs (``"http://a:8000,http://b:8000"`` or a list: server processes sharing one database) make the store
fail over: a request that finds its server unreachable, timing out or answering 5xx is sent at once to the next
URL, round-robin, and later requests stay there; only when every URL failed does it raise `RetryLater`.
Exactly once still holds, since every server deduplicates by source and position in the same database.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from ..layout import source_id_file
from .base import PermanentError, RetryLater, Store

DEFAULT_TIMEOUT = 10.0
CREDENTIALS = ("~", ".dash", "credentials.json")


class AuthError(Exception):
    """401/403: the token is missing or wrong. Flush and close stop waiting; the data stays on disk."""

    fatal = True


# ---- tokens ---------------------------------------------------------------------------------------------------
def credentials_path() -> Path:
    return Path(os.path.expanduser(os.path.join(*CREDENTIALS)))


def _norm(url: str) -> str:
    return url.rstrip("/")


def parse_urls(url: str | Sequence[str]) -> list[str]:
    """The server URLs of ``dash_url``/``ML_DASH_API_URL``/``--url``: one, several separated by commas, or a list
    of them; each must look like http(s)://host[:port]. Duplicates are dropped, the order is kept."""
    items = url.split(",") if isinstance(url, str) else list(url)
    out: list[str] = []
    for raw in items:
        if not isinstance(raw, str):
            raise TypeError(f"a server URL must be a string, got {type(raw).__name__}")
        u = raw.strip()
        parts = urlsplit(u)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a server URL must look like http://host:port, got {raw!r}")
        try:
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError as e:
            raise ValueError(f"a server URL must look like http://host:port, got {raw!r} ({e})") from None
        if _norm(u) not in out:
            out.append(_norm(u))
    if not out:
        raise ValueError(f"no server URL in {url!r}")
    return out


def read_credentials() -> dict[str, Any]:
    try:
        obj = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def save_token(token: str, url: str | None = None) -> Path:
    """Store ``token`` (for ``url``, or as the default) in ~/.dash/credentials.json, mode 0600."""
    if not token or any(c.isspace() for c in token):
        raise ValueError("a token must be non-empty and hold no whitespace")
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    creds = read_credentials()
    if url:
        urls = parse_urls(url)  # several servers (failover): the token is for each of them
        for u in urls:
            creds.setdefault("servers", {})[u] = token
        creds["url"] = ",".join(urls)
    else:
        creds["token"] = token
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(creds, indent=2).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def resolve_token(url: str) -> str | None:
    """``ML_DASH_TOKEN``, else the token ``ml-dash login`` stored for this URL, else its default token."""
    env = os.environ.get("ML_DASH_TOKEN")
    if env:
        return env.strip()
    creds = read_credentials()
    servers = creds.get("servers")
    if isinstance(servers, dict) and isinstance(servers.get(_norm(url)), str):
        return str(servers[_norm(url)])
    tok = creds.get("token")
    return tok if isinstance(tok, str) else None


def default_url() -> str | None:
    """``ML_DASH_API_URL``, else the URL of the last ``ml-dash login --url``."""
    env = os.environ.get("ML_DASH_API_URL")
    if env:
        return env
    url = read_credentials().get("url")
    return url if isinstance(url, str) else None


def source_id(folder: str | os.PathLike[str] | None) -> str:
    """A stable id for one local `.dash` experiment folder (shared by every process writing it)."""
    if folder is None:
        return "anonymous"
    path = source_id_file(Path(folder))
    try:
        return path.read_text().strip() or "anonymous"
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    sid = uuid.uuid4().hex
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another process won the race
        for _ in range(50):
            text = path.read_text().strip()
            if text:
                return text
            time.sleep(0.01)
        return "anonymous"
    try:
        os.write(fd, sid.encode())
    finally:
        os.close(fd)
    return sid


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime  # (not imported by the commands that only read)

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# ---- the store ------------------------------------------------------------------------------------------------
class RemoteStore(Store):
    """Store for ``Experiment(prefix, dash_url="http://host:port")`` (or several URLs: see the module's doc)."""

    parallel_files = True  # the replicator may call write_file from several threads
    track_offsets = True  # write_tracks accepts offsets= and end= (per-entry journal positions)

    def __init__(self, url: str | Sequence[str], prefix: str, config: Any = None, *,
                 folder: str | os.PathLike[str] | None = None, token: str | None = None,
                 timeout: float | None = None) -> None:
        try:
            self.urls = parse_urls(url)
        except (TypeError, ValueError) as e:
            raise ValueError(f"dash_url: {e}") from None
        self._at = 0  # the URL requests go to now; moves on (round-robin) when that server fails
        self.prefix = prefix
        self.api = "/api/v1"
        self._exp = f"{self.api}/experiments/{quote(prefix, safe='')}"
        parts = urlsplit(self.urls[0])  # the cursors' key: the first URL, so a list stays one destination
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.key = f"remote-{parts.hostname}_{port}"
        self.tokens = {u: token if token is not None else resolve_token(u) for u in self.urls}
        self.token = self.tokens[self.urls[0]]
        if timeout is None:
            timeout = getattr(config, "remote_timeout", None) or float(os.environ.get("ML_DASH_REMOTE_TIMEOUT")
                                                                       or DEFAULT_TIMEOUT)
        self.timeout = float(timeout)
        self.source = source_id(folder)
        self.max_body = 32 * 1024 * 1024
        self.max_file: int | None = None
        self._client: Any = None
        self._params_version = 0

    @property
    def url(self) -> str:
        """The server requests go to now (the first URL until it fails)."""
        return self.urls[self._at % len(self.urls)]

    def __repr__(self) -> str:
        return f"RemoteStore({','.join(self.urls)!r}, {self.prefix!r})"

    # ---- HTTP ---------------------------------------------------------------------------------------------
    def _http(self) -> Any:
        if self._client is None:
            import httpx

            headers = {"User-Agent": "ml-dash"}
            t = self.timeout
            self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(t, connect=min(t, 5.0)),
                                        limits=httpx.Limits(max_connections=16, max_keepalive_connections=8))
        return self._client

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        """``method path`` on the current server; on a failure worth another server (unreachable, timeout, 5xx)
        the same request goes to the next URL at once, round-robin, and the store stays there."""
        n = len(self.urls)
        first = self._at % n
        failures: list[RetryLater] = []
        for k in range(n):
            i = (first + k) % n
            try:
                return self._request_one(self.urls[i], method, path, **kw)
            except RetryLater as e:
                if n == 1 or not (e.store_wide or isinstance(e, _ServerError)):
                    _drop_tracebacks(failures)
                    raise  # one server, or a 408/429 asking to slow down: not a reason to go elsewhere
                failures.append(e)
                if self._at % n == i:  # (another thread may have moved on already)
                    self._at = (i + 1) % n
        last = failures[-1]
        msg = f"all {n} servers failed: " + "; ".join(str(e) for e in failures)
        retry_after = max((e.retry_after for e in failures if e.retry_after is not None), default=None)
        store_wide = all(e.store_wide for e in failures)
        _drop_tracebacks(failures)
        raise RetryLater(msg, retry_after, store_wide=store_wide) from last

    def _request_one(self, base: str, method: str, path: str, **kw: Any) -> Any:
        import httpx

        client = self._http()
        token = self.tokens.get(base)
        headers = dict(kw.pop("headers", None) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for f in (kw.get("files") or {}).values():  # a file sent to a server before: from its start again
            f[1].seek(0)
        for attempt in (0, 1):
            try:
                r = client.request(method, base + path, headers=headers, **kw)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                # a kept-alive connection the server dropped: one immediate retry (requests are idempotent)
                if attempt or "files" in kw:
                    raise RetryLater(f"{base} unreachable: {type(e).__name__}: {e}", store_wide=True) from None
            except httpx.TimeoutException as e:
                raise RetryLater(f"{base} timed out after {self.timeout:g}s ({type(e).__name__})",
                                 store_wide=True) from None
            except httpx.TransportError as e:
                raise RetryLater(f"{base} unreachable: {type(e).__name__}: {e}", store_wide=True) from None
        code = r.status_code
        if code < 300:
            return r
        try:
            detail = r.json().get("detail")
        except (ValueError, AttributeError):
            detail = r.text[:200]
        where = f"{method} {base}{path}" if len(self.urls) > 1 else f"{method} {path}"
        if code in (401, 403):
            raise AuthError(f"{base} refused the request ({code}: {detail}). Authenticate with "
                            f"`ml-dash login --token TOKEN --url {base}` or set ML_DASH_TOKEN; the data stays "
                            "on disk and `ml-dash sync` uploads it later")
        if code >= 500:
            raise _ServerError(f"{where}: HTTP {code}: {detail}", _retry_after(r.headers.get("retry-after")))
        if code in (408, 429):
            raise RetryLater(f"{where}: HTTP {code}: {detail}", _retry_after(r.headers.get("retry-after")))
        raise PermanentError(f"{where}: HTTP {code}: {detail}")

    def _post_json(self, method: str, url: str, body: dict[str, Any]) -> Any:
        data = json.dumps(body, allow_nan=True, separators=(",", ":")).encode()
        if len(data) > self.max_body:
            raise _TooBig(len(data))
        return self._request(method, url, content=data, headers={"Content-Type": "application/json"})

    def _append(self, url: str, records: list[dict[str, Any]]) -> None:
        """POST a batch; one over the server's body limit is split in halves (positions make that safe), and
        only the records too large on their own are refused (PermanentError after the rest went out)."""
        refused: list[str] = []
        self._split(url, records, refused)
        if refused:
            raise PermanentError(f"{len(refused)} record(s) exceed the server's body limit of {self.max_body} "
                                 f"bytes ({refused[0]})")

    def _split(self, url: str, records: list[dict[str, Any]], refused: list[str]) -> None:
        try:
            self._post_json("POST", url, {"source": self.source, "records": records})
        except _TooBig as e:
            if len(records) <= 1:
                refused.append(f"one of {e.size} bytes")
                return
            half = len(records) // 2
            self._split(url, records[:half], refused)
            self._split(url, records[half:], refused)

    # ---- Store ---------------------------------------------------------------------------------------------
    def open(self, info: dict[str, Any]) -> None:
        r = self._post_json("POST", f"{self.api}/experiments",
                            {"prefix": self.prefix, "source": self.source, "info": info})
        limits = (r.json() or {}).get("limits") or {}
        if isinstance(limits.get("maxBodyBytes"), int):
            self.max_body = limits["maxBodyBytes"]
        if isinstance(limits.get("maxFileBytes"), int):
            self.max_file = limits["maxFileBytes"]

    def write_params(self, params: dict[str, Any]) -> None:
        self._params_version = max(self._params_version + 1, int(time.time() * 1000))
        self._post_json("PUT", f"{self._exp}/parameters",
                        {"source": self.source, "version": self._params_version, "data": params})

    def write_logs(self, records: list[dict[str, Any]]) -> None:
        self._append(f"{self._exp}/logs", records)

    def write_metrics(self, name: str, records: list[dict[str, Any]]) -> None:
        self._append(f"{self._exp}/metrics/{quote(name, safe='')}", records)

    def write_tracks(self, topic: str, records: list[dict[str, Any]], offset: int,
                     offsets: list[int] | None = None, end: int | None = None) -> None:
        url = f"{self._exp}/tracks/{quote(topic, safe='')}"
        refused: list[str] = []
        self._split_tracks(url, records, offset, offsets, end, refused)
        if refused:
            raise PermanentError(f"{len(refused)} track entr(ies) exceed the server's body limit of "
                                 f"{self.max_body} bytes ({refused[0]})")

    def _split_tracks(self, url: str, records: list[dict[str, Any]], offset: int, offsets: list[int] | None,
                      end: int | None, refused: list[str]) -> None:
        try:
            self._post_json("POST", url, {"source": self.source, "entries": records, "offset": offset,
                                          "end": end, "offsets": offsets})
        except _TooBig as e:
            if offsets is None or len(records) <= 1:
                refused.append(f"a batch of {e.size} bytes")
                return
            half = len(records) // 2
            self._split_tracks(url, records[:half], offsets[0], offsets[:half], offsets[half], refused)
            self._split_tracks(url, records[half:], offsets[half], offsets[half:], end, refused)

    def write_file(self, entry: dict[str, Any], path: str) -> None:
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise PermanentError(f"file {entry.get('filename')!r} is gone from {path} ({e})") from None
        if self.max_file is not None and size > self.max_file:
            raise PermanentError(f"file {entry.get('filename')!r} of {size} bytes exceeds the server's limit "
                                 f"of {self.max_file} bytes")
        meta = {k: v for k, v in entry.items() if k != "localPath"}
        with open(path, "rb") as f:
            self._request("POST", f"{self._exp}/files", data={"entry": json.dumps(meta)},
                          files={"file": (str(entry.get("filename") or "file"), f,
                                          str(entry.get("contentType") or "application/octet-stream"))})

    def set_status(self, info: dict[str, Any]) -> None:
        self._post_json("PUT", f"{self._exp}/status", {"source": self.source, "info": info})

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class _ServerError(RetryLater):
    """5xx: retried later, and first sent to the next server when there are several."""


class _TooBig(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _drop_tracebacks(errors: Sequence[BaseException]) -> None:
    """Errors kept in a list of the frame that raises: their tracebacks hold that frame (and with it the request's
    body), a cycle only the cyclic collector frees; a retried upload would keep every failed body until then."""
    for e in errors:
        e.__traceback__ = None
