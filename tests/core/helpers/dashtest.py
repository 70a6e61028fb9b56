"""Shared helpers for the core robustness tests (issue 3): run real scripts in subprocesses, read runs back.

Imported by the test files as ``dashtest`` (the test files put this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PY = sys.executable


def env_for(root: Path, **extra: Any) -> dict[str, str]:
    env = dict(os.environ)
    env["ML_DASH_ROOT"] = str(root)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for k in list(env):
        if k.startswith("ML_DASH_") and k != "ML_DASH_ROOT" and k not in extra:
            env.pop(k)
    for k, v in extra.items():
        env[k] = str(v)
    return env


def write_script(tmp: Path, code: str, name: str = "script.py") -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(code))
    return p


def run_py(tmp: Path, code: str, *, root: Path | None = None, timeout: float = 60, args: list[str] | None = None,
           **env: Any) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script in a fresh interpreter, with ML_DASH_ROOT = ``root`` (default tmp/.dash)."""
    script = write_script(tmp, code)
    root = root or tmp / ".dash"
    return subprocess.run([PY, str(script), *(args or [])], cwd=tmp, env=env_for(root, **env),
                          capture_output=True, text=True, timeout=timeout)


def start_py(tmp: Path, code: str, *, root: Path | None = None, name: str = "script.py", args: list[str] | None = None,
             **env: Any) -> subprocess.Popen[str]:
    script = write_script(tmp, code, name)
    root = root or tmp / ".dash"
    return subprocess.Popen([PY, str(script), *(args or [])], cwd=tmp, env=env_for(root, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_line(proc: subprocess.Popen[str], expected: str, timeout: float = 30) -> str:
    """Read the child's stdout until a line equal to ``expected`` arrives (fails on EOF or timeout)."""
    import selectors

    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        if sel.select(timeout=0.2):
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.strip() == expected:
                return line
    proc.kill()
    _, err = proc.communicate()
    raise AssertionError(f"child never printed {expected!r}; stdout={''.join(seen)!r} stderr={err[-3000:]!r}")


def kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def info(root: Path, prefix: str) -> dict[str, Any]:
    return json.loads((root.joinpath(*prefix.split("/")) / "experiment.json").read_text())


def set_info(root: Path, prefix: str, **changes: Any) -> None:
    p = root.joinpath(*prefix.split("/")) / "experiment.json"
    d = json.loads(p.read_text())
    d.update(changes)
    p.write_text(json.dumps(d))


def raw_lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def assert_gap_free(values: list[int], what: str) -> None:
    assert sorted(values) == list(range(len(values))), f"{what}: not unique and gap-free from 0: " \
        f"len={len(values)} dups={len(values) - len(set(values))} max={max(values, default=None)}"


def same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN (JSON round trip of floats)."""
    return json.dumps(a, sort_keys=True, allow_nan=True) == json.dumps(b, sort_keys=True, allow_nan=True)
