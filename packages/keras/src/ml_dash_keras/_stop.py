"""Why did fit() stop before its last epoch? (EarlyStopping, TerminateOnNaN, or another callback.)

Keras only leaves ``model.stop_training = True`` behind. The callback that set it is found among the other
callbacks of the same ``fit`` call: Keras does not hand a callback its siblings, so they are taken from the
``CallbackList`` that is calling ``on_train_end`` (a frame or two up the stack). The final epoch logs tell a
NaN stop apart: ``TerminateOnNaN`` stops on a non-finite batch loss, which makes the epoch's mean loss
non-finite too.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any

from ._rows import non_finite


def sibling_callbacks(me: Any, depth: int = 8) -> list[Any]:
    """The callbacks of the ``CallbackList`` that is calling ``me`` now; [] if none is found."""
    from keras.callbacks import CallbackList

    frame: FrameType | None = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, CallbackList) and any(c is me for c in owner.callbacks):
            return list(owner.callbacks)
        frame = frame.f_back
    return []


def stop_reason(model: Any, logs: Mapping[str, Any] | None, siblings: list[Any]) -> tuple[str | None, bool]:
    """(reason, diverged): reason is None when fit ran to its end; diverged is True for a NaN/inf stop."""
    if not getattr(model, "stop_training", False):
        return None, False
    from keras.callbacks import EarlyStopping, TerminateOnNaN

    logs = logs or {}
    bad = non_finite(logs.get("loss"))
    if bad and any(isinstance(c, TerminateOnNaN) for c in siblings):
        return f"TerminateOnNaN: non-finite loss ({logs['loss']}), training terminated", True
    for c in siblings:
        if isinstance(c, EarlyStopping) and getattr(c, "stopped_epoch", 0) > 0:
            best = getattr(c, "best", None)
            detail = f"monitor={c.monitor}, best={best}" + (
                f" at epoch {c.best_epoch}" if getattr(c, "best_epoch", None) is not None else ""
            )
            return f"EarlyStopping: stopped at epoch {c.stopped_epoch} ({detail})", False
    if bad:
        return f"non-finite loss ({logs['loss']}), training stopped by a callback", True
    return "stopped early: a callback set model.stop_training", False
