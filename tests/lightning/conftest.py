"""Test environment for the Lightning adapter tests: CPU only, quiet Lightning, few threads."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

os.environ.setdefault("PL_DISABLE_FORK", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
warnings.filterwarnings("ignore", message=".*`log_every_n_steps`.*")


@pytest.fixture
def dash_root(tmp_path):
    return str(tmp_path / ".dash")


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def run_script():
    return _run_script


def _run_script(
    mode: str, root: str, prefix: str, out: str, timeout: float = 150, expect_rc: int | None = 0
) -> subprocess.CompletedProcess:
    """Run lightning_scripts.py in a fresh interpreter (its exit hook runs when it ends).
    ``expect_rc=None`` accepts any exit status."""
    env = dict(os.environ, ML_DASH_QUIET="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "lightning_scripts.py"), mode, root, prefix, out],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=os.path.dirname(root),
    )
    assert expect_rc is None or proc.returncode == expect_rc, (
        f"{mode} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc
