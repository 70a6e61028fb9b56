"""Installing the packages in a fresh environment, offline: an adapter never gets PyPI's `ml-dash`.

PyPI's `ml-dash` (the reference SDK) also installs a module `ml_dash`. This project's core is the distribution
`ml-dash-core`; the adapters depend on it by that name. A stand-in for the reference SDK sits in the only package
folder pip may use (`--no-index --find-links`), so a dependency on the wrong name would pick it up.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


def fake_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> None:
    """A minimal pure-Python wheel (stand-ins for packages this test must not download)."""
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    contents[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as z:
        for path, text in contents.items():
            z.writestr(path, text)


# pip sees no configuration of this machine (index mirrors, extra package folders, constraints)
PIP_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHONPATH", "PYTHONHOME"))},
           "PIP_CONFIG_FILE": os.devnull}


def rewheel(folder: Path, name: str) -> None:
    """A wheel of a distribution installed in this environment (the core's small dependencies), so the fresh
    environment gets the real package without a download."""
    from importlib.metadata import distribution

    dist = distribution(name)
    info = next(f for f in dist.files if f.name == "WHEEL" and f.parent.name.endswith(".dist-info"))
    tag = next(line.split(": ", 1)[1] for line in info.read_text().splitlines() if line.startswith("Tag: "))
    fname = f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}-{tag}.whl"
    with zipfile.ZipFile(folder / fname, "w") as z:
        for f in dist.files:
            path = Path(dist.locate_file(f))
            if path.is_file() and "__pycache__" not in f.parts and not str(f).startswith(".."):
                z.write(path, str(f))


def pip(env: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "--disable-pip-version-check",
           "install", "--no-index", "--no-cache-dir", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=PIP_ENV)


def py(env: Path, code: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(env / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60,
                          env=clean, cwd=env)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, str]:
    """This project's core and Keras adapter built from their folders, the core's small dependencies, and
    stand-ins for PyPI's `ml-dash` 0.11.0, `keras` and `numpy` (neither is imported by `import ml_dash_keras`)."""
    pytest.importorskip("setuptools", minversion="77")
    dirs = {}
    for pkg in ("core", "keras"):
        dirs[pkg] = out = tmp_path_factory.mktemp(pkg)
        src = out / "src"  # a copy: building writes egg-info and build/ next to the sources
        shutil.copytree(ROOT / "packages" / pkg, src, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
             "-w", str(out), str(src)],
            capture_output=True, text=True, timeout=240, cwd=out, env=PIP_ENV,
        )
        assert proc.returncode == 0, proc.stderr
    dirs["deps"] = out = tmp_path_factory.mktemp("deps")  # where PyPI's ml-dash would come from
    fake_wheel(out, "ml-dash", "0.11.0", {"ml_dash/__init__.py": "REFERENCE_SDK = True\n"})
    fake_wheel(out, "keras", "3.9.0", {"keras/__init__.py": "__version__ = '3.9.0'\n"})
    fake_wheel(out, "numpy", "2.0.0", {"numpy/__init__.py": ""})  # imported only when a value needs it
    for name in ("pluggy", "orjson"):
        rewheel(out, name)
    return {k: str(v) for k, v in dirs.items()}


def fresh(tmp_path: Path) -> Path:
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    return env


def test_adapter_alone_never_gets_the_reference_sdk(wheels, tmp_path):
    env = fresh(tmp_path)
    proc = pip(env, "--find-links", wheels["deps"], "--find-links", wheels["keras"], "ml-dash-keras")
    assert proc.returncode != 0
    assert "ml-dash-core" in proc.stderr  # pip stops and names what is missing
    got = py(env, "import importlib.util as u; print(u.find_spec('ml_dash'), u.find_spec('ml_dash_keras'))")
    assert got.stdout.split() == ["None", "None"]  # nothing was installed, PyPI's ml-dash least of all


def test_adapter_with_the_core_folder_uses_that_core(wheels, tmp_path):
    env = fresh(tmp_path)
    links = [a for d in ("deps", "keras", "core") for a in ("--find-links", wheels[d])]
    proc = pip(env, *links, "ml-dash-keras", "ml-dash-core")
    assert proc.returncode == 0, proc.stderr
    got = py(env, "import ml_dash, ml_dash_keras; from ml_dash import integration; "
                  "print(ml_dash.__file__); print(integration.KIT_VERSION)")
    assert got.returncode == 0, got.stderr
    where, kit = got.stdout.split()
    assert Path(where).is_relative_to(env) and kit == "2"


def test_adapter_says_which_ml_dash_it_needs(wheels, tmp_path):
    """With PyPI's `ml-dash` in place of the core (installed by hand), importing the adapter names the fix."""
    env = fresh(tmp_path)
    links = [a for d in ("deps", "keras") for a in ("--find-links", wheels[d])]
    assert pip(env, *links, "--no-deps", "ml-dash==0.11.0", "ml-dash-keras").returncode == 0
    got = py(env, "import ml_dash_keras")
    assert got.returncode != 0
    assert "ImportError" in got.stderr and "ml-dash-core" in got.stderr and "./packages/core" in got.stderr
