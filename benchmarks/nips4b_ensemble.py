"""Pooled out-of-fold AP of finished NIPS4B runs, alone and averaged (an ensemble of the runs' models).

    python benchmarks/nips4b_ensemble.py bench-out/nips4b-gpu/preset bench-out/nips4b-gpu/seed1 [...] \
        [--folds 0 1 2] [--weights 2 1 ...]

Each run is the --out folder of a 5-fold `nips4b.py` run (its fold*/pred_test/scores.parquet). A clip's score
per class is the max over its rows of the clipwise output; the ensemble's is the (weighted) mean of the runs' scores.
Macro AP (over classes with a positive) and micro AP are computed over all 550 held-out clips at once
("pooled"), and both also per fold and averaged (as nips4b.py's fold table; higher, since a fold's
few positives per class rank more easily among 110 clips than among 550). --fold-scale adds a diagnostic: each row
again with every class's logits standardised within each fold's held-out clips, which shows what the five fold
models' different score scales cost the pooled AP (it reads the held-out clips' score distribution: not a model).
--per-class N lists the N weakest classes' pooled AP (of the mean of the runs, or of the one run). --siblings lists,
for each class whose species has another class (a call and a song), its AP and what its 2n top-scored clips are (n
its positive clips): its own positives, or clips of only the sibling class (the confusion BirdNET's labels invite).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from common import save_json  # noqa: E402
from nips4b import NIPS4B, clip_labels, nips4b_folds, pooled_ap, read_oof  # noqa: E402

from birdsed.data.manifest import read_dataset  # noqa: E402
from birdsed.evaluate.metrics import average_precision, sets_to_matrix  # noqa: E402


def mean_scores(frames: list[pd.DataFrame], weights: list[float] | None = None) -> pd.DataFrame:
    """The (weighted) mean of several runs' (clips, classes) scores over the clips and classes they share."""
    clips = sorted(set.intersection(*(set(f.index) for f in frames)))
    classes = sorted(set.union(*(set(f.columns) for f in frames)))
    w = np.ones(len(frames)) if weights is None else np.asarray(weights, float)
    return sum(wi * f.reindex(index=clips, columns=classes, fill_value=0.0) for wi, f in zip(w, frames)) / w.sum()


