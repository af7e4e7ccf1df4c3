"""NIPS4B 5-fold cross-validation of the whole birdsed pipeline (train -> tune -> predict).

    python benchmarks/nips4b.py --folds 5 --out bench-out/nips4b [--config nips4b] [--set k=v ...] [--seeds 0 1 2]

Folds are iteratively stratified over labels (seeded). Each fold trains on four folds and
predicts the fifth with `predict`; a clip's score per class is the max over its rows.
Reports over out-of-fold predictions: macro AP (classes with a positive), micro AP,
row-wise F1 with nocall at the tuned thresholds, species-only micro F1; mean and spread
over folds, and macro / micro AP pooled over all held-out clips (read back from each fold's
predict output; benchmarks/nips4b_ensemble.py averages several runs' scores).

--self-train N (issue #20, transductive): each fold's model is a noisy student of N rounds (birdsed self-train)
whose unlabelled pool is the held-out fold's audio, never its labels; round 0, the plain model, is scored beside it
(fold*/pred_test_round0). --teacher RUN... (distillation): each fold's model also learns the soft labels of the
training clips from the ensemble of those runs' models of the same fold (trained on the same four folds), and
each fold reports the teacher's held-out AP and the predict time of teacher and student on the held-out clips.

The preset trains on every clip of the four folds (data.val_fraction=0): the last epoch is kept and row
F1 is scored clipwise at the default thresholds. With `--set data.val_fraction=0.1` birdsed's own
validation split inside the four folds picks the epoch, the output and the thresholds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NIPS4B, machine, save_json  # noqa: E402

from birdsed.config import OUTPUT_KINDS, apply_overrides, load_config  # noqa: E402
from birdsed.data.manifest import read_dataset  # noqa: E402
from birdsed.data.sampling import iterative_stratified_folds, stratified_split  # noqa: E402
from birdsed.evaluate.metrics import average_precision, micro_prf, row_f1, sets_to_matrix  # noqa: E402
from birdsed.evaluate.tune import tune  # noqa: E402
from birdsed.infer.decide import Thresholds, decide  # noqa: E402
from birdsed.infer.predict import run_predict  # noqa: E402
from birdsed.model.modeldir import save_ensemble  # noqa: E402
from birdsed.train.run import train  # noqa: E402


def write_subset(table: pd.DataFrame, folder: Path, source: Path | None = None) -> Path:
    """A labels.csv data set naming the clips by absolute path (no audio is copied), with the source's species.csv
    (the classes' scientific names) beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"filename": table["path"], "labels": [" ".join(x) for x in table["primary_labels"]]}).to_csv(
        folder / "labels.csv", index=False
    )
    if source is not None and (source / "species.csv").is_file():
        shutil.copyfile(source / "species.csv", folder / "species.csv")
    return folder


def per_clip(scores: pd.DataFrame, output: str) -> pd.DataFrame:
    """A predict scores table's rows of one output kind -> (clips, classes): max over each clip's rows."""
    s = scores[scores["output"] == output].drop(columns=["start_s", "end_s", "output"])
    return s.groupby("file").max()


def clip_scores(model_dir: Path, paths: list[str], out: Path) -> dict[str, np.ndarray]:
    """(n_clips, K) per output kind: max over each clip's rows."""
    run_predict(model_dir, paths, out, workers=1, quiet=True)
    s = pd.read_parquet(out / "scores.parquet")
    return {kind: per_clip(s, kind).reindex(paths).to_numpy(np.float32) for kind in OUTPUT_KINDS}


