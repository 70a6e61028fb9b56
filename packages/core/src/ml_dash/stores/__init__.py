"""Stores: where data goes besides the local `.dash` journal. See `base.Store`."""

from .base import PermanentError, RetryLater, Store

__all__ = ["PermanentError", "RetryLater", "Store"]
