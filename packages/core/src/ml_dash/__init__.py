"""ml-dash: experiment tracking whose log calls return at once.

``import ml_dash`` stays light: no framework, no network, no plugin discovery.
"""

from .buffer import BufferConfig
from .experiment import Experiment
from .reader import ExperimentView, load

__version__ = "0.1.0"
__all__ = ["BufferConfig", "Experiment", "ExperimentView", "load", "__version__"]
