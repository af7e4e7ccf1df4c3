"""Active learning with a simulated reviewer who answers from truth (issue #37): how fast `birdsed learn` makes a
recogniser from verdicts on BirdNET V2.4 embeddings.

    python benchmarks/bench_learn.py --out bench-out/learn            # ~10 min on 2 busy cores (embeddings cached)

A. NIPS4B (550 clips, 87 classes; `birdsed embed` with BirdNET, 3 s windows every 3 s). Clips are split in half:
   the reviewer's pool and held-out clips. Every class starts from one "yes" (a random window of a clip with it);
   then, each step, every class gets verdicts on windows the selection proposes (learn's own Candidates and k_center)
   up to 10, 25, 50 and 100 verdicts per class, the reviewer saying "yes" when the window's clip carries the class
   (weak labels). After each budget the classifier (linear, and birdsed's embedding head) scores the held-out clips
   (a clip's score: its windows' maximum): macro AP over the classes with >= 2 clips on both sides. Selections:
   uncertain (learn's default: near 0.5, spread by k-center), random, top. Repeats: other splits and seeds; mean and
   spread (min-max).
B. "One example to a recogniser": a synthetic species (birdsed synth's parametric calls: BirdNET has never heard it)
   planted in --hours of soundscapes (NIPS4B clips scattered over a noise bed, the species' bouts at random times
   and gains), and one more recording holding one call of it: the example. Round 1 learns from that single "yes";
   each later round the reviewer answers the 10 windows the round proposed. Every round is `learn_round` on the DB
   on disk (the CLI's path: every window scored and written, the queue, the model directory): AP over every window of
   the soundscapes (truth: a planted note overlaps the window by >= 0.2 s), and the round's wall time.

Embeddings are cached in --cache (DB folders: a re-run embeds nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NIPS4B, machine, print_markdown, save_json  # noqa: E402

from birdsed.evaluate.metrics import average_precision  # noqa: E402
from birdsed.search.classifier import TrainingSet, fit, score  # noqa: E402
from birdsed.search.learn import BACKGROUND_WEIGHT, LearnSpec, learn_round, open_window_db  # noqa: E402
from birdsed.search.propose import POOL_FACTOR, Candidates, k_center  # noqa: E402

BUDGETS = (10, 25, 50, 100)
SR = 32000
HOP_S = 3.0


def birdnet_model(folder: Path) -> Path:
    """A BirdNET V2.4 model directory (model.json only): what `embed` embeds with."""
    from birdsed.model.birdnet_labels import MODEL_FILE, SHA256

    folder.mkdir(parents=True, exist_ok=True)
    meta = {"kind": "birdnet", "classes": ["x"], "birdnet": {"model_file": MODEL_FILE, "sha256": SHA256[MODEL_FILE],
            "n_labels": 6522, "indices": [0], "hop_s": HOP_S, "sensitivity": 1.0}}  # fmt: skip
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def embed(model: Path, inputs: list[Path], db: Path) -> dict:
    from birdsed.search.embed import run_embed

    t0 = time.perf_counter()
    s = run_embed(model, [str(p) for p in inputs], db, hop_s=HOP_S, workers=0, quiet=True)
    return {"db": str(db), "windows_added": s.n_windows_added, "wall_s": round(time.perf_counter() - t0, 1)}


# ---- A: NIPS4B, budgets per class


def nips4b_arrays(db_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(X (n_windows, 1024), clip of each window (n,), Y per clip (n_clips, K) bool, classes)."""
    db = open_window_db(db_path)
    labels = pd.read_csv(NIPS4B / "labels.csv", keep_default_na=False)
    classes = sorted({c for s in labels["labels"] for c in s.split()})
    col = {c: k for k, c in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)), bool)
    for i, s in enumerate(labels["labels"]):
        y[i, [col[c] for c in s.split()]] = True
    clip = {str((NIPS4B / "audio" / f).resolve()): i for i, f in enumerate(labels["filename"])}
    files = db.windows["file"].map(lambda f: clip.get(str(Path(f).resolve()), -1)).to_numpy()
    assert (files >= 0).all(), "a DB window of a file labels.csv does not name"
    x = np.concatenate([v for _, v in db.blocks(65536)])
    return x, files, y, classes


