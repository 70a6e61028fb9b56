"""Where the browser is and the environment the viewer processes get; a module of its own, so that tests import
it by a unique name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--no-first-run"]


def browser_path() -> str | None:
    env = os.environ.get("ML_DASH_CHROMIUM")
    if env:
        return env
    for name in BROWSERS:
        p = shutil.which(name)
        if p:
            return p
    return None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = [str(REPO / "packages" / p / "src") for p in ("core", "lightning", "hf", "keras")]
    env["PYTHONPATH"] = os.pathsep.join(src + [env.get("PYTHONPATH", "")])
    return env
