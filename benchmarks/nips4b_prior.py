"""BirdNET's place-and-season prior on NIPS4B (issue #36 item 2): does the prior help BirdNET's detector there?

NIPS4B's 550 clips were recorded in Provence (southern France) in spring. BirdNET V2.4's logits of every clip (its
6,522 labels; 3 s windows at a 1 s hop, a clip shorter than 3 s zero-padded; a clip's logit per label the max over
its windows) are computed once with LiteRT on the CPU and cached (--cache). Then, for each place and week:

- AP over the NIPS4B classes BirdNET maps (species.csv's names: birdnet_labels.map_classes), macro (classes with a
  positive clip) and micro, with the prior off, BirdNET-Analyzer's filter (occurrence < 0.03: score 0) and the soft
  prior (logit + weight * log(max(occurrence, 1e-3))) at several weights;
- the NIPS4B species present in the labels that the filter removes (occurrence < 0.03) and that the soft prior
  down-weights by more than half a logit;
- the 6,522-label detector's false species: labels scored >= 0.1 (BirdNET-Analyzer's minimum confidence) or >= 0.5
  in some clip that are not among the BirdNET labels NIPS4B's classes map to, their clip detections, and the correct
  detections (a clip holding the label), with and without the prior.

    python benchmarks/nips4b_prior.py --out bench-out/nips4b_prior.json

The prior is the same code predict runs (infer/prior.py's OccurrencePrior), applied here to cached scores.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from common import NIPS4B, machine, save_json
from sklearn.metrics import average_precision_score

from birdsed.audio.decode import load_audio
from birdsed.evaluate.metrics import sets_to_matrix
from birdsed.infer.prior import OccurrencePrior, PriorOptions
from birdsed.model.birdnet import N_SAMPLES, SAMPLE_RATE_HZ, shared_runtime
from birdsed.model.birdnet_labels import dataset_aliases, ebird_codes, map_classes, read_labels
from birdsed.model.birdnet_range import Place
from birdsed.train.embedcache import fit_to_window, subwindow_starts

HOP = SAMPLE_RATE_HZ  # 1 s between 3 s windows


def clip_logits(paths: list[str], cache: Path) -> np.ndarray:
    """(n_clips, 6522) BirdNET logits, each the max over the clip's 3 s windows at a 1 s hop (cached in `cache`)."""
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if list(z["paths"]) == list(paths):
            return z["logits"]
    rt = shared_runtime(False)
    out = []
    t0 = time.perf_counter()
    for i, p in enumerate(paths):
        x = fit_to_window(load_audio(p, SAMPLE_RATE_HZ), N_SAMPLES, "pad")
        windows = np.stack([x[s : s + N_SAMPLES] for s in subwindow_starts(len(x), HOP)])  # (W, 144000)
        out.append(rt.logits(windows).max(axis=0))
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(paths)} clips, {time.perf_counter() - t0:.0f} s", flush=True)
    logits = np.stack(out).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array(paths), logits=logits)
    return logits


