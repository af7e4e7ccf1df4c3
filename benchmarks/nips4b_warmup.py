"""NIPS4B fold 0: what the head warm-up gives, and what one epoch of fine-tuning with each augmentation does to it.

    python benchmarks/nips4b_warmup.py --out bench-out/nips4b_warmup

A diagnostic next to `nips4b.py` (cheap: about 6 min on 2 CPU cores). On the training
folds of fold 0, with birdsed's own validation split inside them:
1. warm up the head on frozen features, with the backbone's BatchNorm statistics
   recomputed on the spectrograms or kept from ImageNet; internal validation macro AP;
2. from the ImageNet-statistics warm-up, fine-tune one epoch (lr 3e-4, frozen BatchNorm)
   with no augmentation, or with one augmentation group at the preset's probability
   (nips4b.yaml's values, or 0.5/0.2 for the ones it switches off); validation macro AP.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NIPS4B, machine, print_markdown, save_json  # noqa: E402
from nips4b import write_subset  # noqa: E402

from birdsed.config import apply_overrides, load_config  # noqa: E402
from birdsed.data.dataset import CropDataset, WindowDataset  # noqa: E402
from birdsed.data.manifest import read_dataset  # noqa: E402
from birdsed.data.sampling import build_items, iterative_stratified_folds, targets  # noqa: E402
from birdsed.evaluate.metrics import recording_metrics  # noqa: E402
from birdsed.model.detector import window_scores  # noqa: E402
from birdsed.train.data import load_train_data
from birdsed.train.head_warmup import warm_up_head  # noqa: E402
from birdsed.train.task import SEDTask

OFF = {"gain_p": 0.0, "noise_p": 0.0, "mixup_p": 0.0, "specaug_p": 0.0, "pitch_p": 0.0, "tempo_p": 0.0}
GROUPS = {
    "none": {},
    "mixup": {"mixup_p": 0.5},
    "gain + noise": {"gain_p": 0.5, "noise_p": 0.2},
    "pitch + tempo": {"pitch_p": 0.2, "tempo_p": 0.2},
    "SpecAugment": {"specaug_p": 0.5},
}


def val_map(task: SEDTask, val_ds: WindowDataset) -> float:
    task.model.eval()
    scores, ys, recs = [], [], []
    with torch.no_grad():
        for w, y, r in DataLoader(val_ds, batch_size=32):
            scores.append(window_scores(task.model(w))["clipwise"]), ys.append(y), recs.append(r)
    m = recording_metrics({"clipwise": torch.cat(scores).numpy()}, torch.cat(ys).numpy(), torch.cat(recs).numpy())
    return float(m["val_map"])


def one_epoch(task: SEDTask, crops: CropDataset, lr: float, seed: int) -> None:
    """One epoch of SEDTask's loss (augmentations included), BatchNorm statistics frozen."""
    opt = torch.optim.AdamW(task.parameters(), lr=lr, weight_decay=1e-2)
    task.train()
    task.freeze_batchnorm()
    for wave, y, _ in DataLoader(crops, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed)):
        loss, _ = task.loss(wave, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 1.0)
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=NIPS4B)
    ap.add_argument("--out", type=Path, default=Path("bench-out/nips4b_warmup"))
    ap.add_argument("--lr", type=float, default=3e-4)
    a = ap.parse_args()
    if not (a.data / "labels.csv").is_file():
        sys.exit(f"NIPS4B not found at {a.data}")
    torch.set_num_threads(2)
    manifest = read_dataset(a.data)
    folds = iterative_stratified_folds(list(manifest.table["primary_labels"]), 5, 0)
    data = write_subset(manifest.table[folds != 0].reset_index(drop=True), a.out / "data")
    base = apply_overrides(
        load_config("nips4b"), ["data.val_fraction=0.1", "data.allow_outside_paths=true"]
    )  # it scores on birdsed's validation split
    td = load_train_data(data, a.out, base)
    tgt = targets(td.train, td.classes, base.data)
    tgt.update(targets(td.val, td.classes, base.data))
    val_ds = WindowDataset(td.val_store, list(td.val.table["recording_id"]), tgt, base.data.crop_s, 1, "pad")
    warm_ds = WindowDataset(td.store, list(td.train.table["recording_id"]), tgt, base.data.crop_s, 1, "pad")
    crops = CropDataset(td.store, build_items(td.train, base.data, 0), tgt, base.data.crop_s, "pad")
    rows = []
    start = None
    for recompute in (True, False):
        torch.manual_seed(0)
        task = SEDTask(base.to_dict(), td.classes)
        warm_up_head(task.model, warm_ds, 100, recalibrate_bn=recompute)
        rows.append(
            {
                "step": "head warm-up",
                "bn": "recomputed" if recompute else "ImageNet",
                "aug": "",
                "val_map": val_map(task, val_ds),
            }
        )
        start = copy.deepcopy(task.state_dict())
    for name, on in GROUPS.items():
        cfg = apply_overrides(copy.deepcopy(base), [f"augment.{k}={v}" for k, v in {**OFF, **on}.items()])
        torch.manual_seed(0)
        task = SEDTask(cfg.to_dict(), td.classes)
        task.load_state_dict(start)
        one_epoch(task, crops, a.lr, seed=0)
        rows.append(
            {"step": "+ 1 epoch fine-tuning", "bn": "ImageNet (frozen)", "aug": name, "val_map": val_map(task, val_ds)}
        )
        print(rows[-1], flush=True)
    print_markdown(
        rows,
        {
            "step": "{step}",
            "BatchNorm statistics": "{bn}",
            "augmentation": "{aug}",
            "internal val macro AP": "{val_map:.3f}",
        },
    )
    save_json(
        a.out / "nips4b_warmup.json",
        {"machine": machine(), "lr": a.lr, "rows": rows, "n_train": len(td.train), "n_val": len(td.val)},
    )


if __name__ == "__main__":
    main()
