"""Training throughput end to end (prepared store -> loader -> device augmentations -> step) against
the model-alone rate (random waveforms already on the device, same batch, precision and augmentations).

    python benchmarks/bench_train.py --configs small seed108 --steps 20 --batch-size 16 --device cpu \
        [--precision bf16-mixed]

The gap between the two is the cost of the data path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightning as L  # noqa: E402
import torch  # noqa: E402
from common import machine, print_markdown, save_json  # noqa: E402

from birdsed.config import apply_overrides, load_config  # noqa: E402
from birdsed.data.manifest import read_dataset  # noqa: E402
from birdsed.data.store import AudioStore, prepare  # noqa: E402
from birdsed.data.synth import SynthConfig, synthesize  # noqa: E402
from birdsed.device import lightning_precision
from birdsed.train.run import train  # noqa: E402
from birdsed.train.task import SEDTask


class StepTimer(L.Callback):
    """Wall time of the training steps after `warmup` steps (loader waits included)."""

    def __init__(self, warmup: int):
        self.warmup, self.t0, self.n = warmup, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.t0 is None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.t0 is not None:
            self.n += len(batch[0])


def model_alone(cfg, n_classes: int, steps: int, warmup: int, device: str, bf16: bool) -> float:
    """Clips/s of forward + backward + AdamW on random waveforms already on the device (bf16 autocast if asked)."""
    task = SEDTask(cfg.to_dict(), [f"c{i}" for i in range(n_classes)]).to(device).train()
    task.log = lambda *a, **k: None
    opt = torch.optim.AdamW(task.parameters(), lr=1e-4)
    B, n = cfg.train.batch_size, int(cfg.data.crop_s * cfg.frontend.sample_rate_hz)
    wave = torch.randn(B, n, device=device) * 0.1
    y = (torch.rand(B, n_classes, device=device) < 0.05).float()
    cuda = device == "cuda"
    if cuda:
        task.model.to(memory_format=torch.channels_last)
    for i in range(steps + warmup):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = task.training_step((wave, y), i)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    return steps * B / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/train"))
    ap.add_argument("--configs", nargs="+", default=["small", "seed108"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "32-true", "bf16-mixed"],
        help="train.precision (auto: bf16-mixed on CUDA, 32-true on the CPU)",
    )
    a = ap.parse_args()
    data = a.out / "data"
    if not (data / "train.csv").is_file():
        synthesize(data, SynthConfig(species=6, clips_per_species=10, soundscapes=1, soundscape_s=10), quiet=True)
    store_dir = a.out / "store"
    prepare(read_dataset(data), store_dir, quiet=True)
    n_classes = len(AudioStore(store_dir).manifest().classes)
    rows = []
    for preset in a.configs:
        cfg = apply_overrides(
            load_config(preset),
            [
                f"train.batch_size={a.batch_size}",
                f"train.max_steps={a.steps + a.warmup}",
                "train.epochs=1000",
                f"train.workers={a.workers}",
                f"train.device={a.device}",
                f"train.precision={a.precision}",
                "data.val_fraction=0",
                "model.pretrained=false",
            ],
        )
        timer = StepTimer(a.warmup)
        t_start = time.perf_counter()
        train(store_dir, cfg, a.out / f"run_{preset}", quiet=True, extra_callbacks=[timer])
        e2e = timer.n / (time.perf_counter() - timer.t0) if timer.t0 else float("nan")
        device = "cuda" if a.device == "cuda" else "cpu"
        bf16 = lightning_precision(a.precision, "gpu" if device == "cuda" else "cpu") == "bf16-mixed"
        alone = model_alone(cfg, n_classes, a.steps, a.warmup, device, bf16)
        row = {
            "config": preset,
            "backbone": cfg.model.backbone,
            "n_mels": cfg.frontend.n_mels,
            "batch": a.batch_size,
            "device": a.device,
            "bf16": bf16,
            "end_to_end_clips_s": round(e2e, 2),
            "model_alone_clips_s": round(alone, 2),
            "ratio": round(e2e / alone, 3),
            "wall_s": round(time.perf_counter() - t_start, 1),
        }
        print(row, flush=True)
        rows.append(row)
    print_markdown(
        rows,
        {
            "config": "{config}",
            "backbone": "{backbone}",
            "mels": "{n_mels}",
            "batch": "{batch}",
            "device": "{device}",
            "bf16": "{bf16}",
            "end to end clips/s": "{end_to_end_clips_s:.1f}",
            "model alone clips/s": "{model_alone_clips_s:.1f}",
            "ratio": "{ratio:.2f}",
        },
    )
    save_json(a.out / f"train_{a.device}_{a.precision}.json", {"machine": machine(), "args": vars(a), "results": rows})


if __name__ == "__main__":
    main()
