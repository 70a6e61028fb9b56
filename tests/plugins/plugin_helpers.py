"""Helpers for the plugin tests: subprocess runs and fake installed distributions."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run_py(code: str, *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (plugin discovery happens once per process)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ML_DASH_")}
    full_env["PYTHONWARNINGS"] = "always"
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def fake_dist(site: Path, dist: str, ep_name: str, module: str, code: str, attr: str | None = None) -> None:
    """An installed distribution ``dist`` whose ``ml_dash`` entry point ``ep_name`` names ``module[:attr]``."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    target = module + (f":{attr}" if attr else "")
    (info / "entry_points.txt").write_text(f"[ml_dash]\n{ep_name} = {target}\n")
