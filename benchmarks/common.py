"""What every benchmark prints: the machine it ran on, medians with their spread."""
from __future__ import annotations

import os
import platform
import statistics
from importlib.metadata import version


def machine(libraries: tuple[str, ...] = ()) -> str:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    libs = "".join(f", {p} {version(p)}" for p in libraries)
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}{libs}"


def spread(values: list[float], fmt: str) -> str:
    """``median (min-max)`` of repeated measurements; the median alone for one."""
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"