def fold_standardised(scores: pd.DataFrame, fold_of: dict[str, int]) -> pd.DataFrame:
    """Each class's logits standardised within each fold's held-out clips (their mean and std). A diagnostic, not a
    model: it uses the held-out clips' score distribution, and shows how much of pooled AP the five fold models'
    different score scales cost (each fold's ranking, so per-fold AP, is unchanged)."""
    p = scores.astype("float64").clip(1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    folds = np.array([fold_of[f] for f in scores.index])
    out = logit.copy()
    for k in np.unique(folds):
        part = logit[folds == k]
        out[folds == k] = (part - part.mean()) / (part.std() + 1e-6)
    return out


def class_ap(scores: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Each class's AP over all the held-out clips in `scores` at once, with its positive clips (classes with one),
    weakest first: the terms of pooled macro AP."""
    classes = list(scores.columns)
    true = sets_to_matrix(clip_labels(scores.index, table), classes)
    rows = [
        {"class": c, "ap": average_precision(scores[[c]].to_numpy(np.float32), true[:, [k]])[0], "positives": n}
        for k, (c, n) in enumerate(zip(classes, true.sum(0)))
        if n
    ]
    return pd.DataFrame(rows).sort_values("ap")


def sibling_confusion(scores: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """For each class with a sibling (another class of the same species code, e.g. Parcae_call and Parcae_song):
    its pooled AP, its positive clips n, and among its 2n top-scored clips how many are its positives and how many
    carry a sibling's label but not its own."""
    labels = clip_labels(scores.index, table)
    ap = class_ap(scores, table).set_index("class")["ap"]
    rows = []
    for c in scores.columns:
        siblings = {s for s in scores.columns if s != c and s.split("_")[0] == c.split("_")[0]}
        pos = np.array([c in x for x in labels])
        if not siblings or not pos.any():
            continue
        top = np.argsort(-scores[c].to_numpy())[: 2 * pos.sum()]
        sibling_only = np.array([bool(x & siblings) and c not in x for x in labels])
        rows.append(
            {
                "class": c,
                "ap": ap[c],
                "positives": int(pos.sum()),
                "top_2n_positives": int(pos[top].sum()),
                "top_2n_sibling_only": int(sibling_only[top].sum()),
            }
        )
    return pd.DataFrame(rows).sort_values("ap")


def scores_row(name: str, scores: pd.DataFrame, table: pd.DataFrame, fold_of: dict[str, int]) -> dict:
    folds = sorted({fold_of[f] for f in scores.index})
    per_fold = np.array(
        [pooled_ap(scores[[fold_of[f] == k for f in scores.index]], table) for k in folds]
    )  # (folds, 2)
    macro, micro = pooled_ap(scores, table)
    return {
        "run": name,
        "clips": len(scores),
        "macro_ap": macro,
        "micro_ap": micro,
        "macro_ap_fold_mean": float(per_fold[:, 0].mean()),
        "micro_ap_fold_mean": float(per_fold[:, 1].mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--data", type=Path, default=NIPS4B)
    ap.add_argument("--output", default="clipwise", help="which output kind's scores")
    ap.add_argument("--folds", type=int, nargs="*", help="only these folds' clips (runs stopped early)")
    ap.add_argument("--seed", type=int, default=0, help="the fold split's seed (as given to nips4b.py)")
    ap.add_argument("--out", type=Path, help="write the table as JSON here")
    ap.add_argument("--weights", type=float, nargs="+", help="one weight per run for the mean (default equal)")
    ap.add_argument(
        "--fold-scale",
        action="store_true",
        help="also each row with every class's logits standardised per held-out fold (a diagnostic, not a model)",
    )
    ap.add_argument("--per-class", type=int, metavar="N", help="also the N weakest classes of the last row's scores")
    ap.add_argument(
        "--siblings", action="store_true", help="also the classes with a sibling (call / song): what outranks them"
    )
    a = ap.parse_args()
    if a.weights and len(a.weights) != len(a.runs):
        sys.exit(f"{len(a.weights)} weights for {len(a.runs)} runs")
    table = read_dataset(a.data).table
    frames = {str(r): read_oof(r, a.folds, a.output) for r in a.runs}
    folds = nips4b_folds(table, 5, a.seed)
    fold_of = {Path(p).name: int(k) for p, k in zip(table["path"], folds)}
    rows = [scores_row(name, f, table, fold_of) for name, f in frames.items()]
    if len(frames) > 1:
        name = "mean of the runs above" + (f" (weights {a.weights})" if a.weights else "")
        rows.append(scores_row(name, mean_scores(list(frames.values()), a.weights), table, fold_of))
    if a.fold_scale:
        mean = mean_scores(list(frames.values()), a.weights) if len(frames) > 1 else None
        scaled = [(n, f) for n, f in frames.items()] + ([("mean of the runs above", mean)] if mean is not None else [])
        rows += [
            scores_row(f"{n}, standardised per fold", fold_standardised(f, fold_of), table, fold_of) for n, f in scaled
        ]
    print(pd.DataFrame(rows).round(4).to_string(index=False))
    if a.per_class:
        last = mean_scores(list(frames.values()), a.weights) if len(frames) > 1 else next(iter(frames.values()))
        print(class_ap(last, table).head(a.per_class).round(3).to_string(index=False))
    if a.siblings:
        last = mean_scores(list(frames.values()), a.weights) if len(frames) > 1 else next(iter(frames.values()))
        sib = sibling_confusion(last, table)
        print(sib.round(3).to_string(index=False))
        for kind, part in sib.groupby(sib["class"].str.split("_").str[-1]):
            wrong = int((2 * part["positives"] - part["top_2n_positives"]).sum())
            print(
                f"{kind}: {len(part)} classes, mean AP {part['ap'].mean():.3f}; of the {wrong} other clips among their"
                f" top 2n, {int(part['top_2n_sibling_only'].sum())} carry only a sibling's label"
            )
    if a.out:
        save_json(a.out, {"output": a.output, "rows": rows})


if __name__ == "__main__":
    main()
