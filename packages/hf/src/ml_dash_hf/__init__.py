"""ml-dash adapter for the HuggingFace transformers `Trainer`.

```python
from ml_dash_hf import MLDashCallback
trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[MLDashCallback("my-project/run-1")])
```
"""

from . import _compat  # noqa: F401  (a clear ImportError when ml_dash is not this project's)
from .callback import MLDashCallback, train

__all__ = ["MLDashCallback", "train"]
__version__ = "0.1.0"
