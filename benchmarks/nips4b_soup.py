"""A "model soup" of finished NIPS4B runs: in each fold, the runs' fold models' weights averaged into one model, which
then predicts that fold's held-out clips (one model's predict time, where `birdsed ensemble` costs the members'
summed).

    python benchmarks/nips4b_soup.py --out bench-out/soup/NAME RUN RUN [...]
    python benchmarks/nips4b_ensemble.py bench-out/soup/NAME RUN RUN [...]   # the soup beside the runs and their mean

Each RUN is the --out folder of a 5-fold `nips4b.py` run whose fold models are of one kind with the same tensors
(e.g. BirdNET fine-tuned from the same depth; they differ in seed or lever). The soup's model.json is the first
run's. Weight averaging is sound only where the runs stay in one basin of the loss (fine-tuning from the same
pretrained weights at a low rate); the table in docs/BENCHMARKS.md says where it did.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import NIPS4B, save_json  # noqa: E402
from nips4b import clip_scores, nips4b_folds  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from birdsed.data.manifest import read_dataset  # noqa: E402

WEIGHTS = "weights.safetensors"


def average_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of several state dicts with the same tensors (integer tensors: the first's)."""
    names = states[0].keys()
    for k, s in enumerate(states[1:], 1):
        if s.keys() != names or any(s[n].shape != states[0][n].shape for n in names):
            raise SystemExit(f"model {k} has other tensors than model 0: not one architecture, no soup")
    return {
        n: (sum(s[n].double() for s in states) / len(states)).to(states[0][n].dtype)
        if states[0][n].is_floating_point()
        else states[0][n]
        for n in names
    }


def soup_model(members: list[Path], folder: Path) -> Path:
    """Write the soup of the member model directories to folder (model.json of the first); return folder."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(members[0] / "model.json", folder / "model.json")
    save_file(average_weights([load_file(m / WEIGHTS) for m in members]), folder / WEIGHTS)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=NIPS4B)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="the fold split's seed (as given to nips4b.py)")
    a = ap.parse_args()
    table = read_dataset(a.data).table
    folds = nips4b_folds(table, a.folds, a.seed)
    times = []
    for k in range(a.folds):
        model = soup_model([r / f"fold{k}" / "run" / "model" for r in a.runs], a.out / f"fold{k}" / "run" / "model")
        paths = [str(p) for p in table["path"][folds == k]]
        t0 = time.perf_counter()
        clip_scores(model, paths, a.out / f"fold{k}" / "pred_test")
        times.append(time.perf_counter() - t0)
        print(f"fold {k}: {len(paths)} clips predicted in {times[-1]:.1f} s", flush=True)
    save_json(a.out / "soup.json", {"runs": [str(r) for r in a.runs], "predict_s": times})


if __name__ == "__main__":
    main()
