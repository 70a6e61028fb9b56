"""Settings: `BufferConfig`, resolved as explicit argument > environment variable > default, and the one parser
of every other ``ML_DASH_*`` setting of the core (`env_flag`, `default_root`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

# name -> (type, default, minimum) ; minimum None means no bound check (bools)
_SPEC: dict[str, tuple[type, Any, float | None]] = {
    "buffer_enabled": (bool, True, None),
    "flush_interval": (float, 5.0, 0.0),
    "log_batch_size": (int, 100, 1),
    "metric_batch_size": (int, 100, 1),
    "track_batch_size": (int, 100, 1),
    "file_batch_size": (int, 100, 1),
    "file_upload_workers": (int, 4, 1),
    "write_interval": (float, 0.2, 0.0),
    "close_timeout": (float, 30.0, 0.0),
    "copy_limit_bytes": (int, 8 * 1024 * 1024, 0),
    "max_pending_items": (int, 200_000, 1),
    "quiet": (bool, False, None),
}


def env_name(field: str) -> str:
    return "ML_DASH_" + field.upper()


def _parse(field: str, raw: str, kind: type) -> Any:
    var = env_name(field)
    text = raw.strip()
    if kind is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{var}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{var}={raw!r} is not a valid {kind.__name__}") from None


@dataclass
class BufferConfig:
    """How the background buffer batches and delivers data.

    Every field may be given here, or by its environment variable ``ML_DASH_<FIELD>`` (for example
    ``ML_DASH_FLUSH_INTERVAL``); an explicit argument beats the environment, which beats the default.
    """

    buffer_enabled: bool = None  # type: ignore[assignment]  # None: environment, else default
    flush_interval: float = None  # type: ignore[assignment]  # None: environment, else default
    log_batch_size: int = None  # type: ignore[assignment]  # None: environment, else default
    metric_batch_size: int = None  # type: ignore[assignment]  # None: environment, else default
    track_batch_size: int = None  # type: ignore[assignment]  # None: environment, else default
    file_batch_size: int = None  # type: ignore[assignment]  # None: environment, else default
    file_upload_workers: int = None  # type: ignore[assignment]  # None: environment, else default
    write_interval: float = None  # type: ignore[assignment]  # None: environment, else default
    close_timeout: float = None  # type: ignore[assignment]  # None: environment, else default
    copy_limit_bytes: int = None  # type: ignore[assignment]  # None: environment, else default
    max_pending_items: int = None  # type: ignore[assignment]  # None: environment, else default
    quiet: bool = None  # type: ignore[assignment]  # None: environment, else default

    def __post_init__(self) -> None:
        for f in fields(self):
            kind, default, minimum = _SPEC[f.name]
            value = getattr(self, f.name)
            if value is None:
                raw = os.environ.get(env_name(f.name))
                value = default if raw is None else _parse(f.name, raw, kind)
            elif kind is bool:
                if not isinstance(value, bool):
                    raise TypeError(f"BufferConfig.{f.name} must be a bool, got {value!r}")
            elif kind is int:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"BufferConfig.{f.name} must be an int, got {value!r}")
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"BufferConfig.{f.name} must be a number, got {value!r}")
                value = float(value)
            if minimum is not None and not value >= minimum:
                raise ValueError(f"BufferConfig.{f.name} must be >= {minimum}, got {value!r}")
            setattr(self, f.name, value)

    # typed accessors for mypy-strict callers (fields are never None after __post_init__)
    def get(self, name: str) -> Any:
        return getattr(self, name)


def env_flag(name: str) -> bool:
    """A boolean environment variable (true/false, 1/0, yes/no, on/off; unset is False). ValueError names a
    value that is none of these."""
    raw = os.environ.get(name)
    if raw is None:
        return False
    return bool(_parse(name[len("ML_DASH_"):].lower(), raw, bool))


DEFAULT_ROOT = ".dash"


def default_root() -> str:
    """Where runs are stored when no ``dash_root`` is given: ``ML_DASH_ROOT``, else ``.dash``."""
    return os.environ.get("ML_DASH_ROOT") or DEFAULT_ROOT


def cache_root() -> Path:
    """Where caches of what was read live (the column cache, ``ml-dash ls``'s listing cache): never inside
    ``.dash``, never required to exist or be writable. ``$ML_DASH_CACHE_DIR``, else ``$XDG_CACHE_HOME/ml-dash``,
    else ``~/.cache/ml-dash``."""
    env = os.environ.get("ML_DASH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ml-dash"
