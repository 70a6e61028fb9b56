"""This project's ``ml_dash``, or an ImportError that names the fix.

PyPI's ``ml-dash`` is another project that also installs a module ``ml_dash``; this adapter needs the core from
the ml-dash repository (the distribution ``ml-dash-core``), which has ``ml_dash.integration``.
"""

try:
    from ml_dash import BufferConfig, Experiment, integration

    if getattr(integration, "KIT_VERSION", 0) < 2:  # 2: row_builder
        raise ImportError("ml_dash.integration is too old")
except ImportError as e:
    raise ImportError(
        f"ml_dash_keras needs the ml-dash core of its own repository (distribution 'ml-dash-core', imported as "
        f"ml_dash), but the ml_dash found is not it ({e}). PyPI's 'ml-dash' is another project: "
        f"pip uninstall ml-dash, then pip install ./packages/core ./packages/keras from the repository."
    ) from e

__all__ = ["BufferConfig", "Experiment", "integration"]