PLACES = {  # NIPS4B: Provence, spring
    "Montpellier": (43.6, 3.9),
    "Aix-en-Provence": (43.5, 5.4),
    "Girona (Spain)": (41.98, 2.82),
}
WEEKS = (13, 17, 21, 24, -1)  # 1 April, 1 May, 1 June, the end of June, all year
SOFT_WEIGHTS = (0.25, 0.5, 1.0, 2.0)
DOWN_WEIGHTED_LOGITS = 0.5  # a species counts as down-weighted when the soft prior takes more than this off its logit
FALSE_THRESHOLDS = (0.1, 0.5)  # BirdNET-Analyzer's minimum confidence (0.1) and 0.5


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def ap(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(macro AP over the classes with a positive clip, micro AP over the same classes)."""
    keep = y.sum(0) > 0
    y, p = y[:, keep], p[:, keep]
    return float(average_precision_score(y, p, average="macro")), float(average_precision_score(y, p, average="micro"))


def settings() -> list[tuple[str, PriorOptions]]:
    out = [("off", PriorOptions("off"))]
    out.append(("filter 0.03", PriorOptions("filter")))
    out += [(f"soft w={w:g}", PriorOptions("soft", weight=w)) for w in SOFT_WEIGHTS]
    return out


def false_species(scores: np.ndarray, labels: list[str], nips_labels: set[str], y_label: np.ndarray) -> dict:
    """At each threshold: distinct species BirdNET reports in some clip that are not NIPS4B's (false species), their
    clip detections, and the correct clip detections of NIPS4B species (a label whose clip holds it)."""
    out = {}
    nips = np.array([lab in nips_labels for lab in labels])
    for thr in FALSE_THRESHOLDS:
        hit = scores >= thr  # (clips, 6522)
        false = hit[:, ~nips]
        correct = hit & y_label
        out[f"{thr:g}"] = {
            "false_species": int(false.any(0).sum()),
            "false_detections": int(false.sum()),
            "correct_detections": int(correct.sum()),
            "nips4b_detections": int(hit[:, nips].sum()),
            "top_false": [
                labels[j] for j in np.nonzero(~nips)[0][np.argsort(-false.sum(0), kind="stable")][:5] if hit[:, j].any()
            ],
        }
    return out


def main() -> None:
    ap_ = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap_.add_argument("--data", type=Path, default=NIPS4B)
    ap_.add_argument("--cache", type=Path, default=Path("bench-out/nips4b_birdnet_logits.npz"))
    ap_.add_argument("--out", type=Path, default=Path("bench-out/nips4b_prior.json"))
    ap_.add_argument("--cache-only", action="store_true", help="compute the logits' cache and stop")
    a = ap_.parse_args()
    t_start = time.perf_counter()
    table = pd.read_csv(a.data / "labels.csv", dtype=str).fillna("")
    paths = [str(a.data / "audio" / f) for f in table["filename"]]
    logits = clip_logits(paths, a.cache)  # (550, 6522)
    print(f"logits of {len(paths)} clips: {logits.shape}, {time.perf_counter() - t_start:.0f} s")
    if a.cache_only:
        return
    labels = read_labels()
    classes = list(pd.read_csv(a.data / "species.csv", dtype=str)["label"])
    cmap = map_classes(classes, labels, ebird_codes(), dataset_aliases(a.data))
    mapped = [k for k, i in enumerate(cmap.indices) if i >= 0]
    idx = np.array([cmap.indices[k] for k in mapped])
    mapped_classes = [classes[k] for k in mapped]
    class_labels = tuple(labels[i] for i in idx)
    y = sets_to_matrix([set(s.split()) & set(mapped_classes) for s in table["labels"]], mapped_classes).astype(bool)
    scores = sigmoid(logits[:, idx])  # (550, K): BirdNET's detector over the NIPS4B classes it maps
    nips_labels = set(class_labels)
    present = sorted({lab for k, lab in enumerate(class_labels) if y[:, k].any()})
    # truth per BirdNET label (a clip holds a label when it holds any class mapped to it), for the 6,522-label run
    y_label = np.zeros(logits.shape, bool)
    for k, i in enumerate(idx):
        y_label[:, i] |= y[:, k]
    all_scores = sigmoid(logits)
    print(
        f"{len(classes)} NIPS4B classes, {len(mapped)} map to {len(nips_labels)} BirdNET labels; "
        f"{len(present)} of them present in the labels; unmapped: {cmap.unmapped}"
    )
    rows, false_rows = [], []
    base_false = false_species(all_scores, labels, nips_labels, y_label)
    false_rows.append({"place": "-", "week": None, "setting": "off", **{f"at {t}": v for t, v in base_false.items()}})
    for place_name, (lat, lon) in PLACES.items():
        for week in WEEKS:
            place = Place(lat, lon, week)
            for name, opts in settings():
                if name == "off" and rows:
                    continue  # the same everywhere
                prior = OccurrencePrior(replace(opts, labels=class_labels))
                adj = prior(scores, place) if opts.on else scores
                macro, micro = ap(y, adj)
                row = {
                    "place": place_name if opts.on else "-",
                    "week": week if opts.on else None,
                    "setting": name,
                    "macro_ap": round(macro, 4),
                    "micro_ap": round(micro, 4),
                }
                if opts.on:
                    occ = dict(zip(class_labels, prior.occurrence(place)))
                    if opts.mode == "filter":
                        gone = [lab for lab in present if occ[lab] < opts.min_occurrence]
                    else:
                        shift = {lab: opts.weight * np.log(max(occ[lab], 1e-3)) for lab in present}
                        gone = [lab for lab in present if shift[lab] < -DOWN_WEIGHTED_LOGITS]
                    row["present_species_hit"] = len(gone)
                    row["hit_species"] = [lab.split("_")[1] for lab in gone]
                rows.append(row)
                print(row)
            for name, opts in settings()[1:]:
                if name not in ("filter 0.03", "soft w=0.5", "soft w=1"):
                    continue
                prior = OccurrencePrior(replace(opts, labels=tuple(labels)))
                f = false_species(prior(all_scores, place), labels, nips_labels, y_label)
                false_rows.append(
                    {"place": place_name, "week": week, "setting": name, **{f"at {t}": v for t, v in f.items()}}
                )
    payload = {
        "machine": machine(),
        "clips": len(paths),
        "classes": len(classes),
        "mapped_classes": len(mapped),
        "mapped_labels": len(nips_labels),
        "present_species": len(present),
        "unmapped": cmap.unmapped,
        "ap": rows,
        "false_species": false_rows,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    save_json(a.out, payload)
    print("| place | week | setting | macro AP | micro AP | present species hit |")
    for r in rows:
        print(
            f"| {r['place']} | {r['week']} | {r['setting']} | {r['macro_ap']:.3f} | {r['micro_ap']:.3f} | "
            f"{r.get('present_species_hit', '')} |"
        )
    print(
        "| place | week | setting | "
        + " | ".join(f"false species, detections, correct at {t:g}" for t in FALSE_THRESHOLDS)
    )
    for r in false_rows:
        cells = [
            f"{v['false_species']}, {v['false_detections']}, {v['correct_detections']}"
            for k, v in r.items()
            if k.startswith("at ")
        ]
        print(f"| {r['place']} | {r['week']} | {r['setting']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