def training_set(x: np.ndarray, truth: np.ndarray, known: np.ndarray, bg: np.ndarray) -> TrainingSet:
    """The labelled windows (known (n, K)) with the reviewer's answers, plus background windows as weak negatives."""
    rows = np.flatnonzero(known.any(1) | np.isin(np.arange(len(x)), bg))
    w = known[rows].astype(np.float32)
    is_bg = np.isin(rows, bg)
    w[is_bg] = np.where(known[rows][is_bg], 1.0, BACKGROUND_WEIGHT)
    y = (truth[rows] & known[rows]).astype(np.float32)
    return TrainingSet(x[rows], y, w)


def propose_more(x, probs, known, need: np.ndarray, how: str, rng) -> None:
    """Mark `need[k]` more windows of class k as reviewed (known), chosen by `how` (learn's selection code)."""
    n_max = int(need.max())
    if n_max <= 0:
        return
    if how == "random":
        for k in np.flatnonzero(need > 0):
            free = np.flatnonzero(~known[:, k])
            known[rng.choice(free, min(need[k], len(free)), replace=False), k] = True
        return
    best = Candidates(known.shape[1], n_max * (POOL_FACTOR if how == "uncertain" else 1), how, int(rng.integers(1e9)))
    best.add(np.arange(len(x)), probs, known)
    for k in np.flatnonzero(need > 0):
        ids, _ = best.of(k)
        if how == "uncertain":
            ids = ids[k_center(x[ids], int(need[k]))]
        known[ids[: need[k]], k] = True


def simulate(x, clip_of, y_clip, eval_k, how: str, classifier: str, seed: int) -> dict[int, float]:
    """One run: macro AP on held-out clips after each budget of verdicts per class."""
    rng = np.random.default_rng(seed)
    n_clips = len(y_clip)
    pool_clip = rng.permutation(n_clips) < n_clips // 2
    pool, test = np.flatnonzero(pool_clip[clip_of]), np.flatnonzero(~pool_clip[clip_of])
    xp, truth = x[pool], y_clip[clip_of[pool]]
    known = np.zeros(truth.shape, bool)
    for k in range(truth.shape[1]):  # the one example each class starts from
        pos = np.flatnonzero(truth[:, k])
        if len(pos):
            known[rng.choice(pos), k] = True
    bg = rng.choice(len(pool), min(1000, len(pool)), replace=False)
    out = {}
    head = fit(training_set(xp, truth, known, bg), classifier, seed)
    for budget in BUDGETS:
        need = np.minimum(budget - known.sum(0), (~known).sum(0))
        propose_more(xp, score(head, xp) if how != "random" else None, known, need, how, rng)
        head = fit(training_set(xp, truth, known, bg), classifier, seed)
        p = score(head, x[test])
        clip_scores = pd.DataFrame(p).groupby(clip_of[test]).max()
        y_test = y_clip[clip_scores.index.to_numpy()]
        out[budget] = average_precision(clip_scores.to_numpy()[:, eval_k], y_test[:, eval_k])[0]
    return out


