"""What every benchmark prints and stores: the machine, the versions, the settings."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NIPS4B = (REPO / ".." / "shared" / "data" / "nips4b").resolve()


def machine() -> dict:
    import torch

    import birdsed

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "birdsed": birdsed.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "gpu": gpu,
    }


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def predict_workers(asked: int | None, device: str) -> int:
    """The decoding processes predict runs: those asked for, else predict's own default for the device."""
    import torch

    from birdsed.infer.loop import default_workers

    return default_workers(torch.device(device)) if asked is None else asked


def workers_peak_rss_mb(workers: int) -> float | None:
    """Peak RSS of the finished decoding processes, in MiB; None when predict ran none (a finished child
    process that importing torch leaves behind, about 430 MiB, would otherwise pass for one)."""
    return round(peak_rss_mb(children=True)) if workers else None


def save_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"results written to {path}")


def print_markdown(rows: list[dict], columns: dict[str, str]) -> None:
    """Print rows as a Markdown table; `columns` maps a header to a format string over the row's keys."""
    print("\n| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(fmt.format(**r) for fmt in columns.values()) + " |")
