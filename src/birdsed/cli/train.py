"""`birdsed train`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from birdsed.cli.registry import console, verb
from birdsed.config import DEVICES, preset_names


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="a data-set folder or a prepared store")
    p.add_argument("--config", default="seed108", help=f"a YAML file or a preset name ({', '.join(preset_names())})")
    p.add_argument("--out", type=Path, required=True, help="run folder; the model is written to RUN/model")
    p.add_argument(
        "--val", type=Path, default=None, help="a separate validation data set (default: a stratified split)"
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--backbone")
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--devices", help="number of devices (GPUs or CPU processes)")
    p.add_argument(
        "--num-nodes", type=int, help="machines of a multi-node run (srun / torchrun start one process per device)"
    )
    p.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    p.add_argument("--workers", type=int, help="data-loader worker processes")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.ckpt")
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
    from birdsed.train.run import train

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
    pseudo = [str(Path(p).resolve()) for p in a.pseudo or []]
    if a.teacher:
        from birdsed.train.pseudo import teacher_labels

        checked = apply_overrides(cfg, overrides)
        checked.check()  # refused before the teacher runs
        pl = teacher_labels(a.teacher, a.data, a.out / "teacher_pl", a.unlabelled, quiet=a.quiet,
                            allow_outside=checked.data.allow_outside_paths)  # fmt: skip
        pseudo.append(str(pl.resolve()))
    if pseudo:
        overrides.append(f"data.pseudo={json.dumps(pseudo)}")
    cfg = apply_overrides(cfg, overrides)
    model_dir = train(a.data, cfg, a.out, resume=a.resume, val_data=a.val, quiet=a.quiet)
    console.print(f"model written to {model_dir}")
    return 0
