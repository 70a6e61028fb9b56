"""Record a Keras 3 fit/evaluate/predict with ml-dash.

    pip install ./packages/core ./packages/keras     (plus keras and a backend: torch or jax)
    KERAS_BACKEND=torch python examples/keras_fit.py  (or KERAS_BACKEND=jax; default here: torch)

Writes to .dash/examples/keras-fit-<date-time>/ (or under $ML_DASH_ROOT) and prints what was recorded.
"""

import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # must be set before the first `import keras`

import keras  # noqa: E402
import numpy as np  # noqa: E402
from ml_dash import load  # noqa: E402
from ml_dash_keras import MLDashCallback  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = (x[:, :1] - 0.5 * x[:, 1:2] > 0).astype("float32")  # a simple binary target
    x_test, y_test = x[:64], y[:64]

    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", metrics=["accuracy"])

    dash = MLDashCallback(
        f"examples/keras-fit-{time.strftime('%Y%m%d-%H%M%S')}",  # the same prefix again would append
        log_freq=10,  # also a train row every 10 batches
        save_model=True,  # models/model.keras at the end of fit
        params={"data": {"samples": len(x), "features": 8}, "batch_size": 32},
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2)
    model.fit(x, y, validation_split=0.25, batch_size=32, epochs=8, verbose=0, callbacks=[stop, dash])
    model.evaluate(x_test, y_test, verbose=0, callbacks=[dash])  # -> stream "test"
    model.predict(x_test, verbose=0, callbacks=[dash])  # -> stream "predict"

    run = load(dash.experiment.prefix, dash_root=os.environ.get("ML_DASH_ROOT", ".dash"))
    print(f"{run.info['prefix']}: status {run.status}, reason {run.info.get('statusReason')}")
    for stream in sorted(run.metrics.names()):
        last = run.metrics(stream).read()[-1]["data"]
        print(
            f"{stream:8s} {len(run.metrics(stream).read()):3d} rows, last: "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items() if k != "_ts"
            )
        )
    print("files:", [f"{f['path']}/{f['filename']}" for f in run.files.list()])


if __name__ == "__main__":
    main()
