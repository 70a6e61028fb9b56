"""Files captured by a process that was killed before publishing them are published when the run is reopened."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import ml_dash
from ml_dash import Experiment


def test_staged_files_of_a_killed_process_are_published_on_reopen(tmp_path):
    root = tmp_path / ".dash"
    code = textwrap.dedent(f"""
        import os, sys
        from ml_dash import Experiment
        from ml_dash.buffer import BufferConfig
        exp = Experiment("p/k", dash_root={str(root)!r}, buffer_config=BufferConfig(flush_interval=3600)).run.start()
        exp.files("ckpt").save_blob(b"weights-1", to="w1.bin")
        exp.files("ckpt").save_text("config", to="c.txt")
        print("CAPTURED", flush=True)
        os.kill(os.getpid(), 9)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9 and "CAPTURED" in r.stdout
    assert ml_dash.load("p/k", root).files.list() == []  # captured, not yet published
    with Experiment("p/k", dash_root=root).run:
        pass
    files = {f["filename"]: f for f in ml_dash.load("p/k", root).files.list()}
    assert sorted(files) == ["c.txt", "w1.bin"]
    assert open(files["w1.bin"]["localPath"], "rb").read() == b"weights-1"
    assert files["c.txt"]["path"] == "/ckpt" and files["c.txt"]["checksum"]
