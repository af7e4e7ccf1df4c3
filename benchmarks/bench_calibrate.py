"""Calibration from verdicts (`birdsed calibrate`) against a simulated reviewer who answers from the truth.

Two sources of scores with truth per 5 s row:
  synth   `birdsed synth` soundscapes at a domain shift (--shift: quieter, reverberant calls, an insect chorus no
          training clip holds), scored by a `small` SED model trained on the focal clips (--epochs)
  nips4b  the NIPS4B clips (../shared/data/nips4b, 5 s each: one row), scored by BirdNET V2.4 as a detector
          (`birdnet init` over the classes it maps; needs pip install 'birdsed[birdnet]'); a species' call and song
          classes are one class (BirdNET gives both one score)

For each repeat, the recordings are split in half at random: the reviewer verifies, per species, N clips of the
first half drawn as `review` draws its calibration sample (review.queue: `stratified`, equal counts per score band),
answering yes where the truth holds the species; the thresholds for precision 0.9 are fitted on those verdicts and
measured on the OTHER half's rows (every row with a score at or above a species' threshold is a detection):
  partial   birdsed calibrate: per-species logistic fits partially pooled towards the fit over all species
  unpooled  one logistic fit per species alone (what BirdNET-Analyzer's review gives; a tiny ridge so that separable
            verdicts stay finite); a species without both a yes and a no, or with a falling curve, gets none
  global    one logistic fit over every species' verdicts: one threshold for all
Reported per N (mean and standard deviation over repeats): the micro precision of the detections on the other half
(target 0.9), the share of species whose own precision there is >= 0.8, the recall of the calibrated species, how
many species got a threshold, and the expected calibration error (10 equal-width bins) of the raw scores and of the
calibrated probabilities over the other half's (row, species) pairs with a score >= 0.01.

    python benchmarks/bench_calibrate.py --sources synth nips4b --verdicts 25 50 100 200 --repeats 10
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NIPS4B, print_markdown, save_json  # noqa: E402

from birdsed.decisions import logit, sigmoid  # noqa: E402
from birdsed.evaluate.calibrate import POOLED_RIDGE, calibrate, fit_map  # noqa: E402
from birdsed.review.queue import QueueSpec, select  # noqa: E402

PRECISION = 0.9
MIN_SCORE_ECE = 0.01


@dataclass
class Source:
    """Scored rows with their truth: recording per row, scores and truth [shape=(rows, classes)]."""

    name: str
    recordings: np.ndarray  # [shape=(N,)] str
    start_s: np.ndarray  # [shape=(N,)]
    scores: np.ndarray  # [shape=(N, K)] float
    truth: np.ndarray  # [shape=(N, K)] bool
    classes: list[str]


def scores_of(pred: Path, classes: list[str]) -> pd.DataFrame:
    from birdsed.model.meta import read_model_meta

    s = pd.read_parquet(pred / "scores.parquet")
    import json

    run = json.loads((pred / "run.json").read_text())
    kind = read_model_meta(run["model"]).default_output
    return s[s["output"] == kind].reset_index(drop=True)


def synth_source(out: Path, shift: float, epochs: int, seed: int = 0) -> Source:
    """A `small` SED model trained on synthetic focal clips, scoring soundscapes at `shift` (made once per --out)."""
    from birdsed.config import apply_overrides, load_config
    from birdsed.data.synth import SynthConfig, synthesize
    from birdsed.infer.predict import run_predict
    from birdsed.kaggle.truth import cornell_rows
    from birdsed.train.run import train

    base = SynthConfig(species=8, clips_per_species=12, soundscapes=0, seed=seed)
    data = out / "synth" / "train"
    if not (data / "train.csv").is_file():
        synthesize(data, base, quiet=True)
    test = out / "synth" / f"test_shift{shift:g}"
    if not (test / "test.csv").is_file():
        synthesize(
            test,
            dataclasses.replace(
                base, clips_per_species=0, soundscapes=24, soundscape_s=60.0, soundscape_seed=seed + 1000, shift=shift
            ),
            quiet=True,
        )
    model = out / "synth" / f"run_e{epochs}" / "model"
    if not (model / "model.json").is_file():
        cfg = apply_overrides(load_config("small"), [f"train.epochs={epochs}", "train.workers=0"])
        train(data, cfg, model.parent, quiet=True)
    pred = out / "synth" / f"pred_shift{shift:g}_e{epochs}"
    if not (pred / "scores.parquet").is_file():
        run_predict(model, [], pred, test_csv=test / "test.csv", quiet=True, workers=0)
    import json

    classes = json.loads((model / "model.json").read_text())["classes"]
    s = scores_of(pred, classes)
    rows, _ = cornell_rows(test / "test_labels.csv", test / "test.csv")
    rows = rows.dropna(subset=["start_s"])
    truth = {
        (str(Path(f).resolve()), float(t)): labels
        for f, t, labels in zip(rows["file"], rows["start_s"], rows["labels"])
    }
    keys = [(str(Path(f).resolve()), float(t)) for f, t in zip(s["file"], s["start_s"])]
    keep = np.array([k in truth for k in keys])
    s = s[keep].reset_index(drop=True)
    labels = [truth[k] for k, ok in zip(keys, keep) if ok]
    y = np.array([[c in ls for c in classes] for ls in labels], dtype=bool)
    return Source(
        f"synth shift {shift:g}",
        s["file"].to_numpy(),
        s["start_s"].to_numpy(),
        s[classes].to_numpy(np.float64),
        y,
        classes,
    )


def nips4b_source(out: Path) -> Source:
    """BirdNET V2.4 as a detector over NIPS4B's clips, the classes it maps (predicted once per --out)."""
    import json

    from birdsed.infer.predict import run_predict
    from birdsed.model.birdnet import init_model_dir

    model = out / "nips4b" / "birdnet"
    if not (model / "model.json").is_file():
        init_model_dir(model, classes_from=NIPS4B)
    pred = out / "nips4b" / "pred"
    if not (pred / "scores.parquet").is_file():
        run_predict(model, [str(NIPS4B / "audio")], pred, quiet=True)
    meta = json.loads((model / "model.json").read_text())
    # one class per BirdNET species: NIPS4B's call and song of a species (Erirub_call, Erirub_song) get the same
    # BirdNET score, so the species is present where either is
    species: dict[int, list[str]] = {}
    for c, i in zip(meta["classes"], meta["birdnet"]["indices"]):
        if i >= 0:
            species.setdefault(i, []).append(c)
    classes = [names[0] for names in species.values()]
    s = scores_of(pred, classes)
    s = s[s["start_s"] == 0].reset_index(drop=True)  # a clip is one 5 s row
    labels = pd.read_csv(NIPS4B / "labels.csv", keep_default_na=False)
    truth = {f: set(ls.split()) for f, ls in zip(labels["filename"], labels["labels"])}
    present = [truth.get(Path(f).name, set()) for f in s["file"]]
    y = np.array([[bool(set(names) & ls) for names in species.values()] for ls in present], dtype=bool)
    return Source(
        "nips4b BirdNET", s["file"].to_numpy(), s["start_s"].to_numpy(), s[classes].to_numpy(np.float64), y, classes
    )


