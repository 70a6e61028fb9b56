"""Fixtures for the plugin tests: a fresh plugin manager, and the example TensorBoard plugin installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TB_PLUGIN = REPO / "examples" / "plugins" / "tensorboard_mirror"


@pytest.fixture
def pm(monkeypatch):
    """A fresh plugin manager with entry-point discovery off (installed plugins stay out of in-process tests);
    built-in stores and in-code registrations work as always."""
    from ml_dash import plugins

    monkeypatch.setenv("ML_DASH_DISABLE_PLUGINS", "1")
    monkeypatch.setattr(plugins, "_hook_warned", set())
    plugins._reset()
    yield plugins
    plugins._reset()


def _tb_importable() -> bool:
    out = subprocess.run([sys.executable, "-c", "import ml_dash_tensorboard"], capture_output=True)
    return out.returncode == 0


@pytest.fixture(scope="session")
def tb_plugin():
    """The example plugin, installed into this interpreter's environment (``pip install --no-deps -e``) unless
    it already is; also importable in this process."""
    if not _tb_importable():
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e",
               str(TB_PLUGIN)]
        constraints = REPO / "constraints.txt"
        if constraints.exists():
            cmd[4:4] = ["-c", str(constraints)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"installing the example plugin failed:\n{res.stdout}\n{res.stderr}"
        assert _tb_importable(), "the example plugin is installed but not importable"
    if importlib.util.find_spec("ml_dash_tensorboard") is None:  # installed after this process started
        sys.path.insert(0, str(TB_PLUGIN / "src"))
    return TB_PLUGIN
