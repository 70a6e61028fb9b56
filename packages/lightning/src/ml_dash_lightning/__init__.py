"""ML-Dash logger for PyTorch Lightning.

``ml_dash_lightning.MLDashLogger`` is a ``lightning.pytorch`` logger (``Trainer(logger=MLDashLogger("proj/run"))``);
``ml_dash_lightning.pl.MLDashLogger`` is the same logger for the standalone ``pytorch_lightning`` package.
If only ``pytorch_lightning`` is installed, ``ml_dash_lightning.MLDashLogger`` is that one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _compat  # noqa: F401  (a clear ImportError when ml_dash is not this project's)

__all__ = ["MLDashLogger", "make_logger_class"]
__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from ._logger import MLDashLoggerMixin as MLDashLogger
    from ._logger import make_logger_class


def __getattr__(name: str) -> Any:
    # Built lazily, so that `import ml_dash_lightning.pl` does not import lightning.pytorch as well.
    if name == "make_logger_class":
        from ._logger import make_logger_class

        return make_logger_class
    if name == "MLDashLogger":
        from ._logger import make_logger_class

        try:
            import lightning.pytorch  # noqa: F401
        except ImportError:
            try:
                import pytorch_lightning  # noqa: F401
            except ImportError:
                raise ImportError(
                    "ml_dash_lightning needs Lightning: pip install lightning (or pytorch-lightning)"
                ) from None
            cls = make_logger_class("pytorch_lightning")
        else:
            cls = make_logger_class("lightning.pytorch")
        globals()["MLDashLogger"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