def simulated_verdicts(src: Source, rows: np.ndarray, n: int, seed: int) -> pd.DataFrame:
    """Per species, the first n clips of review's stratified queue over `rows`, answered from the truth."""
    parts = []
    for k, c in enumerate(src.classes):
        clips = pd.DataFrame(
            {"file": src.recordings[rows], "start_s": src.start_s[rows], "end_s": src.start_s[rows] + 5.0,
             "label": c, "score": src.scores[rows, k], "row": rows}
        )  # fmt: skip
        chosen = select(clips, QueueSpec(species=c, sample="stratified", n=n, seed=seed))
        parts.append(chosen.assign(verdict=np.where(src.truth[chosen["row"].to_numpy(), k], "yes", "no")))
    return pd.concat(parts, ignore_index=True)


def fits(verdicts: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, tuple[float, float, float | None]]]:
    """Per method, per species with verdicts: (a, b, threshold or None)."""
    cal = calibrate(verdicts, classes, PRECISION, min_verdicts=2)
    partial = {s.label: (s.a, s.b, s.threshold) for s in cal.species}
    unpooled, glob = {}, {}
    a0, b0 = cal.pooled
    t0 = float(sigmoid((logit(PRECISION) - a0) / b0)) if b0 > 0 else None
    for label, g in verdicts.groupby("label"):
        x, y = logit(g["score"].to_numpy(np.float64)), (g["verdict"] == "yes").to_numpy(np.float64)
        beta, _ = fit_map(x, y, np.zeros(2), POOLED_RIDGE)
        ok = 0 < y.sum() < len(y) and beta[1] > 0
        t = float(sigmoid((logit(PRECISION) - beta[0]) / beta[1])) if ok else None
        unpooled[label] = (float(beta[0]), float(beta[1]), t)
        glob[label] = (a0, b0, t0)
    return {"partial": partial, "unpooled": unpooled, "global": glob}


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean |mean p - share of y| over equal-width bins of p."""
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() * abs(p[m].mean() - y[m].mean())
    return total / max(1, len(p))


def measured(src: Source, rows: np.ndarray, fit: dict) -> dict:
    """Precision, recall and ECE of one method's fit on `rows` (the other half)."""
    tp = fp = pos = 0
    good = []
    raw_p, cal_p, ys = [], [], []
    for label, (a, b, t) in fit.items():
        k = src.classes.index(label)
        s, y = src.scores[rows, k], src.truth[rows, k]
        m = s >= MIN_SCORE_ECE
        raw_p.append(s[m])
        cal_p.append(sigmoid(a + b * logit(s[m])))
        ys.append(y[m])
        if t is None:
            continue
        hit = s >= t
        tp_k, fp_k = int((hit & y).sum()), int((hit & ~y).sum())
        tp, fp, pos = tp + tp_k, fp + fp_k, pos + int(y.sum())
        if tp_k + fp_k:
            good.append(tp_k / (tp_k + fp_k) >= 0.8)
    raw_p, cal_p, ys = (np.concatenate(x) if x else np.zeros(0) for x in (raw_p, cal_p, ys))
    return {
        "precision": tp / (tp + fp) if tp + fp else np.nan,
        "species_ok": float(np.mean(good)) if good else np.nan,
        "recall": tp / pos if pos else np.nan,
        "species": sum(t is not None for _, _, t in fit.values()),
        "detections": tp + fp,
        "ece_raw": ece(raw_p, ys.astype(float)),
        "ece_cal": ece(cal_p, ys.astype(float)),
    }


