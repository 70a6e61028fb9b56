"""``MLDashLogger`` for the standalone ``pytorch_lightning`` package (``import pytorch_lightning as pl``)."""

from ._logger import make_logger_class

MLDashLogger = make_logger_class("pytorch_lightning")

__all__ = ["MLDashLogger"]
