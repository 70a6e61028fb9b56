"""Which process logs: rank 0 by the Keras backend's own notion, else the launcher's environment."""

from __future__ import annotations

import json
import os
import sys

# Set by torchrun / accelerate / deepspeed (RANK) and by keras.distribution.initialize (its own variable).
_ENV = ("RANK", "KERAS_DISTRIBUTION_PROCESS_ID")


def _backend_rank(backend: str) -> int | None:
    if backend == "jax":
        jax = sys.modules.get("jax")
        if jax is not None and jax.process_count() > 1:
            return int(jax.process_index())
    elif backend == "torch":
        if "torch" not in sys.modules:
            return None
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    elif backend == "tensorflow":
        # MultiWorkerMirroredStrategy: the chief (or worker 0 when there is no chief) writes.
        raw = os.environ.get("TF_CONFIG")
        if raw:
            try:
                cfg = json.loads(raw)
                task = cfg.get("task", {})
                kind, index = task.get("type"), int(task.get("index", 0))
                if kind == "chief":
                    return 0
                if kind == "worker" and "chief" not in cfg.get("cluster", {}):
                    return index
                return 1  # evaluator, ps, or a worker beside a chief
            except (ValueError, TypeError, AttributeError):
                return None
    return None


def process_rank(backend: str) -> int:
    """This process's rank: the backend's distributed runtime if it is set up, else RANK-style variables."""
    rank = _backend_rank(backend)
    if rank is not None:
        return rank
    for name in _ENV:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                continue
    return 0
