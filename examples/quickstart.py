"""Quickstart: a tiny "training loop" logged to the local .dash folder, then read back.

    ./dev quickstart            (or: pip install ./packages/core && python examples/quickstart.py)
"""

import math
import random

import ml_dash
from ml_dash import Experiment

with Experiment("quickstart/demo", description="ml-dash quickstart", tags=["demo"]).run as exp:
    exp.log("Training started")
    exp.params.set(learning_rate=0.001, batch_size=32, model={"name": "mlp", "layers": 2})
    for epoch in range(3):
        for step in range(100):
            loss = math.exp(-(epoch * 100 + step) / 100) + random.random() * 0.01
            exp.metrics("train").log(epoch=epoch, step=epoch * 100 + step, loss=loss)
        exp.metrics("val").log(epoch=epoch, loss=loss * 1.1, acc=0.5 + 0.15 * epoch)
        exp.tracks("robot/position").append(_ts=float(epoch), x=epoch * 1.0, y=-epoch * 0.5)
        exp.log(f"epoch {epoch} done", loss=loss)
    exp.files("results").save_json({"best_epoch": 2, "acc": 0.8}, to="summary.json")

run = ml_dash.load("quickstart/demo")
print()
print(f"status:  {run.status}")
print(f"folder:  {run.folder.resolve()}")
print(f"params:  {run.params.get()}")
print("metrics: " + ", ".join(f"{n} ({len(run.metrics(n).read())} rows)" for n in run.metrics.names()))
print(f"logs:    {len(run.logs.read())} lines, last: {run.logs.read()[-1]['message']!r}")
print(f"tracks:  {run.tracks.topics()}")
print(f"files:   {[f['localPath'] for f in run.files.list()]}")
root = run.folder.parent.parent  # the .dash folder the run was written to
print()
print(f"view it: ml-dash view {root} --port 8050   then open http://127.0.0.1:8050/run/{run.prefix}")
print("         (the viewer needs the server extra: pip install './packages/core[server]')")
