"""`birdsed train`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from birdsed.cli.registry import console, verb
from birdsed.cli.values import cores_cap, count, count_or
from birdsed.config import DEVICES, preset_names

MAX_EPOCHS, MAX_STEPS, MAX_BATCH, MAX_DEVICES = 100_000, 10**9, 65_536, 4096
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seeds are 32-bit


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="a data-set folder or a prepared store")
    p.add_argument("--config", default="seed108", help=f"a YAML file or a preset name ({', '.join(preset_names())})")
    p.add_argument("--out", type=Path, required=True, help="run folder; the model is written to RUN/model")
    p.add_argument(
        "--val", type=Path, default=None, help="a separate validation data set (default: a stratified split)"
    )
    p.add_argument("--epochs", type=count(1, MAX_EPOCHS))
    p.add_argument(
        "--max-steps", type=count(0, MAX_STEPS), help="stop after this many optimiser steps (0: no limit, the epochs)"
    )
    p.add_argument("--batch-size", type=count(1, MAX_BATCH))
    p.add_argument("--backbone")
    p.add_argument("--device", choices=DEVICES)
    p.add_argument(
        "--devices",
        type=count_or("auto", 1, MAX_DEVICES),
        help="number of devices (GPUs, or CPU processes: at most the cores) or auto",
    )
    p.add_argument(
        "--num-nodes",
        type=count(1, MAX_DEVICES),
        help="machines of a multi-node run (srun / torchrun start one process per device)",
    )
    p.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    p.add_argument("--workers", type=count(0, cores_cap()), help="data-loader worker processes")
    p.add_argument("--seed", type=count(0, MAX_SEED))
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from RUN/checkpoints/last.ckpt (last.pt: BirdNET, fine-tuned or on cached features)",
    )
    p.add_argument(
        "--pseudo",
        action="append",
        metavar="PL",
        help="a pseudo-label table (birdsed pseudo-label): its "
        "windows join training with soft targets (repeatable; data.pseudo)",
    )
    p.add_argument(
        "--teacher",
        type=Path,
        metavar="M",
        help="distil: M's soft labels of the training recordings (and of "
        "--unlabelled) join training (RUN/teacher_pl), e.g. an ensemble into a small model",
    )
    p.add_argument("--unlabelled", nargs="+", default=[], help="with --teacher: unlabelled recordings it labels too")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override any config value")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@verb(
    "train",
    "train an SED model (Lightning; CPU, one GPU or many)",
    "birdsed train --data data/synth --config small --out runs/small --epochs 8",
    _add_train,
)
def cmd_train(a: argparse.Namespace) -> int:
    from birdsed.config import apply_overrides, load_config
    from birdsed.train.run import KEPT_NOTE, resumed_checkpoint, train

    cfg = load_config(a.config)
    flags = {
        "train.epochs": a.epochs,
        "train.max_steps": a.max_steps,
        "train.batch_size": a.batch_size,
        "model.backbone": a.backbone,
        "train.device": a.device,
        "train.workers": a.workers,
        "train.seed": a.seed,
        "train.devices": a.devices,
        "train.num_nodes": a.num_nodes,
        "train.strategy": a.strategy,
    }
    overrides = a.set + [f"{k}={v}" for k, v in flags.items() if v is not None]  # named flags win
    if a.pseudo:
        overrides.append(f"data.pseudo={json.dumps([str(Path(p).resolve()) for p in a.pseudo])}")
    cfg = apply_overrides(cfg, overrides)
    last = Path(a.out) / resumed_checkpoint(cfg)
    before = last.stat().st_mtime_ns if last.is_file() else None  # an earlier run's, unless this one writes its own
    try:
        model_dir = train(a.data, cfg, a.out, a.resume, a.val, a.quiet, teacher=a.teacher, unlabelled=a.unlabelled)
    except KeyboardInterrupt as e:  # cli.main prints the notes
        if last.is_file() and (a.resume or last.stat().st_mtime_ns != before):
            if not any(n.startswith(KEPT_NOTE) for n in getattr(e, "__notes__", [])):
                e.add_note(f"{KEPT_NOTE} ({last}).")  # stopped outside fit (writing the model)
            e.add_note("The same command with --resume continues.")
        elif not getattr(e, "__notes__", None):  # (Lightning's fit says what it kept)
            e.add_note("No epoch had finished: nothing to resume (the same command without --resume starts again).")
        raise
    console.print(f"model written to {model_dir}")
    return 0
