"""The Experiment API: settings, lifecycle, values, files."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import ml_dash
import pytest
from ml_dash import Experiment
from ml_dash.buffer import BufferConfig


def test_buffer_config_defaults_env_and_explicit(monkeypatch):
    c = BufferConfig()
    assert (c.buffer_enabled, c.flush_interval, c.log_batch_size, c.metric_batch_size, c.track_batch_size,
            c.file_upload_workers, c.write_interval, c.close_timeout) == (True, 5.0, 100, 100, 100, 4, 0.2, 30.0)
    monkeypatch.setenv("ML_DASH_FLUSH_INTERVAL", "2.5")
    monkeypatch.setenv("ML_DASH_BUFFER_ENABLED", "false")
    assert BufferConfig().flush_interval == 2.5 and BufferConfig().buffer_enabled is False
    assert BufferConfig(flush_interval=9.0).flush_interval == 9.0  # explicit beats environment
    monkeypatch.setenv("ML_DASH_METRIC_BATCH_SIZE", "lots")
    with pytest.raises(ValueError, match="ML_DASH_METRIC_BATCH_SIZE"):
        BufferConfig()
    with pytest.raises(ValueError, match="log_batch_size"):
        BufferConfig(log_batch_size=0)


def test_unknown_keyword_and_bad_arguments_are_refused(tmp_path):
    with pytest.raises(TypeError):
        Experiment("p/x", dash_root=tmp_path, bufer_config=None)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="buffer_config"):
        Experiment("p/x", dash_root=tmp_path, buffer_config={"flush_interval": 1})  # type: ignore[arg-type]
    for bad in ("", "x", "../x/y", "/abs/x", "p/\x00x", "p/a\nb", "p/./x"):
        with pytest.raises(ValueError):
            Experiment(bad, dash_root=tmp_path)


def test_ml_dash_root_overrides_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_DASH_ROOT", str(tmp_path / "elsewhere"))
    with Experiment("p/r").run as exp:
        exp.log("x")
    assert (tmp_path / "elsewhere" / "p" / "r" / "logs" / "logs.jsonl").exists()


@pytest.mark.parametrize("exc,status", [(RuntimeError, "FAILED"), (KeyboardInterrupt, "CANCELLED")])
def test_context_exit_status(tmp_path, exc, status):
    with pytest.raises(exc):
        with Experiment("p/s", dash_root=tmp_path).run as exp:
            exp.metrics("m").log(v=1)
            raise exc("boom")
    v = ml_dash.load("p/s", tmp_path)
    assert v.status == status and len(v.metrics("m").read()) == 1
    assert v.info["statusReason"].startswith(exc.__name__)


def test_explicit_lifecycle_and_reopen(tmp_path):
    exp = Experiment("p/l", dash_root=tmp_path)
    assert exp.run.start() is exp and exp.status == "RUNNING"
    exp.metrics("m").log(v=1)
    exp.run.fail("diverged")
    assert ml_dash.load("p/l", tmp_path).info["statusReason"] == "diverged"
    with pytest.raises(RuntimeError, match="closed"):
        exp.metrics("m").log(v=2)
    exp.run.start()
    exp.metrics("m").log(v=2)
    exp.run.complete()
    v = ml_dash.load("p/l", tmp_path)
    assert v.status == "COMPLETED" and "statusReason" not in v.info
    assert [r["data"]["v"] for r in v.metrics("m").read()] == [1, 2]


def test_flush_makes_data_durable_without_closing(tmp_path):
    exp = Experiment("p/f", dash_root=tmp_path, buffer_config=BufferConfig(write_interval=60)).run.start()
    for i in range(1000):
        exp.metrics("m").log(i=i)
    exp.log("before flush")
    assert exp.flush() is True
    data = tmp_path / "p" / "f" / "metrics" / "m" / "data.jsonl"
    assert len(data.read_text().splitlines()) == 1000
    assert (tmp_path / "p" / "f" / "logs" / "logs.jsonl").read_text().count("\n") == 1
    exp.run.complete()


def test_write_through_when_buffering_is_disabled(tmp_path):
    exp = Experiment("p/w", dash_root=tmp_path, buffer_config=BufferConfig(buffer_enabled=False)).run.start()
    exp.metrics("m").log(i=1)
    assert (tmp_path / "p" / "w" / "metrics" / "m" / "data.jsonl").read_text().count("\n") == 1
    exp.files("d").save_text("t", to="t.txt")
    assert len(ml_dash.load("p/w", tmp_path).files.list()) == 1
    exp.run.complete()


def test_torch_values_are_taken_at_call_time(tmp_path):
    torch = pytest.importorskip("torch")
    t = torch.tensor(1.5)
    with Experiment("p/t", dash_root=tmp_path).run as exp:
        exp.metrics("m").log(a=t, b=torch.tensor([2.0]), c=torch.tensor(3, dtype=torch.int64))
        t.add_(10)  # in-place change after the call must not change what was recorded
    (row,) = ml_dash.load("p/t", tmp_path).metrics("m").read()
    assert row["data"]["a"] == 1.5 and row["data"]["b"] == 2.0 and row["data"]["c"] == 3


def test_bad_values_fail_at_the_call_naming_the_field(tmp_path):
    with Experiment("p/b", dash_root=tmp_path).run as exp:
        with pytest.raises(TypeError, match="'weird'"):
            exp.metrics("m").log(ok=1, weird=object())
        with pytest.raises(ValueError, match="'big'"):
            exp.metrics("m").log(big="x" * (1 << 21))
        with pytest.raises(ValueError, match="level"):
            exp.log("x", level="loud")
        with pytest.raises(ValueError):
            exp.metrics("../../x")
        with pytest.raises(TypeError, match="not a string"):
            exp.params.set(d={1: 2})
        exp.metrics("m").log(ok=2)
    assert [r["data"]["ok"] for r in ml_dash.load("p/b", tmp_path).metrics("m").read()] == [2]


def test_files_capture_content_at_call_time_and_never_delete_user_files(tmp_path):
    src = Path(tempfile.mkdtemp()) / "notes.txt"  # under the system temp folder, as the reference mishandles
    src.write_text("version 1")
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"A")
    (folder / "sub" / "b.bin").write_bytes(b"B")
    with Experiment("p/files", dash_root=tmp_path / ".dash", buffer_config=BufferConfig(flush_interval=60)).run as exp:
        entry = exp.files("docs").upload(src)
        src.write_text("version 2")
        exp.files("models").upload(folder)
        exp.files("models").save_blob(b"\x00\x01", to="w.bin")
    assert src.read_text() == "version 2"  # the user's file is still there, untouched
    files = {(f["path"], f["filename"]): f for f in ml_dash.load("p/files", tmp_path / ".dash").files.list()}
    assert Path(files[("/docs", "notes.txt")]["localPath"]).read_text() == "version 1"
    assert files[("/docs", "notes.txt")]["id"] == entry["id"]
    assert Path(files[("/models/ckpt", "a.bin")]["localPath"]).read_bytes() == b"A"
    assert Path(files[("/models/ckpt/sub", "b.bin")]["localPath"]).read_bytes() == b"B"
    assert Path(files[("/models", "w.bin")]["localPath"]).read_bytes() == b"\x00\x01"
    assert not list((tmp_path / ".dash" / "p" / "files" / ".ml_dash" / "staging").iterdir())


def test_large_files_survive_deletion_of_the_source(tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4096))
    cfg = BufferConfig(copy_limit_bytes=1024, flush_interval=60)
    with Experiment("p/big", dash_root=tmp_path / ".dash", buffer_config=cfg).run as exp:
        exp.files("m").upload(src)
        expected = src.read_bytes()
        src.unlink()
    (f,) = ml_dash.load("p/big", tmp_path / ".dash").files.list()
    assert Path(f["localPath"]).read_bytes() == expected and f["sizeBytes"] == 4096


def test_save_helpers(tmp_path):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    with Experiment("p/save", dash_root=tmp_path).run as exp:
        exp.files("out").save_json({"a": [1, 2]}, to="a.json")
        exp.files("out").save_image(np.zeros((3, 5, 3), dtype=np.uint8), to="img.png")
        exp.files("out").save_torch({"w": torch.ones(2)}, to="w.pt")
    files = {f["filename"]: Path(f["localPath"]) for f in ml_dash.load("p/save", tmp_path).files.list()}
    assert files["img.png"].read_bytes().startswith(b"\x89PNG")
    assert torch.load(files["w.pt"])["w"].tolist() == [1.0, 1.0]
    import json

    assert json.loads(files["a.json"].read_text()) == {"a": [1, 2]}


def test_echo_is_opt_in(tmp_path):
    code = ("from ml_dash import Experiment\n"
            f"with Experiment('p/e', dash_root={str(tmp_path)!r}, echo={{echo}}).run as e:\n"
            "    e.log('visible-line')\n")
    quiet = subprocess.run([sys.executable, "-c", code.format(echo=False)], capture_output=True, text=True)
    loud = subprocess.run([sys.executable, "-c", code.format(echo=True)], capture_output=True, text=True)
    assert "visible-line" not in quiet.stdout + quiet.stderr
    assert "visible-line" in loud.stdout + loud.stderr


def test_import_is_light():
    code = ("import sys, ml_dash; bad = [m for m in ('torch', 'numpy', 'httpx', 'pluggy', 'socket', 'urllib.request',"
            " 'lightning', 'transformers', 'keras') if m in sys.modules]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