def part_a(db: Path, repeats: int, head_repeats: int) -> list[dict]:
    x, clip_of, y_clip, classes = nips4b_arrays(db)
    rng = np.random.default_rng(0)
    half = rng.permutation(len(y_clip)) < len(y_clip) // 2
    eval_k = np.flatnonzero((y_clip[half].sum(0) >= 2) & (y_clip[~half].sum(0) >= 2))
    print(f"A: {len(x)} windows of {len(y_clip)} clips; {len(eval_k)} of {len(classes)} classes evaluated")
    rows = []
    for classifier, n_rep, hows in (("linear", repeats, ("uncertain", "random", "top")),
                                    ("head", head_repeats, ("uncertain", "top"))):  # fmt: skip
        for how in hows:
            t0 = time.perf_counter()
            runs = [simulate(x, clip_of, y_clip, eval_k, how, classifier, seed) for seed in range(n_rep)]
            wall = time.perf_counter() - t0
            for b in BUDGETS:
                ap = np.array([r[b] for r in runs])
                rows.append({"classifier": classifier, "selection": how, "budget": b, "mean": ap.mean(),
                             "lo": ap.min(), "hi": ap.max(), "repeats": n_rep, "wall_s": wall})  # fmt: skip
            print(f"  {classifier} {how}: " + ", ".join(f"{b}: {np.mean([r[b] for r in runs]):.3f}" for b in BUDGETS))
    return rows


# ---- B: one example call, planted in hours of soundscapes


def nips4b_audio(rng) -> list[np.ndarray]:
    out = []
    for f in sorted((NIPS4B / "audio").iterdir()):
        a, sr = sf.read(f, dtype="float32", always_2d=True)
        out.append(soxr.resample(a.mean(1), sr, SR).astype(np.float32))
    return out


