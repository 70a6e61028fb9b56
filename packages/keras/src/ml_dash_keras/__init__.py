"""ml-dash for Keras 3: ``model.fit(..., callbacks=[MLDashCallback("project/run")])``.

``import ml_dash_keras`` does not import keras; ``MLDashCallback`` does, on first use, so set ``KERAS_BACKEND``
before that (as before any ``import keras``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _compat  # noqa: F401  (a clear ImportError when ml_dash is not this project's)

__version__ = "0.1.0"
__all__ = ["MLDashCallback", "__version__"]

if TYPE_CHECKING:
    from .callback import MLDashCallback


def __getattr__(name: str) -> Any:
    if name == "MLDashCallback":
        from .callback import MLDashCallback

        return MLDashCallback
    raise AttributeError(f"module 'ml_dash_keras' has no attribute {name!r}")
