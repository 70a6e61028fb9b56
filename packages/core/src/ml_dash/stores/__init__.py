"""Stores: where data goes besides the local `.dash` journal. See `base.Store`."""

from .base import PermanentError, Store

__all__ = ["PermanentError", "Store"]