def study(src: Source, budgets: list[int], repeats: int) -> list[dict]:
    recs = np.unique(src.recordings)
    out = []
    for n in budgets:
        per_method: dict[str, list[dict]] = {}
        for r in range(repeats):
            rng = np.random.default_rng([n, r])
            review = set(rng.permutation(recs)[: len(recs) // 2])
            in_review = np.array([f in review for f in src.recordings])
            a_rows, b_rows = np.flatnonzero(in_review), np.flatnonzero(~in_review)
            verdicts = simulated_verdicts(src, a_rows, n, seed=r)
            for method, fit in fits(verdicts, src.classes).items():
                per_method.setdefault(method, []).append(measured(src, b_rows, fit))
        for method, runs in per_method.items():
            df = pd.DataFrame(runs)
            row = {"source": src.name, "verdicts": n, "method": method, "repeats": repeats}
            for c in df.columns:
                row[c], row[c + "_sd"] = float(df[c].mean()), float(df[c].std(ddof=1)) if len(df) > 1 else 0.0
            out.append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", nargs="+", choices=["synth", "nips4b"], default=["synth", "nips4b"])
    p.add_argument("--verdicts", type=int, nargs="+", default=[25, 50, 100, 200], help="verdicts per species")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--shift", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=12, help="the synthetic model's training epochs")
    p.add_argument("--out", type=Path, default=Path("bench-out/calibrate"))
    a = p.parse_args()
    rows = []
    for name in a.sources:
        t = time.perf_counter()
        src = synth_source(a.out, a.shift, a.epochs) if name == "synth" else nips4b_source(a.out)
        made_s = time.perf_counter() - t
        print(
            f"{src.name}: {len(src.recordings)} rows of {len(np.unique(src.recordings))} recordings, "
            f"{len(src.classes)} classes, {int(src.truth.sum())} positives (scored in {made_s:.0f} s)"
        )
        t = time.perf_counter()
        rows += study(src, a.verdicts, a.repeats)
        print(f"  study: {time.perf_counter() - t:.0f} s")
    print_markdown(
        rows,
        {
            "source": "{source}",
            "verdicts / species": "{verdicts}",
            "method": "{method}",
            "precision on other recordings (target 0.9)": "{precision:.3f} +- {precision_sd:.3f}",
            "species with precision >= 0.8": "{species_ok:.2f}",
            "recall": "{recall:.3f}",
            "species with a threshold": "{species:.1f}",
            "ECE raw -> calibrated": "{ece_raw:.3f} -> {ece_cal:.3f} +- {ece_cal_sd:.3f}",
        },
    )
    save_json(a.out / "calibrate.json", {"python": sys.version.split()[0], "args": vars(a), "results": rows})


if __name__ == "__main__":
    main()
