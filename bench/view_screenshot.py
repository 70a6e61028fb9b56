"""Make the README's viewer screenshots from a real run: docs/img/viewer-run.png and docs/img/viewer-compare.png.

    python bench/view_screenshot.py

A tiny PyTorch regression is trained three times (three learning rates) with ml-dash logging loss, gradient
norm, learning rate, logs and system metrics; `ml-dash view` serves them and headless Chromium takes the shots.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "img"
ENV = dict(os.environ, PYTHONPATH=str(REPO / "packages" / "core" / "src"))
TRAIN = r'''
import math, sys, torch
from ml_dash import Experiment
root, lr = sys.argv[1], float(sys.argv[2])
torch.manual_seed(0)
x = torch.randn(2048, 16); w = torch.randn(16, 1); y = x @ w + 0.1 * torch.randn(2048, 1)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
with Experiment(f"regression/lr-{lr:g}", dash_root=root, tags=["demo"], system_metrics=0.2) as e:
    e.params.set(lr=lr, momentum=0.9, hidden=32, batch=64)
    e.log(f"training with lr={lr:g}")
    for step in range(600):
        i = torch.randint(0, 2048, (64,))
        loss = torch.nn.functional.mse_loss(model(x[i]), y[i])
        opt.zero_grad(); loss.backward()
        g = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9))
        opt.step()
        e.metrics("train").log(step=step, loss=float(loss), grad_norm=g)
        if step % 50 == 49:
            with torch.no_grad():
                vl = float(torch.nn.functional.mse_loss(model(x[:256]), y[:256]))
            e.metrics("val").log(step=step, loss=vl)
            e.log(f"step {step + 1}: val loss {vl:.4f}")
'''


def main() -> None:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="view-shot-"))
    root = tmp / ".dash"
    try:
        for lr in (0.003, 0.01, 0.03):
            subprocess.run([sys.executable, "-c", TRAIN, str(root), str(lr)], env=ENV, check=True,
                           capture_output=True)
        v = subprocess.Popen([sys.executable, "-m", "ml_dash.cli", "view", str(root), "--port", "0", "--no-open"],
                             env=ENV, stdout=subprocess.PIPE, text=True)
        assert v.stdout is not None
        url = re.search(r"http://\S+", v.stdout.readline()).group(0).rstrip("/")  # type: ignore[union-attr]
        try:
            exe = shutil.which("chromium-headless-shell") or shutil.which("chromium")
            with sync_playwright() as pw:
                b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
                page = b.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
                runs = ",".join(f"regression/lr-{lr:g}" for lr in (0.003, 0.01, 0.03))
                page.goto(url + f"/compare?runs={runs}&smooth=ema:0.9&log=1")
                page.wait_for_function("() => performance.getEntriesByName('chart:train/loss:drawn').length > 0")
                page.wait_for_timeout(500)
                OUT.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(OUT / "viewer-compare.png"))
                page.goto(url + "/run/regression/lr-0.01?smooth=ema:0.6")
                page.wait_for_function("() => performance.getEntriesByName('chart:train/loss:drawn').length > 0")
                page.wait_for_timeout(500)
                page.screenshot(path=str(OUT / "viewer-run.png"))
                b.close()
        finally:
            v.terminate()
            v.wait(10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {OUT / 'viewer-compare.png'} and {OUT / 'viewer-run.png'}")


if __name__ == "__main__":
    main()
