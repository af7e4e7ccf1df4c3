"""NIPS4B: head designs on frozen ImageNet features, scored by 5-fold pooled out-of-fold AP.

    python benchmarks/nips4b_heads.py --out bench-out/nips4b_heads [--set model.freq_scale=1 ...] [--seeds 0 1 2]

A cheap screen before fine-tuning (minutes on 2 CPU cores): the preset's backbone, with its ImageNet
BatchNorm statistics, maps one window of each of the 550 clips to features once; then, for every
fold of the benchmark's split, each head design trains on the four training folds' features (the
preset's head warm-up: AdamW, lr train.head_warmup_lr, train.head_warmup_epochs epochs) and scores
the fifth. Macro / micro AP over all 550 held-out clips at once (pooled, as nips4b_ensemble.py), and
macro AP per fold averaged. The front end's per-mel statistics are those of all 550 clips (no labels:
one set of features serves every fold).

Head designs differ only in how the backbone's frequency axis is pooled before PANNs' attention head
(`model.freq_pool`): mean (PANNs, the default), max, mean and max side by side, or every frequency cell
kept (flat: flattened into channels, so the head knows where in the spectrum a pattern lies).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NIPS4B, machine, print_markdown, save_json  # noqa: E402
from nips4b import nips4b_folds, write_subset  # noqa: E402

from birdsed.config import apply_overrides, load_config  # noqa: E402
from birdsed.data.dataset import WindowDataset  # noqa: E402
from birdsed.data.manifest import read_dataset  # noqa: E402
from birdsed.data.sampling import targets  # noqa: E402
from birdsed.evaluate.metrics import average_precision  # noqa: E402
from birdsed.model.sed import AttentionHead, SEDModel  # noqa: E402
from birdsed.train.data import load_train_data  # noqa: E402
from birdsed.train.head_warmup import fit_head, frozen_features  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=NIPS4B)
    ap.add_argument("--out", type=Path, default=Path("bench-out/nips4b_heads"))
    ap.add_argument("--set", action="append", default=[], help="config override of the nips4b preset")
    ap.add_argument("--pools", nargs="+", default=["mean", "max", "meanmax", "flat"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args()
    if not (a.data / "labels.csv").is_file():
        sys.exit(f"NIPS4B not found at {a.data}")
    torch.set_num_threads(2)
    cfg = apply_overrides(load_config("nips4b"), ["data.val_fraction=0", "data.allow_outside_paths=true", *a.set])
    table = read_dataset(a.data).table
    td = load_train_data(write_subset(table, a.out / "data"), a.out, cfg)
    rec = td.train.table
    fold_of = dict(zip(table["path"], nips4b_folds(table)))
    fold = np.array([fold_of[p] for p in rec["path"]])
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = SEDModel(cfg.frontend, cfg.model, td.classes)
    ds = WindowDataset(
        td.store,
        list(rec["recording_id"]),
        targets(td.train, td.classes, cfg.data),
        cfg.data.crop_s,
        1,
        cfg.data.short_policy,
    )
    feats, y = frozen_features(model, ds, 32, torch.device("cpu"), recalibrate_bn=False)  # (550, C, F', T'), (550, K)
    feature_s = time.perf_counter() - t0
    print(f"features {tuple(feats.shape)} in {feature_s:.0f} s", flush=True)
    true = y.numpy() > 0.5
    rows = []
    for pool in a.pools:
        for seed in a.seeds:
            scores = np.zeros_like(true, dtype=np.float32)
            t0 = time.perf_counter()
            for k in range(5):
                tr, te = torch.from_numpy(fold != k), torch.from_numpy(fold == k)
                torch.manual_seed(seed)
                head = AttentionHead(feats.shape[1], len(td.classes), cfg.model.dropout, pool, feats.shape[2])
                fit_head(head, feats[tr], y[tr], cfg.train.head_warmup_epochs, cfg.train.head_warmup_lr, seed=seed)
                head.eval()
                with torch.no_grad():
                    scores[te.numpy()] = head(feats[te])["clipwise"].numpy()
            macro, micro = average_precision(scores, true)
            per_fold = [average_precision(scores[fold == k], true[fold == k])[0] for k in range(5)]
            rows.append(
                {
                    "pool": pool,
                    "seed": seed,
                    "macro_ap": macro,
                    "micro_ap": micro,
                    "macro_ap_fold_mean": float(np.mean(per_fold)),
                    "head_s": time.perf_counter() - t0,
                }
            )
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    summary = df.groupby("pool", sort=False)[["macro_ap", "micro_ap", "macro_ap_fold_mean"]].agg(["mean", "std"])
    print(summary.round(4).to_string())
    print_markdown(
        rows,
        {
            "frequency pooling": "{pool}",
            "seed": "{seed}",
            "pooled macro AP": "{macro_ap:.3f}",
            "pooled micro AP": "{micro_ap:.3f}",
            "macro AP, fold mean": "{macro_ap_fold_mean:.3f}",
        },
    )
    save_json(
        a.out / "nips4b_heads.json",
        {
            "machine": machine(),
            "overrides": a.set,
            "feature_shape": list(feats.shape),
            "feature_s": feature_s,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
