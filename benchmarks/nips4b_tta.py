"""Test-time augmentation on NIPS4B, from the fold models of a finished `nips4b.py` run.

    python benchmarks/nips4b.py --folds 5                 # trains bench-out/nips4b/fold*/run/model
    python benchmarks/nips4b_tta.py                       # then scores each held-out fold under TTA

Each held-out clip is scored as `predict` scores it (5 s windows every 2.5 s, zero-padded;
the clip's score per class is the max over its windows, clipwise output), once plain and once
per variant: the clip delayed by 0.5, 1 or 1.5 s (silence before it), or 6 dB louder or
quieter. Reports out-of-fold macro AP per variant and for the mean of the variants' scores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import save_json  # noqa: E402
from nips4b import NIPS4B  # noqa: E402

from birdsed.audio.decode import load_audio  # noqa: E402
from birdsed.data.manifest import read_dataset  # noqa: E402
from birdsed.data.sampling import iterative_stratified_folds  # noqa: E402
from birdsed.evaluate.metrics import average_precision, sets_to_matrix  # noqa: E402
from birdsed.infer.grid import window_starts  # noqa: E402
from birdsed.model.modeldir import load_model_dir  # noqa: E402

VARIANTS = {
    "plain": (0.0, 0.0),
    "delay 0.5 s": (0.5, 0.0),
    "delay 1 s": (1.0, 0.0),
    "delay 1.5 s": (1.5, 0.0),
    "+6 dB": (0.0, 6.0),
    "-6 dB": (0.0, -6.0),
}  # name -> (delay s, gain dB)
DELAYS = ["plain", "delay 0.5 s", "delay 1 s", "delay 1.5 s"]


def clip_score(model, x: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Max over the clip's windows of the clipwise output [shape=(K,)]."""
    starts = window_starts(len(x), window, hop)
    padded = np.zeros(int(starts[-1]) + window, np.float32)
    padded[: len(x)] = x
    with torch.inference_mode():
        out = model.encode(model.frontend(torch.from_numpy(padded).unfold(0, window, hop)), framewise=False)
    return out["clipwise"].amax(dim=0).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=NIPS4B)
    ap.add_argument("--runs", type=Path, default=Path("bench-out/nips4b"), help="the --out of nips4b.py")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    table = read_dataset(a.data).table
    folds = iterative_stratified_folds(list(table["primary_labels"]), a.folds, a.seed)  # nips4b.py's split
    names = [*VARIANTS, "mean of delays", "mean of all"]
    ap_by = {n: [] for n in names}
    for k in range(a.folds):
        model, _, _ = load_model_dir(a.runs / f"fold{k}" / "run" / "model")
        model = model.inference_copy()
        sr = model.sample_rate_hz
        window, hop = 5 * sr, sr * 5 // 2
        test = table[folds == k].reset_index(drop=True)
        clips = [load_audio(p, sr) for p in test["path"]]
        true_sets = [set(x) for x in test["primary_labels"]]
        classes = model.classes + sorted(set().union(*true_sets) - set(model.classes))
        true = sets_to_matrix(true_sets, classes)
        unseen = np.zeros((len(test), len(classes) - len(model.classes)), np.float32)
        scores = {}
        for name, (delay_s, gain_db) in VARIANTS.items():
            lead = np.zeros(int(delay_s * sr), np.float32)
            scores[name] = np.stack(
                [clip_score(model, np.concatenate([lead, x * 10 ** (gain_db / 20)]), window, hop) for x in clips]
            )
        scores["mean of delays"] = np.mean([scores[n] for n in DELAYS], axis=0)
        scores["mean of all"] = np.mean([scores[n] for n in VARIANTS], axis=0)
        for n in names:
            ap_by[n].append(average_precision(np.hstack([scores[n], unseen]), true)[0])
        print(f"fold {k}: " + ", ".join(f"{n} {ap_by[n][-1]:.3f}" for n in names), flush=True)
    print("\n| variant | macro AP per fold | mean |\n|---|---|---|")
    for n in names:
        print(f"| {n} | {' / '.join(f'{v:.3f}' for v in ap_by[n])} | {np.mean(ap_by[n]):.3f} |")
    save_json(a.runs / "tta.json", {"macro_ap": ap_by})


if __name__ == "__main__":
    main()