def nips4b_folds(table: pd.DataFrame, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """The fold of every clip, iteratively stratified over its labels (the split every NIPS4B script uses)."""
    return iterative_stratified_folds(list(table["primary_labels"]), n_folds, seed)


def read_oof(
    run: Path, folds: list[int] | None = None, output: str = "clipwise", sub: str = "pred_test"
) -> pd.DataFrame:
    """The held-out scores of one output kind from a run's folds (default: all there are), read back from each
    fold's `predict` output: (clips, classes) indexed by file name (the run may have been made elsewhere);
    a class a fold's model never saw scores 0 there."""
    dirs = sorted(run.glob("fold*")) if folds is None else [run / f"fold{k}" for k in folds]
    files = [d / sub / "scores.parquet" for d in dirs]
    parts = [per_clip(pd.read_parquet(f), output).rename(index=lambda x: Path(x).name) for f in files if f.is_file()]
    if not parts:
        raise SystemExit(f"no fold*/pred_test/scores.parquet under {run}")
    return pd.concat(parts).fillna(0.0)


def clip_labels(names: pd.Index, table: pd.DataFrame) -> list[set[str]]:
    """The labels of the clips named (by file name, as read_oof indexes them), in that order."""
    by_name = table.assign(name=[Path(x).name for x in table["path"]]).set_index("name")
    return [set(x) for x in by_name.loc[names, "primary_labels"]]


def pooled_ap(scores: pd.DataFrame, table: pd.DataFrame) -> tuple[float, float]:
    """Macro / micro AP over all the held-out clips in `scores` (indexed by file name) at once, over the
    classes with a positive."""
    labels = clip_labels(scores.index, table)
    classes = sorted(set(scores.columns) | set().union(*labels))
    s = scores.reindex(columns=classes, fill_value=0.0).to_numpy(np.float32)
    return average_precision(s, sets_to_matrix(labels, classes))


def fold_teacher(runs: list[Path], k: int, fold_dir: Path) -> Path:
    """The ensemble of the runs' fold-k models (each trained on the same four folds), saved in fold_dir/teacher."""
    models = []
    for r in runs:
        found = [
            d
            for d in (
                r / f"fold{k}" / "run" / "model",
                r / f"fold{k}" / "ensemble",
                r / f"fold{k}" / "st" / "round0" / "model",
            )
            if (d / "model.json").is_file()
        ]
        if not found:
            raise SystemExit(f"{r}: no fold{k}/run/model to distil from")
        models.append(found[0])
    return save_ensemble(models, fold_dir / "teacher")


def train_fold(
    data: Path,
    cfg,
    fold_dir: Path,
    seeds: list[int] | None,
    pool: list[str] | None = None,
    rounds: int = 0,
    teacher: Path | None = None,
    pl_opts=None,
) -> tuple[Path, dict[int, Path]]:
    """One model (fold_dir/run), or with seeds an ensemble (fold_dir/ensemble) of one model per seed, all on
    the validation split (if any) of cfg.train.seed (so the ensemble's thresholds are tuned on clips none of them saw);
    with rounds, the last of `rounds` noisy students on the unlabelled `pool` (fold_dir/st); with a teacher, a model
    that learns the teacher's soft labels of the training clips too (fold_dir/teacher_pl).
    Returns (the model directory to predict with, each seed's (or round's) member model directory)."""
    if rounds:
        from birdsed.train.pseudo import SoftLabelOptions
        from birdsed.train.selftrain import self_train

        table = self_train(
            data, pool or [], rounds, cfg, fold_dir / "st", pl_opts or SoftLabelOptions(), quiet=True, predict_workers=1
        )
        return Path(table["model"].iloc[-1]), {f"round{r}": Path(m) for r, m in zip(table["round"], table["model"])}
    if teacher is not None:
        from birdsed.train.pseudo import teacher_labels

        pl = teacher_labels(teacher, data, fold_dir / "teacher_pl", quiet=True, workers=1, allow_outside=True)
        cfg = replace(cfg, data=replace(cfg.data, pseudo=(str(pl.parent.resolve()),)))
    if not seeds:
        return train(data, cfg, fold_dir / "run", quiet=True), {}
    cfg = replace(cfg, data=replace(cfg.data, split_seed=cfg.data.val_split_seed(cfg.train.seed)))
    members = {
        s: train(data, replace(cfg, train=replace(cfg.train, seed=s)), fold_dir / f"run_seed{s}", quiet=True)
        for s in seeds
    }
    return save_ensemble(list(members.values()), fold_dir / "ensemble"), members


def run_fold(
    k: int,
    manifest,
    folds: np.ndarray,
    cfg,
    out: Path,
    seeds: list[int] | None = None,
    rounds: int = 0,
    teachers: list[Path] | None = None,
    pl_opts=None,
) -> dict:
    t = manifest.table
    train_t, test_t = t[folds != k].reset_index(drop=True), t[folds == k].reset_index(drop=True)
    data = write_subset(train_t, out / f"fold{k}" / "data", manifest.root)
    teacher = fold_teacher(teachers, k, out / f"fold{k}") if teachers else None
    t0 = time.perf_counter()
    model_dir, members = train_fold(
        data, cfg, out / f"fold{k}", seeds, [str(p) for p in test_t["path"]], rounds, teacher, pl_opts
    )
    train_s = time.perf_counter() - t0
    classes = json.loads((model_dir / "model.json").read_text())["classes"]
    # thresholds: tuned on birdsed's validation split inside the training folds (the same split train() used), if any
    sub = read_dataset(data, allow_outside=True)
    sub.table["duration_s"] = 1.0
    _, va = stratified_split(sub, cfg.data.val_fraction, cfg.data.val_split_seed(cfg.train.seed))
    if va.any():
        val_t = sub.table[va]
        val_scores = clip_scores(model_dir, list(val_t["path"]), out / f"fold{k}" / "pred_val")
        val_true = sets_to_matrix([{c for c in x if c in classes} for x in val_t["primary_labels"]], classes)
        tuned = tune(val_scores, val_true, classes, per_class=False)
        kind, thresholds = tuned.best_output, tuned.thresholds
    else:  # data.val_fraction=0: every training clip trained; nothing left to tune on, so clipwise at the default
        kind, thresholds = "clipwise", Thresholds()
    t1 = time.perf_counter()
    scores = clip_scores(model_dir, [str(p) for p in test_t["path"]], out / f"fold{k}" / "pred_test")
    predict_s = time.perf_counter() - t1
    true_sets = [set(x) for x in test_t["primary_labels"]]
    all_classes = classes + sorted(set().union(*true_sets) - set(classes))
    pad = np.zeros((len(test_t), len(all_classes) - len(classes)), np.float32)
    true = sets_to_matrix(true_sets, all_classes)
    res = {
        "fold": k,
        "n_train": len(train_t),
        "n_test": len(test_t),
        "train_s": train_s,
        "output": kind,
        "threshold": thresholds.global_[kind],
        "predict_s": predict_s,
        "audio_s": float(sum(sf.info(str(p)).duration for p in test_t["path"])),
    }
    for o in OUTPUT_KINDS:
        s = np.hstack([scores[o], pad])
        res[f"macro_ap_{o}"], res[f"micro_ap_{o}"] = average_precision(s, true)
    s = np.hstack([scores[kind], pad])
    thr = np.concatenate([thresholds.vector(kind, classes), np.ones(pad.shape[1])])
    pred = decide(s, thr)
    res["row_f1"] = row_f1(pred, true)
    res["species_f1"] = micro_prf(pred, true)[2]
    res["macro_ap"], res["micro_ap"] = res["macro_ap_clipwise"], res["micro_ap_clipwise"]
    for seed, member_dir in members.items():  # each member (or round) alone, for the ensemble's (or last round's) gain
        name = seed if isinstance(seed, str) else f"seed{seed}"
        if member_dir == model_dir:
            continue
        member = clip_scores(member_dir, list(map(str, test_t["path"])), out / f"fold{k}" / f"pred_test_{name}")[
            "clipwise"
        ]
        res[f"macro_ap_{name}"], res[f"micro_ap_{name}"] = average_precision(np.hstack([member, pad]), true)
    if teacher is not None:  # the teacher on the same held-out clips: its AP and its predict time beside the student's
        t1 = time.perf_counter()
        tscores = clip_scores(teacher, list(map(str, test_t["path"])), out / f"fold{k}" / "pred_test_teacher")[
            "clipwise"
        ]
        res["teacher_predict_s"] = time.perf_counter() - t1
        res["macro_ap_teacher"], res["micro_ap_teacher"] = average_precision(np.hstack([tscores, pad]), true)
    print(pd.Series(res).to_string(), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=NIPS4B)
    ap.add_argument("--out", type=Path, default=Path("bench-out/nips4b"))
    ap.add_argument("--config", default="nips4b")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only-folds", type=int, nargs="*", help="run these folds only (e.g. a smoke run)")
    ap.add_argument("--seed", type=int, default=0, help="the fold split's seed")
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        help="train one model per seed in each fold and predict with their ensemble (birdsed ensemble)",
    )
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="also fit the anchor on the same folds: a logistic "
        "regression on mean- and max-pooled BirdNET embeddings (benchmarks/nips4b_anchor.py; needs the extra)",
    )
    ap.add_argument("--baseline-only", action="store_true", help="fit the anchor only (no birdsed training)")
    ap.add_argument(
        "--self-train",
        type=int,
        default=0,
        metavar="N",
        help="N noisy-student rounds per fold on the "
        "held-out fold's audio as the unlabelled pool (transductive; its labels are never read)",
    )
    ap.add_argument("--pl-power", type=float, default=1.0, help="with --self-train: the soft labels' power transform")
    ap.add_argument("--pl-floor", type=float, default=0.0, help="with --self-train: soft labels below it become 0")
    ap.add_argument(
        "--teacher",
        type=Path,
        nargs="*",
        metavar="RUN",
        help="distil from the ensemble of these runs' "
        "models of each fold (their soft labels of the training clips join training)",
    )
    a = ap.parse_args()
    if not (a.data / "labels.csv").is_file():
        sys.exit(f"NIPS4B not found at {a.data}")
    # the fold subsets name NIPS4B's clips by absolute path (nothing is copied), outside their own folder
    cfg = apply_overrides(load_config(a.config), [*a.set, "data.allow_outside_paths=true"])
    manifest = read_dataset(a.data)
    folds = nips4b_folds(manifest.table, a.folds, a.seed)
    fold_ids = a.only_folds if a.only_folds is not None else list(range(a.folds))
    anchor = {}
    if a.baseline or a.baseline_only:
        from nips4b_anchor import anchor_oof

        oof, anchor_rows = anchor_oof(manifest.table, folds, fold_ids, a.out / "anchor_features.npz")
        anchor = {"pooled": dict(zip(("macro_ap", "micro_ap"), pooled_ap(oof, manifest.table))), "folds": anchor_rows}
        print(
            f"anchor (logistic regression on BirdNET embeddings), pooled over {len(oof)} held-out clips: macro AP "
            f"{anchor['pooled']['macro_ap']:.4f}, micro AP {anchor['pooled']['micro_ap']:.4f}; {anchor_rows}",
            flush=True,
        )
        if a.baseline_only:
            save_json(a.out / "nips4b.json", {"machine": machine(), "anchor": anchor})
            return
    from birdsed.train.pseudo import SoftLabelOptions

    pl_opts = SoftLabelOptions(power=a.pl_power, floor=a.pl_floor)
    rows = [run_fold(k, manifest, folds, cfg, a.out, a.seeds, a.self_train, a.teacher, pl_opts) for k in fold_ids]
    df = pd.DataFrame(rows)
    summary = {
        m: {"mean": float(df[m].mean()), "std": float(df[m].std(ddof=0))}
        for m in ("macro_ap", "micro_ap", "row_f1", "species_f1", "train_s")
    }
    print("\nfold results:\n" + df.round(4).to_string(index=False))
    print("\nmean ± std over folds:")
    for m, v in summary.items():
        print(f"  {m:>12}: {v['mean']:.4f} ± {v['std']:.4f}")
    summary["pooled"] = dict(
        zip(("macro_ap", "micro_ap"), pooled_ap(read_oof(a.out, list(df["fold"])), manifest.table))
    )
    print(
        f"pooled over the {df['n_test'].sum()} held-out clips: macro AP {summary['pooled']['macro_ap']:.4f}, "
        f"micro AP {summary['pooled']['micro_ap']:.4f}"
    )
    others = {"round0 (before self-training)": "pred_test_round0"} if a.self_train else {}
    others.update({"teacher": "pred_test_teacher"} if a.teacher else {})
    for name, sub in others.items():
        summary[f"pooled_{sub}"] = dict(
            zip(("macro_ap", "micro_ap"), pooled_ap(read_oof(a.out, list(df["fold"]), sub=sub), manifest.table))
        )
        print(
            f"{name}, pooled: macro AP {summary[f'pooled_{sub}']['macro_ap']:.4f}, "
            f"micro AP {summary[f'pooled_{sub}']['micro_ap']:.4f}"
        )
    speed = {"predict_x_realtime": float(df["audio_s"].sum() / df["predict_s"].sum())}
    if a.teacher:
        speed["teacher_predict_x_realtime"] = float(df["audio_s"].sum() / df["teacher_predict_s"].sum())
    summary.update(speed)
    print("predict speed on the held-out clips (x real time): " + ", ".join(f"{k} {v:.0f}" for k, v in speed.items()))
    if anchor:
        print(
            f"anchor, same folds: macro AP {anchor['pooled']['macro_ap']:.4f}, "
            f"micro AP {anchor['pooled']['micro_ap']:.4f}"
        )
    save_json(
        a.out / "nips4b.json",
        {
            "machine": machine(),
            "config": a.config,
            "overrides": a.set,
            "folds": rows,
            "summary": summary,
            "anchor": anchor,
        },
    )


if __name__ == "__main__":
    main()
