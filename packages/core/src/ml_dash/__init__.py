"""ml-dash: experiment tracking whose log calls return at once.

``import ml_dash`` stays light: no framework, no network, no plugin discovery (``hookimpl`` brings in pluggy
only when it is first used).
"""

from .config import BufferConfig
from .console import MLDashWarning
from .experiment import Experiment
from .reader import ExperimentView, load
from .stores.base import PermanentError, RetryLater, Store

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "BufferConfig",
    "Experiment",
    "ExperimentView",
    "hookimpl",
    "load",
    "MLDashWarning",
    "PermanentError",
    "RetryLater",
    "Store",
]


def __getattr__(name: str) -> object:
    if name == "hookimpl":  # the marker for plugin hooks: pluggy is imported on first use, not at `import ml_dash`
        from .hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'ml_dash' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"hookimpl"})
