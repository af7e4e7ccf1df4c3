"""The anchor for bird-pretrained models on NIPS4B: a logistic regression on BirdNET V2.4 embeddings.

Each clip is embedded as 3 s windows at a 1 s hop (a clip shorter than 3 s zero-padded to 3 s), the embeddings
mean- and max-pooled over the clip (2,048 features, standardised); one logistic regression per class
(one-vs-rest, liblinear), its C (0.01, 0.1 or 1) chosen inside each training fold by 3-fold cross-validation
on micro AP. This is what
users of BirdNET-Analyzer, perch or OpenSoundscape do with embeddings; birdsed's BirdNET-head preset must beat it.

Used by `benchmarks/nips4b.py --baseline` (same folds, same run).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import KFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from birdsed.audio.decode import load_audio
from birdsed.evaluate.metrics import sets_to_matrix
from birdsed.model.birdnet import N_SAMPLES, SAMPLE_RATE_HZ, shared_runtime
from birdsed.train.embedcache import fit_to_window, subwindow_starts

C_GRID = (0.01, 0.1, 1.0)


def clip_features(paths: list[str], cache: Path) -> np.ndarray:
    """(n_clips, 2048): mean and max over each clip's embeddings of 3 s windows at a 1 s hop (cached in `cache`)."""
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        if list(z["paths"]) == list(paths):
            return z["features"]
    rt = shared_runtime(True)
    feats = []
    for p in paths:
        x = fit_to_window(load_audio(p, SAMPLE_RATE_HZ), N_SAMPLES, "pad")
        subs = np.stack([x[s : s + N_SAMPLES] for s in subwindow_starts(len(x), SAMPLE_RATE_HZ)])
        e = rt.embed(subs)
        feats.append(np.concatenate([e.mean(0), e.max(0)]))
    features = np.stack(feats).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array(paths), features=features)
    return features


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> tuple[StandardScaler, OneVsRestClassifier]:
    scaler = StandardScaler().fit(x)
    clf = OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear", max_iter=2000), n_jobs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes absent from a split: a constant predictor, as sklearn warns
        clf.fit(scaler.transform(x), y)
    return scaler, clf


def _micro_ap(y: np.ndarray, p: np.ndarray) -> float:
    keep = y.sum(0) > 0
    return float(average_precision_score(y[:, keep], p[:, keep], average="micro"))


def choose_c(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """C with the best micro AP over 3 inner folds of the training clips."""
    scores = {}
    for c in C_GRID:
        preds = np.zeros(y.shape, np.float32)
        for tr, va in KFold(3, shuffle=True, random_state=seed).split(x):
            scaler, clf = _fit(x[tr], y[tr], c)
            preds[va] = clf.predict_proba(scaler.transform(x[va]))
        scores[c] = _micro_ap(y, preds)
    return max(scores, key=scores.get)


def anchor_oof(
    table: pd.DataFrame, folds: np.ndarray, fold_ids: list[int], cache: Path
) -> tuple[pd.DataFrame, list[dict]]:
    """Out-of-fold scores (clips of fold_ids x classes, indexed by file name) and per-fold rows (C, seconds)."""
    paths = [str(p) for p in table["path"]]
    t0 = time.perf_counter()
    x = clip_features(paths, cache)
    embed_s = time.perf_counter() - t0
    classes = sorted(set().union(*map(set, table["primary_labels"])))
    y = sets_to_matrix([set(v) for v in table["primary_labels"]], classes).astype(int)
    parts, rows = [], []
    for k in fold_ids:
        t1 = time.perf_counter()
        tr, te = folds != k, folds == k
        c = choose_c(x[tr], y[tr])
        scaler, clf = _fit(x[tr], y[tr], c)
        p = clf.predict_proba(scaler.transform(x[te]))
        parts.append(pd.DataFrame(p, columns=classes, index=[Path(q).name for q in np.array(paths)[te]]))
        rows.append({"fold": k, "C": c, "fit_s": time.perf_counter() - t1})
    rows.append({"embed_s_all_clips": embed_s})
    return pd.concat(parts), rows
