"""Opt-in system metrics: a sampler thread that writes a `sys` metric stream every N seconds.

``Experiment(..., system_metrics=True)`` samples every 10 s, ``system_metrics=2.5`` every 2.5 s; the environment
variable ``ML_DASH_SYSTEM_METRICS`` (``1``/``true`` or a number of seconds) turns it on when the argument is not
given. The training thread never samples: the thread wakes, reads the counters and appends one row, like any
other caller of ``metrics("sys").log``.

Fields of a row (those the machine can give): ``cpu`` (system CPU %), ``proc_cpu`` (this process's CPU %, can
exceed 100 with threads), ``mem`` (system memory used %), ``proc_rss_mb``, ``disk_read_mbs`` / ``disk_write_mbs``
and ``net_recv_mbs`` / ``net_sent_mbs`` (MB/s since the last sample), and per GPU ``gpu<i>_util`` (%),
``gpu<i>_mem_mb``, ``gpu<i>_mem`` (% of its memory), ``gpu<i>_temp`` (°C) and ``gpu<i>_power_w``.
psutil gives the CPU, memory, disk and network counters (``pip install psutil``; without it only ``proc_cpu``
and ``proc_rss_mb`` are sampled, from the standard library); NVML (``pip install nvidia-ml-py``) the GPU ones.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from . import console

DEFAULT_INTERVAL = 10.0
MIN_INTERVAL = 0.1
STREAM = "sys"
_MB = 1024 * 1024


def resolve_interval(value: bool | float | int | str | None) -> float | None:
    """The sampling period in seconds, or None when off. Raises ValueError naming a bad value."""
    if value is None:
        raw = os.environ.get("ML_DASH_SYSTEM_METRICS", "").strip().lower()
        if raw in ("", "0", "false", "no", "off"):
            return None
        if raw in ("1", "true", "yes", "on"):
            return DEFAULT_INTERVAL
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(
                f"ML_DASH_SYSTEM_METRICS={raw!r}: use 1/true for every {DEFAULT_INTERVAL:g} s, or a number of seconds"
            ) from None
    if value is False:
        return None
    if value is True:
        return DEFAULT_INTERVAL
    if isinstance(value, str) or not isinstance(value, (int, float)):
        raise TypeError(f"system_metrics must be True, False or a number of seconds, got {value!r}")
    if not value == value or value < MIN_INTERVAL:
        raise ValueError(f"system_metrics: the period must be at least {MIN_INTERVAL} s, got {value!r}")
    return float(value)


class _Counters:
    """Reads the machine's counters; every source is optional and probed once."""

    def __init__(self) -> None:
        self.psutil: Any = None
        self.proc: Any = None
        try:
            import psutil

            self.psutil = psutil
            self.proc = psutil.Process()
            self.proc.cpu_percent(None)
            psutil.cpu_percent(None)
        except ImportError:
            pass
        except Exception:  # noqa: BLE001 - a sandbox without /proc access: keep the stdlib fallback
            self.psutil = None
        self.nvml: Any = None
        self.gpus: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.gpus = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # noqa: BLE001 - not installed, no driver, no GPU: no GPU fields
            self.nvml = None
        self.last_t = time.monotonic()
        self.last_cpu = _process_cpu()
        self.last_io = self._io()

    def _io(self) -> tuple[float, float, float, float] | None:
        ps = self.psutil
        if ps is None:
            return None
        try:
            d = ps.disk_io_counters()
            n = ps.net_io_counters()
        except Exception:  # noqa: BLE001
            return None
        if d is None or n is None:
            return None
        return (d.read_bytes, d.write_bytes, n.bytes_recv, n.bytes_sent)

    def sample(self) -> dict[str, float]:
        now = time.monotonic()
        dt = max(now - self.last_t, 1e-6)
        row: dict[str, float] = {}
        cpu = _process_cpu()
        row["proc_cpu"] = round(100.0 * (cpu - self.last_cpu) / dt, 2)
        self.last_cpu = cpu
        ps = self.psutil
        if ps is not None:
            try:
                row["cpu"] = ps.cpu_percent(None)
                row["mem"] = ps.virtual_memory().percent
                row["proc_rss_mb"] = round(self.proc.memory_info().rss / _MB, 2)
            except Exception:  # noqa: BLE001
                pass
            io = self._io()
            if io is not None and self.last_io is not None:
                names = ("disk_read_mbs", "disk_write_mbs", "net_recv_mbs", "net_sent_mbs")
                for name, a, b in zip(names, io, self.last_io, strict=True):
                    row[name] = round(max(a - b, 0) / _MB / dt, 4)
            self.last_io = io
        else:
            rss = _stdlib_rss()
            if rss is not None:
                row["proc_rss_mb"] = round(rss / _MB, 2)
        if self.nvml is not None:
            nv = self.nvml
            for i, h in enumerate(self.gpus):
                _gpu_fields(nv, h, f"gpu{i}_", row)
        self.last_t = now
        return row


def _gpu_fields(nv: Any, h: Any, p: str, row: dict[str, float]) -> None:
    reads: list[tuple[str, Callable[[], float]]] = [
        ("util", lambda: float(nv.nvmlDeviceGetUtilizationRates(h).gpu)),
        ("temp", lambda: float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))),
        ("power_w", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
    ]
    for name, read in reads:
        try:
            row[p + name] = read()
        except Exception:  # noqa: BLE001 - a counter this GPU does not have
            pass
    try:
        m = nv.nvmlDeviceGetMemoryInfo(h)
        row[p + "mem_mb"] = round(m.used / _MB, 1)
        row[p + "mem"] = round(100.0 * m.used / m.total, 2) if m.total else 0.0
    except Exception:  # noqa: BLE001
        pass


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _stdlib_rss() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class SystemSampler:
    """A daemon thread appending one `sys` row every ``interval`` seconds until ``stop()``."""

    def __init__(self, log_row: Callable[..., Any], interval: float) -> None:
        self._log_row = log_row
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ml-dash-sysmetrics", daemon=True)
        self._pid = os.getpid()

    def start(self) -> SystemSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            counters = _Counters()
        except Exception as e:  # noqa: BLE001 - never an exception out of a background thread
            console.warn(f"system metrics are off: the counters could not be read ({e})")
            return
        if counters.psutil is None and "psutil" not in sys.modules:
            console.warn("system metrics: psutil is not installed (pip install psutil); only this process's CPU "
                         "and memory are sampled")
        while not self._stop.wait(self.interval):
            if os.getpid() != self._pid:
                return
            try:
                row = counters.sample()
                self._log_row(**row)
            except RuntimeError:  # the run was closed under us
                return
            except Exception as e:  # noqa: BLE001
                console.warn(f"system metrics: a sample failed ({e}); sampling goes on")

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
