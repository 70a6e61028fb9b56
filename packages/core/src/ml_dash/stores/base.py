"""The one small interface between the buffer's replicators and any store (remote server, mirrors, plugins):
`Store`, and the two exceptions a store raises to say how a failure should be handled (any other exception is
retried with backoff, like `RetryLater`)."""

from __future__ import annotations

from typing import Any


class PermanentError(Exception):
    """Raised by a store for a batch that can never be stored (e.g. HTTP 400): it is quarantined, not retried."""


class RetryLater(Exception):
    """A transient failure (the store is busy or unreachable): the batch is retried with backoff, not before
    ``retry_after`` seconds when the store knows how long to wait (e.g. HTTP ``Retry-After``). ``store_wide``:
    the store could not be reached at all (the replicator then backs off as a whole, not per stream)."""

    def __init__(self, message: str, retry_after: float | None = None, *, store_wide: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.store_wide = store_wide


class Store:
    """Base class for stores. A replicator thread calls these methods, one at a time, batches in journal order.

    Records carry their journal index (``index`` / ``sequenceNumber``) and tracks batches their journal byte
    ``offset``, so a store can make every write idempotent. Raise on failure: the batch is retried with backoff.
    """

    key: str = "store"  # stable id: names the cursor file that remembers what was delivered

    def open(self, info: dict[str, Any]) -> None:
        """Create or reopen the experiment (``info`` is experiment.json's content)."""

    def write_params(self, params: dict[str, Any]) -> None:
        """The whole flat parameter dict, latest version."""

    def write_logs(self, records: list[dict[str, Any]]) -> None:
        """logs.jsonl records, in sequence order."""

    def write_metrics(self, name: str, records: list[dict[str, Any]]) -> None:
        """data.jsonl records of metric ``name``, in index order."""

    def write_tracks(self, topic: str, records: list[dict[str, Any]], offset: int) -> None:
        """data.jsonl entries of track ``topic``; ``offset`` is the journal byte offset of the first one."""

    def write_file(self, entry: dict[str, Any], path: str) -> None:
        """One stored file: its index entry and the path of its content."""

    def set_status(self, info: dict[str, Any]) -> None:
        """experiment.json after a status change (``status``, ``statusReason``)."""

    def close(self) -> None:
        """No more calls follow."""
