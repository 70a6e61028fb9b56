"""Any string Python can hold (lone surrogates from undecodable file names, NUL, non-BMP, ...) in a log message,
a metric or track value, a field name, a parameter or the run's description is stored and read back exactly,
locally and on the server; it never makes the server answer 5xx, and never holds back the rest of the run."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import rt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ml_dash import Experiment, load
from ml_dash.buffer import BufferConfig

# every code point, surrogates included (hypothesis leaves category Cs out by default)
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
_n = itertools.count()


def _record(exp: Any, texts: list[str]) -> None:
    exp.params.set(**{f"p{i}": t for i, t in enumerate(texts)})
    for i, t in enumerate(texts):
        exp.log(t, level="info", name=t)
        exp.metrics("train").log(step=i, text=t, **{f"k{t}": 1.0})
        exp.tracks("robot").append(_ts=float(i), label=t)


def _assert_exact(view: Any, texts: list[str], description: str | None = None) -> None:
    assert [r["message"] for r in view.logs.read()] == texts
    assert [r["metadata"]["name"] for r in view.logs.read()] == texts
    rows = view.metrics("train").read()
    assert [r["data"]["text"] for r in rows] == texts
    assert [sorted(k for k in r["data"] if k.startswith("k"))[0][1:] for r in rows] == texts
    assert [e["label"] for e in view.tracks("robot").read()] == texts
    assert view.params.get() == {f"p{i}": t for i, t in enumerate(texts)}
    if description is not None:
        assert view.info["description"] == description


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(ANY_TEXT, min_size=1, max_size=6), description=ANY_TEXT)
def test_any_string_round_trips_locally_and_on_the_server(server: Any, tmp_path: Path, texts: list[str],
                                                          description: str) -> None:
    prefix = f"proj/t{next(_n)}"
    local = tmp_path / "local"
    with Experiment(prefix, dash_root=local, dash_url=server.url, description=description,
                    buffer_config=BufferConfig(flush_interval=0.05, close_timeout=20)).run as e:
        _record(e, texts)
    _assert_exact(load(prefix, dash_root=local), texts, description)
    _assert_exact(load(prefix, dash_root=server.root), texts, description)
    rt.assert_same(prefix, local, server.root)
    with server.client() as c:  # the HTTP answers hold them too
        r = c.get(f"/api/v1/experiments/{prefix.replace('/', '%2F')}/logs")
        assert r.status_code == 200
        assert [x["message"] for x in r.json()["records"]] == texts
        assert c.get("/api/v1/experiments").status_code == 200


def test_a_lone_surrogate_log_line_does_not_hold_back_the_run(server: Any, tmp_path: Path, capfd: Any) -> None:
    """The issue's case: 200 clean rows behind one log line naming an undecodable file all arrive, live and
    by `ml-dash sync` to a second server."""
    local = tmp_path / "local"
    with Experiment("proj/cafe", dash_root=local, dash_url=server.url,
                    buffer_config=BufferConfig(flush_interval=0.05, close_timeout=20)).run as e:
        e.log("saved caf\udce9.png")
        for i in range(200):
            e.metrics("train").log(step=i, loss=1.0 / (i + 1))
    assert "not delivered" not in capfd.readouterr().err
    remote = rt.assert_same("proj/cafe", local, server.root)
    assert remote.logs.read()[0]["message"] == "saved caf\udce9.png"
    assert len(remote.metrics("train").read()) == 200
    other = tmp_path / "other"
    server.stop()
    from serverproc import Server

    second = Server(other, tmp_path / "other.log").start()
    try:
        r = rt.cli("sync", str(local), "--url", second.url, env={"ML_DASH_TOKEN": second.token})
        assert r.returncode == 0, r.stdout + r.stderr
        rt.assert_same("proj/cafe", local, other)
    finally:
        second.stop()
