"""Console lines (stderr). Quiet mode silences the progress lines; warnings always go through `warnings`."""

from __future__ import annotations

import sys
import warnings


class MLDashWarning(UserWarning):
    """A problem ml-dash handled without interrupting training (a failed write that will be retried, ...)."""


def say(line: str, quiet: bool = False) -> None:
    if quiet:
        return
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # closed stderr at interpreter exit
        pass


def warn(message: str) -> None:
    try:
        warnings.warn("[ML-Dash] " + message, MLDashWarning, stacklevel=3)
    except Exception:  # warnings machinery torn down at exit
        say("[ML-Dash] warning: " + message)
