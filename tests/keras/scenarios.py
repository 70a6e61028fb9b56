"""Keras scenarios for tests/keras, run in a subprocess per backend (KERAS_BACKEND is set by the caller).

    KERAS_BACKEND=jax python tests/keras/scenarios.py runs  DASH_ROOT   # several runs, then report.json
    KERAS_BACKEND=jax python tests/keras/scenarios.py raise DASH_ROOT   # fit raises, uncaught: FAILED

The test file reads what these leave under DASH_ROOT with ml_dash.load and checks report.json.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

os.environ.setdefault("ML_DASH_QUIET", "1")
import keras  # noqa: E402  (after KERAS_BACKEND, which the caller sets)
import numpy as np  # noqa: E402
from ml_dash import Experiment  # noqa: E402
from ml_dash_keras import MLDashCallback  # noqa: E402

BATCH = 8


def data(n: int = 32, nan: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")).astype("float32")
    if nan:
        y[:] = np.nan
    return x, y


def tiny(steps_per_execution: int = 1) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01),
        loss="mse",
        metrics=["mae"],
        steps_per_execution=steps_per_execution,
    )
    return model


class RaiseAt(keras.callbacks.Callback):
    """Raises at the start of the given global batch (0-based), as a failing data pipeline would."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen == self.at:
            raise RuntimeError("boom in batch")
        self.seen += 1


def runs(root: str) -> None:
    report: dict[str, object] = {"backend": keras.backend.backend()}
    x, y = data()
    xv, yv = data(16)

    # 1. fit with validation, per-3-batch rows, model file, then a separate evaluate() and predict().
    model = tiny()
    cb = MLDashCallback(
        "kt/basic", dash_root=root, log_freq=3, save_model=True, params={"lr": 0.01, "arch": {"hidden": 4}}
    )
    model.fit(x, y, validation_data=(xv, yv), batch_size=BATCH, epochs=2, verbose=0, callbacks=[cb])
    report["basic_status_after_fit"] = cb.experiment.status
    report["basic_test_rows_after_fit"] = len(cb.experiment.metrics("test").read())
    report["basic_iterations"] = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    model.evaluate(xv, yv, batch_size=BATCH, verbose=0, callbacks=[cb])
    out = model.predict(x, batch_size=BATCH, verbose=0, callbacks=[cb])
    report["predict_shape"] = list(out.shape)

    # 2. EarlyStopping: no improvement can count (min_delta huge), so it stops at epoch 1 of 5.
    model = tiny()
    es = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e9)
    cb = MLDashCallback("kt/early", dash_root=root)
    model.fit(x, y, batch_size=BATCH, epochs=5, verbose=0, callbacks=[es, cb])
    report["early_stop_reason"] = cb.stop_reason

    # 3. TerminateOnNaN: NaN targets give a NaN loss on the first batch.
    xn, yn = data(nan=True)
    model = tiny()
    cb = MLDashCallback("kt/nan", dash_root=root, log_freq=1)
    model.fit(xn, yn, batch_size=BATCH, epochs=3, verbose=0, callbacks=[cb, keras.callbacks.TerminateOnNaN()])

    # 4. The user's experiment, opened by the user: the callback logs into it and leaves closing to the
    #    user; `with exp.run:` marks FAILED although the exception is caught (the notebook case).
    exp = Experiment("kt/user", dash_root=root)
    try:
        with exp.run:
            cb = MLDashCallback(experiment=exp)
            tiny().fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[cb, RaiseAt(5)])
    except RuntimeError:
        report["user_caught"] = True
    exp2 = Experiment("kt/user-open", dash_root=root).run.start()
    tiny().fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[MLDashCallback(experiment=exp2)])
    report["user_open_status_after_fit"] = exp2.status
    exp2.run.complete()

    # 4b. Our own run, fit raises and the caller catches it; the next fit with the same callback goes on.
    model, cb = tiny(), MLDashCallback("kt/refit", dash_root=root)
    try:
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[cb, RaiseAt(2)])
    except RuntimeError:
        report["refit_status_after_raise"] = cb.experiment.status
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[cb])

    # 5. Not rank 0: nothing is created.
    os.environ["RANK"] = "1"
    cb = MLDashCallback("kt/rank1", dash_root=root, log_freq=1, save_model=True)
    tiny().fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[cb])
    report["rank1_experiment"] = repr(cb.experiment)
    del os.environ["RANK"]

    # 6. steps_per_execution=2 (jax and tensorflow only): 40 samples -> 5 batches, hooks at batches 1, 3, 5.
    if keras.backend.backend() != "torch":
        xs, ys = data(40)
        cb = MLDashCallback("kt/spe", dash_root=root, log_freq=3)
        tiny(steps_per_execution=2).fit(xs, ys, batch_size=BATCH, epochs=2, verbose=0, callbacks=[cb])

    # 6b. User metrics named like the row's own fields: kept beside Keras's step and epoch.
    def epoch(y_true, y_pred):
        return keras.ops.convert_to_tensor(7.0)

    def step(y_true, y_pred):
        return keras.ops.convert_to_tensor(11.0)

    def train_step(y_true, y_pred):
        return keras.ops.convert_to_tensor(13.0)

    model = tiny()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=[epoch, step, train_step])
    cb = MLDashCallback("kt/names", dash_root=root, log_freq=4)
    model.fit(x, y, validation_data=(xv, yv), batch_size=BATCH, epochs=2, verbose=0, callbacks=[cb])

    # 7. Bad arguments are refused at once.
    errors = {}
    for name, kwargs in {
        "log_freq0": {"prefix": "a/b", "log_freq": 0},
        "log_freq_str": {"prefix": "a/b", "log_freq": "step"},
        "prefix_no_slash": {"prefix": "nameonly"},
        "both": {"prefix": "a/b", "experiment": Experiment("kt/unused", dash_root=root)},
        "exp_and_root": {"experiment": Experiment("kt/unused", dash_root=root), "dash_root": root},
        "save_model_str": {"prefix": "a/b", "save_model": "yes"},
        "unknown_kwarg": {"prefix": "a/b", "colour": "red"},
    }.items():
        try:
            MLDashCallback(**kwargs)
            errors[name] = None
        except (ValueError, TypeError) as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
    report["errors"] = errors

    with open(os.path.join(root, "report.json"), "w") as f:
        json.dump(report, f)


def raising(root: str) -> None:
    x, y = data()
    xv, yv = data(16)
    cb = MLDashCallback("kt/raise", dash_root=root, log_freq=1)
    # batches 0-3 are epoch 0, 4 and 5 run in epoch 1, the 7th batch raises: nothing catches it.
    tiny().fit(
        x, y, validation_data=(xv, yv), batch_size=BATCH, epochs=3, verbose=0, callbacks=[cb, RaiseAt(6)]
    )


if __name__ == "__main__":
    # a hook that fails warns and training goes on: make that loud here
    warnings.filterwarnings("error", message="ml-dash-keras", category=RuntimeWarning)
    {"runs": runs, "raise": raising}[sys.argv[1]](sys.argv[2])
