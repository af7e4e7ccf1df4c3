"""Predict the held-out clips of a finished NIPS4B run again with its saved fold models, into another folder.

    python benchmarks/nips4b_repredict.py bench-out/screen/loop --out bench-out/screen/loop_predloop --short loop

For runs whose models were saved before birdsed wrote how they fitted short recordings (model.json
"short_policy"): such models predict zero-padded; `--short loop` fills each clip shorter than a window by
repeating it, as data.short_policy=loop trained them. The new folder has the run's layout
(fold*/pred_test/scores.parquet), so nips4b_ensemble.py scores it alone or with other runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nips4b import NIPS4B, nips4b_folds, pooled_ap, read_oof  # noqa: E402

from birdsed.data.manifest import read_dataset  # noqa: E402
from birdsed.infer.predict import run_predict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a nips4b.py --out folder whose fold*/run/model are there")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--short", choices=["loop", "pad"], help="default: as each model's model.json says")
    ap.add_argument("--data", type=Path, default=NIPS4B)
    ap.add_argument("--seed", type=int, default=0, help="the fold split's seed (as given to nips4b.py)")
    a = ap.parse_args()
    table = read_dataset(a.data).table
    folds = nips4b_folds(table, 5, a.seed)
    done = []
    for k in range(5):
        model = a.run / f"fold{k}" / "run" / "model"
        if (model / "model.json").is_file():
            paths = [str(p) for p in table["path"][folds == k]]
            run_predict(model, paths, a.out / f"fold{k}" / "pred_test", workers=1, quiet=True, short_policy=a.short)
            done.append(k)
    if not done:
        raise SystemExit(f"no fold*/run/model under {a.run}")
    macro, micro = pooled_ap(read_oof(a.out, done), table)
    print(
        f"folds {done}, {a.short or 'each model'}'s short-clip policy: "
        f"pooled macro AP {macro:.4f}, micro AP {micro:.4f}"
    )


if __name__ == "__main__":
    main()
