"""Fine-tuning throughput of BirdNET V2.4's torch port under birdsed's head (issue #38): timed training steps of the
model alone (forward, backward, AdamW step, as train/finetune.py runs them) on random crops already on the device,
in float32 and in bf16 autocast, as crops per second and x real time (a crop is data.crop_s of audio, cut into 3 s
sub-windows every model.embed_hop_s: the birdnet preset's 5 s crop at 1 s hop is 3 sub-windows).

    python benchmarks/bench_finetune.py --device cuda --batch 32 --steps 20 --out bench-out/finetune
    python benchmarks/bench_finetune.py --device cpu --batch 2 --steps 2 --warmup 1   # a check on the CPU
    python benchmarks/bench_finetune.py --device cpu --precisions fp32 --steps 0 --tails 0.9 0.8 0.75 0.6 0.5 \
        --tail-steps 5   # train.backbone_cache: steps of the layers after each depth's cut, on cached activations

With --audio-from, the step from audio again, with only the port's layers from each depth on training
(train.backbone_train_from without the cache: the forward runs whole, the backward stops at that depth).
With --tails, each depth's step is timed the same way on activations at its cut (BirdNETTorch.cut_before) instead
of audio: what train.backbone_cache trains (embedtrain.CachedTail), fp32.

Writes OUT/finetune_<device>.json (one row per precision) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save_json  # noqa: E402

from birdsed.config import apply_overrides, load_config  # noqa: E402
from birdsed.model.birdnet import N_SAMPLES  # noqa: E402
from birdsed.model.birdnet_finetune import FineTunedNet  # noqa: E402
from birdsed.model.birdnet_torch import load_birdnet_torch  # noqa: E402
from birdsed.model.embedhead import EmbeddingHead  # noqa: E402
from birdsed.train.finetune import optimiser  # noqa: E402
from birdsed.train.loss import bce  # noqa: E402


def timed_steps(net, opt, x, y, steps: int, warmup: int, bf16: bool, device: torch.device) -> float:
    """Seconds for `steps` training steps after `warmup` untimed ones."""

    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            out = net(x)["clipwise"]
        loss = bce(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def tensor_name(backbone, t: int) -> str:
    """A graph tensor's short name: "model/BLOCK_3-5_ADD/add" -> "BLOCK_3-5_ADD"."""
    return backbone.net.graph.names[t].removeprefix("model/").split("/")[0]


def tail_row(depth: float, args, cfg, n_sub: int, device: torch.device) -> dict:
    """Timed steps of the layers after depth's cut and the head, on random activations at the cut (fp32)."""
    torch.manual_seed(0)
    backbone = load_birdnet_torch()
    cut = backbone.cut_before(depth)
    net = FineTunedNet(backbone, EmbeddingHead(args.classes), depth, cut=cut).to(device).train()
    opt = optimiser(net, cfg)
    with torch.no_grad():
        a = backbone.to(device).run_to(torch.randn(args.batch * n_sub, N_SAMPLES, device=device) * 0.1, cut)
    x = a.view(args.batch, n_sub, *a.shape[1:])
    y = (torch.rand(args.batch, args.classes, device=device) < 0.05).float()
    s = timed_steps(net, opt, x, y, args.tail_steps, args.warmup, False, device)
    crops = args.batch * args.tail_steps
    trained = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    return {
        "device": str(device),
        "precision": "fp32",
        "cut": f"{depth:g} ({tensor_name(backbone, cut)}, {trained / 1e6:.2f} M)",
        "batch": args.batch,
        "sub_windows_per_crop": n_sub,
        "steps": args.tail_steps,
        "wall_s": round(s, 3),
        "crops_per_s": round(crops / s, 1),
        "x_real_time": round(crops * cfg.data.crop_s / s, 1),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--classes", type=int, default=87, help="the head's classes (NIPS4B: 87)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--tails", nargs="*", type=float, default=[], help="train.backbone_train_from depths to time")
    ap.add_argument("--tail-steps", type=int, default=5)
    ap.add_argument(
        "--audio-from", nargs="*", type=float, default=[], help="from audio, training only from these depths (fp32)"
    )
    ap.add_argument("--out", type=Path, default=Path("bench-out/finetune"))
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = apply_overrides(load_config("birdnet"), ["model.freeze_backbone=false"])
    crop_s, hop_s = cfg.data.crop_s, cfg.model.embed_hop_s
    n_sub = int((crop_s - 3.0) / hop_s) + 1
    rows = []
    audio_runs = [(p, 0.0, args.steps) for p in (args.precisions if args.steps else [])]
    audio_runs += [("fp32", d, args.tail_steps) for d in args.audio_from]
    for precision, depth, steps in audio_runs:
        torch.manual_seed(0)
        net = FineTunedNet(load_birdnet_torch(), EmbeddingHead(args.classes), depth).to(device).train()
        opt = optimiser(net, cfg)
        x = torch.randn(args.batch, n_sub, N_SAMPLES, device=device) * 0.1
        y = (torch.rand(args.batch, args.classes, device=device) < 0.05).float()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        s = timed_steps(net, opt, x, y, steps, args.warmup, precision == "bf16", device)
        crops = args.batch * steps
        trained = sum(p.numel() for p in net.backbone.parameters() if p.requires_grad)
        row = {
            "device": str(device),
            "precision": precision,
            "cut": f"audio {precision}, from {depth:g} ({trained / 1e6:.2f} M)",
            "batch": args.batch,
            "sub_windows_per_crop": n_sub,
            "steps": steps,
            "wall_s": round(s, 3),
            "crops_per_s": round(crops / s, 1),
            "x_real_time": round(crops * crop_s / s, 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None,
        }
        rows.append(row)
        print(row, flush=True)
        del net, opt
    for depth in args.tails:
        rows.append(tail_row(depth, args, cfg, n_sub, device))
        print(rows[-1], flush=True)
    print("\n| from | batch (crops x sub-windows) | s a step | crops/s | x real time | peak GPU MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.get('cut', 'audio, ' + r['precision'])} | {r['batch']} x {n_sub} | {r['wall_s'] / r['steps']:.3f} "
            f"| {r['crops_per_s']:,} | {r['x_real_time']:,} "
            f"| {r['peak_gpu_mib'] or '-'} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    save_json(args.out / f"finetune_{device.type}.json", {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
