"""What this machine lets a process start: the cores it may run on, and the most worker processes a verb starts.
Torch-free, below every verb (device.py checks train's devices with it; cli/values.py bounds --workers by it)."""

from __future__ import annotations

import os


def cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cores_cap(factor: int = 4) -> int:
    """The most worker processes a verb starts: `factor` per core this process may use (at least 4)."""
    return max(4, factor * cores())