def make_soundscapes(folder: Path, hours: float, seed: int = 7) -> pd.DataFrame:
    """--hours of 10-minute soundscapes (NIPS4B clips over a noise bed) with the synthetic species' bouts planted,
    and example.flac (one call of it); returns the planted notes (file, start_s, end_s)."""
    from birdsed.data.synth_calls import call_bout, make_species, noise_bed, place

    truth_path = folder.parent / "planted.csv"
    if truth_path.is_file():
        return pd.read_csv(truth_path)
    rng = np.random.default_rng(seed)
    species = make_species(5, seed)[1]  # a trill: no bird BirdNET knows
    clips = nips4b_audio(rng)
    folder.mkdir(parents=True, exist_ok=True)
    notes = []
    n_scapes, n = max(1, round(hours * 6)), 600 * SR
    for s in range(n_scapes):
        buf = noise_bed(rng, n, SR, 0.02)
        t = 0
        while t < n:
            clip = clips[int(rng.integers(len(clips)))]
            place(buf, clip, t, float(rng.uniform(0.3, 1.0)))
            t += len(clip) + int(rng.exponential(4.0) * SR)
        name = f"scape{s:02d}.flac"
        for at_s in np.sort(rng.uniform(0, 595, 10)):  # a bout a minute, quieter than most NIPS4B birds
            bout, spans = call_bout(species, rng, 1.0, SR)
            place(buf, bout, int(at_s * SR), float(rng.uniform(0.03, 0.3)))
            notes += [(name, at_s + a, at_s + b) for a, b in spans]
        sf.write(folder / name, np.clip(buf, -1, 1), SR, subtype="PCM_16")
    example = noise_bed(rng, 3 * SR, SR, 0.02)
    bout, _ = call_bout(species, rng, 1.0, SR)
    place(example, bout, SR // 4, 0.3)
    sf.write(folder / "example.flac", np.clip(example, -1, 1), SR, subtype="PCM_16")
    table = pd.DataFrame(notes, columns=["file", "start_s", "end_s"])
    table.to_csv(truth_path, index=False)
    return table


def window_truth(windows: pd.DataFrame, notes: pd.DataFrame, min_overlap_s: float = 0.2) -> np.ndarray:
    """Each window: does a planted note overlap it by >= min_overlap_s?"""
    out = np.zeros(len(windows), bool)
    for f, g in notes.groupby("file"):
        mine = np.flatnonzero(windows["file"].map(lambda p: Path(p).name == f).to_numpy())
        ws, we = windows["start_s"].to_numpy()[mine], windows["end_s"].to_numpy()[mine]
        for a, b in zip(g["start_s"], g["end_s"]):
            out[mine[(np.minimum(we, b) - np.maximum(ws, a)) >= min(min_overlap_s, b - a)]] = True
    return out


def part_b(db: Path, notes: pd.DataFrame, out: Path, rounds: int, n: int) -> list[dict]:
    windows = open_window_db(db).windows
    truth = window_truth(windows, notes)
    is_example = windows["file"].map(lambda p: Path(p).name == "example.flac").to_numpy()
    ex = windows[is_example].iloc[0]
    print(f"B: {len(windows)} windows ({len(windows) * HOP_S / 3600:.2f} h), {truth[~is_example].sum()} with the "
          "planted species")  # fmt: skip
    rows = []
    for how in ("uncertain", "top"):
        folder = out / f"planted-{how}"
        verdicts = [(ex["file"], ex["start_s"], ex["end_s"], "trill", "yes")]
        for r in range(1, rounds + 1):
            table = pd.DataFrame(verdicts, columns=["file", "start_s", "end_s", "label", "verdict"])
            table.to_csv(out / f"verdicts-{how}.csv", index=False)
            t0 = time.perf_counter()
            res = learn_round(db, [out / f"verdicts-{how}.csv"], folder, LearnSpec(select=how, n=n))
            wall = time.perf_counter() - t0
            s = pd.read_parquet(folder / "scores.parquet", columns=["trill"])["trill"].to_numpy()
            ap = average_precision(s[~is_example, None], truth[~is_example, None])[0]
            found = int((table["verdict"] == "yes").sum())
            rows.append({"selection": how, "round": r, "verdicts": len(table), "yes": found, "ap": ap, "wall_s": wall})
            print(f"  {how} round {r}: {len(table)} verdicts ({found} yes), AP {ap:.3f}, {wall:.1f} s")
            for q in res.queue.itertuples(index=False):  # the reviewer answers the round's queue from truth
                i = np.flatnonzero((windows["file"] == q.file) & (windows["start_s"] == q.start_s))[0]
                verdicts.append((q.file, q.start_s, q.end_s, "trill", "yes" if truth[i] else "no"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out/learn"))
    ap.add_argument("--cache", type=Path, default=Path("bench-out/learn-cache"), help="embedding DBs, soundscapes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--head-repeats", type=int, default=2, help="repeats of the head (uncertain, top): 5x the time")
    ap.add_argument("--hours", type=float, default=1.0, help="soundscapes of part B")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--n", type=int, default=10, help="clips a round proposes (part B)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    model = birdnet_model(a.cache / "birdnet")
    emb_a = embed(model, [NIPS4B / "audio"], a.cache / "nips4b.db")
    print(f"NIPS4B embedded: {emb_a}")
    rows_a = part_a(a.cache / "nips4b.db", a.repeats, a.head_repeats)
    planted = a.cache / f"planted-{a.hours:g}h"
    notes = make_soundscapes(planted / "audio", a.hours)
    emb_b = embed(model, [planted / "audio"], planted / "db")
    print(f"soundscapes embedded: {emb_b}")
    a.out.mkdir(parents=True, exist_ok=True)
    rows_b = part_b(planted / "db", notes, a.out, a.rounds, a.n)
    print_markdown(rows_a, {"classifier": "{classifier}", "selection": "{selection}", "verdicts/class": "{budget}",
                            "macro AP": "{mean:.3f} ({lo:.3f}-{hi:.3f})", "repeats": "{repeats}"})  # fmt: skip
    print_markdown(rows_b, {"selection": "{selection}", "round": "{round}", "verdicts": "{verdicts}", "yes": "{yes}",
                            "AP": "{ap:.3f}", "wall s": "{wall_s:.2f}"})  # fmt: skip
    save_json(a.out / "bench_learn.json", {"machine": machine(), "embed": [emb_a, emb_b], "nips4b": rows_a,
              "planted": rows_b, "total_s": time.perf_counter() - t0, "args": vars(a)})  # fmt: skip


if __name__ == "__main__":
    main()
