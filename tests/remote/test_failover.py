"""Several server URLs (`dash_url`, `ML_DASH_API_URL`, `ml-dash sync --url`, comma-separated or a list): a request
whose server is unreachable or answers 5xx goes at once to the next URL, round-robin, and the client stays there;
a 4xx is not a reason to go elsewhere. (Several processes on one database with a writer killed mid-run:
test_two_servers.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import rt
from ml_dash import Experiment, load
from ml_dash.buffer import BufferConfig
from ml_dash.stores.base import PermanentError, RetryLater
from ml_dash.stores.remote import RemoteStore, default_url, parse_urls, resolve_token, save_token


@pytest.fixture
def engine() -> str:
    return "folder"  # the client's behaviour; each server keeps its own folder, so each answer is visible


def _rows(k: int, n: int) -> list[dict[str, Any]]:
    return [{"index": i, "data": {"v": i}} for i in range(k, k + n)]


def _stored(server: Any, prefix: str) -> list[int]:
    return [r["data"]["v"] for r in load(prefix, dash_root=server.root).metrics("m").read()]


def test_parse_urls() -> None:
    assert parse_urls(" http://a:1/, https://b ,http://a:1") == ["http://a:1", "https://b"]
    assert parse_urls(["http://a:1", "http://b:2"]) == ["http://a:1", "http://b:2"]
    for bad in ("", " , ", "ftp://a", "http://a:1,nohost", "http://a:port"):
        with pytest.raises(ValueError, match="URL"):
            parse_urls(bad)


def test_login_with_several_urls_stores_the_token_for_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ML_DASH_TOKEN")
    monkeypatch.delenv("ML_DASH_API_URL", raising=False)
    save_token("tok-1", "http://a:1, http://b:2/")
    assert resolve_token("http://a:1") == resolve_token("http://b:2") == "tok-1"
    assert default_url() == "http://a:1,http://b:2"
    assert RemoteStore(default_url(), "p/r").tokens == {"http://a:1": "tok-1", "http://b:2": "tok-1"}


def test_fails_over_on_5xx_and_unreachable_and_goes_back_round_robin(make_server: Any, tmp_path: Path) -> None:
    a = make_server("--fault-every", "1")  # every request to a answers 500
    b = make_server()
    store = RemoteStore([a.url, b.url], "proj/fo", folder=tmp_path / "run")
    try:
        store.open({})
        assert store.url == b.url  # a's 500 sent the request on to b, and the store stays there
        store.write_metrics("m", _rows(0, 10))
        assert store.url == b.url and _stored(b, "proj/fo") == list(range(10))
        with pytest.raises(PermanentError):  # a refusal for good goes nowhere else
            store.write_metrics("m", [{"index": "x", "data": {}}])
        assert store.url == b.url
        b.kill()
        a.stop()
        a.extra = []  # a is healthy again, b is gone: round-robin back to a
        a.start()
        store.write_metrics("m", _rows(10, 10))
        assert store.url == a.url
        assert _stored(a, "proj/fo")[-10:] == list(range(10, 20))
        a.kill()  # none left: the replicator backs off as a whole (store-wide) and retries later
        with pytest.raises(RetryLater, match="all 2 servers failed") as err:
            store.write_metrics("m", _rows(20, 10))
        assert err.value.store_wide
    finally:
        store.close()


def test_experiment_and_sync_take_several_urls(make_server: Any, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{rt.free_port()}"
    b = make_server()
    cfg = BufferConfig(flush_interval=0.05, close_timeout=20, quiet=True)
    with Experiment("proj/live", dash_root=tmp_path / "local", dash_url=[dead, b.url], buffer_config=cfg).run as e:
        for i in range(50):
            e.metrics("m").log(v=i)
    rt.assert_same("proj/live", tmp_path / "local", b.root)
    with Experiment("proj/later", dash_root=tmp_path / "local").run as e:  # logged without a server
        for i in range(30):
            e.metrics("m").log(v=i)
    r = rt.cli("sync", str(tmp_path / "local"), "--url", f"{dead},{b.url}", env={"ML_DASH_TOKEN": b.token})
    assert r.returncode == 0, r.stdout + r.stderr
    rt.assert_same("proj/later", tmp_path / "local", b.root)
    r = rt.cli("sync", str(tmp_path / "local"), "--url", f"{b.url},ftp://x")
    assert r.returncode == 2 and "ftp://x" in r.stderr


@pytest.mark.parametrize("servers", [1, 2])
def test_a_failed_request_frees_its_body_at_once(servers: int) -> None:
    """A request that fails (every server unreachable) must not keep its body alive in a reference cycle (the
    errors it kept, through their tracebacks, held the frame holding the body): an upload retried through an
    outage would otherwise keep every failed body in memory until the cyclic collector ran."""
    import gc
    import socket
    import weakref

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused

    class Chunks:  # a body httpx takes as it is (bytes cannot be weakly referenced)
        def __iter__(self) -> Any:
            yield b"abc"

    store = RemoteStore([f"http://127.0.0.1:{port}"] * servers, "p/r", timeout=2.0)
    gc.collect()
    gc.disable()
    try:
        body = Chunks()
        ref = weakref.ref(body)
        with pytest.raises(RetryLater, match="unreachable"):
            store._request("POST", "/api/x", content=body)
        del body
        assert ref() is None, "the failed request's body is still alive (held by a reference cycle)"
    finally:
        gc.enable()
