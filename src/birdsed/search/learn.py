"""`birdsed learn`: a recogniser from verdicts on an archive's stored window embeddings, one round at a time.

A round reads every verdict so far (the `--verdicts` tables given in any round, and the verdicts given on the review
page of the learn folder itself, OUT/review/verdicts.sqlite), matches each to the DB windows of its file that it
overlaps (by at least `min_overlap` of the shorter of the two), trains a classifier on their embeddings
(classifier.py: every class at once, each on its own verdicts, plus random windows as weak negatives), scores every
window of the DB from the stored embeddings in blocks (no audio decoded; memory bounded by the block, not the
archive), proposes the next windows to review (propose.py) and writes:

    OUT/learn.json          the state: the DB, the verdict tables, the options, one entry per round (written last:
                            a round killed before it is redone by the next run, whole)
    OUT/model/              the classifier as a model directory `birdsed predict --model OUT/model` runs on new
                            recordings (BirdNET V2.4 DBs: kind birdnet_linear or birdnet_head)
    OUT/scores.parquet      every DB window's score per class (predict's scores table, output "clipwise"), and
    OUT/run.json            its classes: OUT opens in `birdsed review OUT` like a predict folder
    OUT/queue.csv           the next clips (file, start_s, end_s, label, score), in order: the review page's
                            "queue" sampling shows them first
    OUT/unmatched.csv       verdicts no DB window matches, with the reason (the round exits 1)
    OUT/rounds/NNN/         each round's queue.csv and verdicts.csv (the verdicts it learnt from)

A verdict: "yes" -> a positive of its label; "no" -> a negative of its label (and a positive of other_label when one
is named); "unsure" -> nothing. When a window gets two verdicts for one label, the later (by time) counts.

Python (a notebook):

    from birdsed.search.learn import LearnSpec, learn_round, open_window_db
    result = learn_round("db", ["verdicts.csv"], "m", LearnSpec(select="uncertain", n=10))
    result.queue            # the next clips; review them (`birdsed review m`), then call learn_round("db", [], "m")
    result.counts           # per class: yes, no, windows
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from birdsed.errors import LearnError
from birdsed.fsutil import atomic_dir, atomic_path, remove_stale_temps, run_lock, write_text_atomic
from birdsed.review.queue import CLIP_COLUMNS
from birdsed.review.verdicts import STORE_DIR, STORE_NAME, VERDICT_COLUMNS, load_verdicts
from birdsed.search.classifier import CLASSIFIERS, DEFAULT_CLASSIFIER, TrainingSet, check_trainable, fit, score
from birdsed.search.db import DBInfo, EmbeddingDB, open_db
from birdsed.search.propose import POOL_FACTOR, SELECTIONS, Candidates, k_center

log = logging.getLogger(__name__)

STATE = "learn.json"
QUEUE = "queue.csv"
UNMATCHED = "unmatched.csv"
BACKGROUND_WEIGHT = 0.1  # a random archive window as a negative weighs this much of a verified "no"
OUTPUTS = (STATE, QUEUE, UNMATCHED, "scores.parquet", "run.json", "model.new")  # what a round writes in OUT


@dataclass(frozen=True)
class Embedder:
    """What embedded a DB's windows: the model (backbone and its file's sha256), the window and hop, the width."""

    backbone: str
    sha256: str
    window_s: float
    hop_s: float
    dim: int


class WindowDB(Protocol):
    """What learn needs of an embedding DB: its windows (file, start_s, end_s; row i is window id i), what embedded
    them, and their vectors as float32, in blocks of ids or by ids."""

    windows: pd.DataFrame
    embedder: Embedder

    def blocks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids (n,), vectors (n, dim) float32) blocks of at most `size`, every window once, in id order."""
        ...

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), dim) float32, in the order of ids."""
        ...


@dataclass
class ArrayDB:
    """A WindowDB held in memory (embeddings a notebook already has; the tests' and benchmark's DB)."""

    windows: pd.DataFrame
    data: np.ndarray  # (n, dim)
    embedder: Embedder

    def __post_init__(self) -> None:
        assert self.data.shape == (len(self.windows), self.embedder.dim), (self.data.shape, self.embedder.dim)
        self.windows = self.windows[["file", "start_s", "end_s"]].reset_index(drop=True)

    def blocks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, len(self.data), size):
            ids = np.arange(i, min(i + size, len(self.data)), dtype=np.int64)
            yield ids, self.data[ids].astype(np.float32)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return self.data[np.asarray(ids, dtype=np.int64)].astype(np.float32)


class StoredDB:
    """An embedding DB `birdsed embed` wrote (search/db.py), as learn reads it: its windows table held once (three
    columns; ids run 0 .. n - 1 in its order), vectors read from the memory-mapped segments."""

    def __init__(self, db: EmbeddingDB):
        self.db = db
        self.windows = db.windows(["file", "start_s", "end_s"])
        self.embedder = embedder_of(db.info)

    def blocks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.db.blocks(size)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return self.db.vectors(ids)


def embedder_of(info: DBInfo) -> Embedder:
    """A DB's db.json as an Embedder: backbone "birdnet" and BirdNET's sha256 when its windows are BirdNET V2.4's own
    3 s windows (the embeddings a learnt model can compute again on new recordings), else its model's kind and
    digest."""
    from birdsed.model.birdnet import BirdNETDetector
    from birdsed.model.birdnet_labels import MODEL_FILE, SHA256

    if info.space == BirdNETDetector.embedding_space:
        return Embedder("birdnet", SHA256[MODEL_FILE], info.window_s, info.hop_s, info.dim)
    return Embedder(info.kind, info.model_sha256, info.window_s, info.hop_s, info.dim)


def open_window_db(path: str | Path) -> StoredDB:
    """The embedding DB at path (a DBError naming what is missing or damaged)."""
    return StoredDB(open_db(path))


@dataclass(frozen=True)
class LearnSpec:
    """A round's options (the CLI's flags; stored in learn.json, later rounds default to them)."""

    classifier: str = DEFAULT_CLASSIFIER
    select: str = "uncertain"
    n: int = 10  # windows proposed per class
    background: int = 1000  # random archive windows taken as weak negatives
    min_overlap: float = 0.5  # of the shorter of verdict clip and window
    block: int = 16384  # windows scored at a time
    seed: int = 0

    def __post_init__(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise LearnError(f"classifier {self.classifier!r}: valid: {list(CLASSIFIERS)}")
        if self.select not in SELECTIONS:
            raise LearnError(f"selection {self.select!r}: valid: {list(SELECTIONS)}")
        if not (self.n >= 1 and self.background >= 0 and 0 < self.min_overlap <= 1 and self.block >= 1):
            raise LearnError(f"learn options out of range: {self}")


@dataclass
class RoundResult:
    """What one round did: its number, the classes, per class the verdicts learnt from, the next clips, the verdicts
    no window matched, the model directory (None when the DB's embedder is not one predict can run), wall time."""

    round: int
    out: Path
    classes: list[str]
    counts: pd.DataFrame  # label, yes, no, windows
    queue: pd.DataFrame  # CLIP_COLUMNS
    unmatched: pd.DataFrame  # the verdict columns + reason
    model_dir: Path | None
    seconds: float
    up_to_date: bool = False
    notes: list[str] = field(default_factory=list)


# ---- verdicts -> windows


def targets_of(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per (verdict clip, label, target): yes -> 1, no -> 0, other_label -> 1 for it; unsure dropped. Later
    verdicts (by time) come last. Columns: file, start_s, end_s, label, target, verdict (its row in `verdicts`)."""
    v = verdicts.reset_index(drop=True).assign(verdict_row=lambda d: np.arange(len(d)))
    v = v.sort_values(["time", "verdict_row"], kind="stable")
    own = v[v["verdict"].isin(["yes", "no"])].assign(target=lambda d: (d["verdict"] == "yes").astype(np.int8))
    other = v[v["other_label"].astype(str) != ""].assign(label=lambda d: d["other_label"].astype(str), target=1)
    out = pd.concat([own, other]).sort_values(["time", "verdict_row"], kind="stable")
    return out[["file", "start_s", "end_s", "label", "target", "verdict_row"]].reset_index(drop=True)


def match_windows(windows: pd.DataFrame, clips: pd.DataFrame, min_overlap: float) -> tuple[pd.DataFrame, np.ndarray]:
    """Each clip (file, start_s, end_s, ...) against the DB windows of its file: rows (clip's columns + `window`, the
    window id) for every window overlapping it by >= min_overlap of the shorter of the two; and, per clip, why none
    matched ("" when some did) [shape=(len(clips),)]."""
    by_file = {f: g for f, g in windows.assign(window=np.arange(len(windows))).groupby("file", sort=False)}
    resolved: dict[str, pd.DataFrame] = {}  # the DB's files by absolute path, built when a clip names one otherwise
    reasons = np.full(len(clips), "", dtype=object)
    parts = []
    for i, c in enumerate(clips.itertuples(index=False)):
        g = by_file.get(c.file)
        if g is None:
            resolved = resolved or {str(Path(f).resolve()): g for f, g in by_file.items()}
            g = resolved.get(str(Path(c.file).resolve()))
        if g is None:
            reasons[i] = "file not in the DB"
            continue
        ws, we = g["start_s"].to_numpy(), g["end_s"].to_numpy()
        overlap = np.minimum(we, c.end_s) - np.maximum(ws, c.start_s)
        need = min_overlap * np.minimum(we - ws, c.end_s - c.start_s)
        hit = np.flatnonzero(overlap >= need - 1e-9)
        if not len(hit):
            reasons[i] = f"no DB window of the file overlaps {c.start_s:g}-{c.end_s:g} s by {min_overlap:.0%}"
            continue
        parts.append(
            pd.DataFrame({**{k: [v] * len(hit) for k, v in c._asdict().items()}, "window": g["window"].to_numpy()[hit]})
        )
    cols = [*clips.columns, "window"]
    return (pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)), reasons


def labelled_windows(windows: pd.DataFrame, verdicts: pd.DataFrame, min_overlap: float):
    """(window, label, target) of every verdict matched to DB windows, the later verdict on a (window, label)
    winning; and the verdicts no window matched, with a `reason` column."""
    tg = targets_of(verdicts)
    matched, reasons = match_windows(windows, tg, min_overlap)
    missed = pd.Series(reasons).groupby(tg["verdict_row"].to_numpy()).agg(lambda r: next((x for x in r if x), ""))
    missed = missed[(missed != "") & ~missed.index.isin(matched["verdict_row"])]
    unmatched = verdicts.reset_index(drop=True).iloc[missed.index.to_numpy()].assign(reason=missed.to_numpy())
    labelled = matched.drop_duplicates(["window", "label"], keep="last")[["window", "label", "target"]]
    return labelled.reset_index(drop=True), unmatched.reset_index(drop=True)


def training_set(
    db: WindowDB, labelled: pd.DataFrame, classes: list[str], background: int, seed: int
) -> tuple[TrainingSet, np.ndarray]:
    """The verdicts' windows and `background` random windows (weak negatives, BACKGROUND_WEIGHT): the TrainingSet
    and its window ids."""
    n = len(db.windows)
    rng = np.random.default_rng([seed, 1])
    bg = rng.choice(n, size=min(background, n), replace=False) if background else np.zeros(0, np.int64)
    ids = np.unique(np.concatenate([labelled["window"].to_numpy(np.int64), bg.astype(np.int64)]))
    row = {int(w): i for i, w in enumerate(ids)}
    col = {c: k for k, c in enumerate(classes)}
    y = np.zeros((len(ids), len(classes)), np.float32)
    w = np.zeros_like(y)
    w[[row[int(b)] for b in bg], :] = BACKGROUND_WEIGHT
    for win, label, target in labelled[["window", "label", "target"]].itertuples(index=False):
        i, k = row[int(win)], col[label]
        y[i, k], w[i, k] = float(target), 1.0
    return TrainingSet(db.vectors(ids), y, w), ids


# ---- the archive scored, the next clips chosen


def score_archive(
    db: WindowDB, head, classes: list[str], seen: dict[int, np.ndarray], spec: LearnSpec, scores_path: Path
) -> Candidates:
    """Score every window of the DB in blocks: written to scores_path (predict's scores table, atomically) and
    offered to the selection (windows with a verdict for a class, seen[k] sorted ids, never proposed for it)."""
    cap = spec.n * (POOL_FACTOR if spec.select == "uncertain" else 1)
    best = Candidates(len(classes), cap, spec.select, spec.seed)
    schema = pa.schema(
        [("file", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()), ("output", pa.string())]
        + [(c, pa.float32()) for c in classes]
    )
    with atomic_path(scores_path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for ids, vectors in db.blocks(spec.block):
            probs = score(head, vectors)  # (n, K)
            mask = np.stack([np.isin(ids, seen.get(k, ids[:0])) for k in range(len(classes))], axis=1)
            best.add(ids, probs, mask)
            w = db.windows.iloc[ids]
            cols = [
                pa.array(w["file"].to_numpy(), pa.string()),
                pa.array(w["start_s"].to_numpy(np.float64)),
                pa.array(w["end_s"].to_numpy(np.float64)),
                pa.array(["clipwise"] * len(ids), pa.string()),
            ]
            cols += [pa.array(probs[:, k]) for k in range(len(classes))]
            writer.write_table(pa.Table.from_arrays(cols, schema=schema))
    return best


def propose(db: WindowDB, best: Candidates, classes: list[str], spec: LearnSpec) -> pd.DataFrame:
    """The next clips: per class spec.n windows (uncertain: spread by k-center over its pool), the classes taken in
    turn (each class's first, then each one's second, ...). CLIP_COLUMNS."""
    per_class = []
    for k, label in enumerate(classes):
        ids, probs = best.of(k)
        if spec.select == "uncertain" and len(ids):
            pick = k_center(db.vectors(ids), spec.n)
            ids, probs = ids[pick], probs[pick]
        per_class.append((label, ids[: spec.n], probs[: spec.n]))
    rows = []
    for i in range(spec.n):
        for label, ids, probs in per_class:
            if i < len(ids):
                w = db.windows.iloc[int(ids[i])]
                rows.append((w["file"], float(w["start_s"]), float(w["end_s"]), label, float(probs[i])))
    return pd.DataFrame(rows, columns=list(CLIP_COLUMNS))


# ---- the model directory


def save_model(head, classes: list[str], embedder: Embedder, spec: LearnSpec, out: Path, extra: dict) -> str | None:
    """Write the classifier as a model directory predict runs (BirdNET V2.4 embeddings only); the reason when not."""
    from birdsed.model.birdnet_labels import MODEL_FILE, SHA256

    if embedder.backbone != "birdnet" or embedder.sha256 != SHA256[MODEL_FILE]:
        return (
            f"no model directory: the DB holds embeddings of {embedder.backbone!r} (sha256 {embedder.sha256[:12]}...), "
            "and predict runs learnt classifiers on BirdNET V2.4 embeddings only"
        )
    from birdsed.config import OUTPUT_KINDS
    from birdsed.decisions import Thresholds

    # one score a window: every output is it; 0.5 is where the classifier's yes and no weigh the same
    thresholds = Thresholds({kind: 0.5 for kind in OUTPUT_KINDS})
    extra = {**extra, "default_output": "clipwise"}
    if spec.classifier == "linear":
        from birdsed.model.linearhead import save_linear_dir

        save_linear_dir(classes, head, out, hop_s=embedder.hop_s, thresholds=thresholds, extra=extra)
    else:
        from birdsed.model.birdnet import WINDOW_S
        from birdsed.model.embedhead import EmbeddingHeadModel, save_head_dir

        model = EmbeddingHeadModel(classes, head, window_s=WINDOW_S, embed_hop_s=1.0, hop_s=embedder.hop_s)
        save_head_dir(model, out, thresholds=thresholds, extra=extra)
    return None


# ---- rounds


@dataclass
class LearnState:
    """OUT/learn.json: the DB and its embedder, the verdict tables, the options, the classes (their order is kept
    across rounds; new labels are appended) and one entry per finished round."""

    db: str
    embedder: dict
    verdicts: list[str]
    spec: dict
    classes: list[str]
    rounds: list[dict]

    @classmethod
    def read(cls, out: Path) -> LearnState | None:
        path = out / STATE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as e:
            raise LearnError(f"{path}: not a learn state birdsed wrote ({e}); move it away to start afresh") from e

    def write(self, out: Path) -> None:
        write_text_atomic(out / STATE, json.dumps(asdict(self), indent=2))


def resolve_spec(out: str | Path, **given) -> LearnSpec:
    """The options of a round into OUT: the last round's (LearnSpec()'s on the first), with those given (not None)
    in their place."""
    state = LearnState.read(Path(out))
    base = LearnSpec(**state.spec) if state is not None else LearnSpec()
    return LearnSpec(**{**asdict(base), **{k: v for k, v in given.items() if v is not None}})


def gather_verdicts(sources: Sequence[str | Path | pd.DataFrame], out: Path) -> pd.DataFrame:
    """Every verdict: each source (a CSV, a verdicts.sqlite, a predict folder, or a table) and OUT's own review
    store when it exists. The verdict columns."""
    tables = [s if isinstance(s, pd.DataFrame) else load_verdicts(s) for s in sources]
    own = out / STORE_DIR / STORE_NAME
    if own.is_file():
        tables.append(load_verdicts(own))
    if not tables:
        raise LearnError(f"{out}: no verdicts yet: give --verdicts (a CSV, a verdicts.sqlite or a predict folder)")
    table = pd.concat([t[list(VERDICT_COLUMNS)] for t in tables], ignore_index=True)
    table["time"] = table["time"].astype(str)
    return table


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def learn_round(
    db: WindowDB | str | Path,
    verdicts: Sequence[str | Path | pd.DataFrame],
    out: str | Path,
    spec: LearnSpec | None = None,
    db_path: str | None = None,
) -> RoundResult:
    """One round into OUT (see the module's docstring): the verdicts of `verdicts` (tables given as files are
    remembered for later rounds, DataFrames are not), of earlier rounds' tables and of OUT's review store; `spec`
    None: the last round's options (LearnSpec() on the first). A round whose verdicts and options equal the last
    one's is not run again (up_to_date)."""
    out = Path(out)
    if not isinstance(db, (str, Path)):
        where = db_path or "(in memory)"
    else:
        where, db = str(Path(db).resolve()), open_window_db(db)
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        remove_stale_temps(out, OUTPUTS)
        remove_stale_temps(out / "rounds", lambda name: name.isdigit())
        for left in ("model.new", "model.old"):  # a round killed while it swapped models: redone whole
            _remove(out / left)
        return _round(db, where, list(verdicts), out, spec)


def _round(db: WindowDB, where: str, sources: list, out: Path, spec: LearnSpec | None) -> RoundResult:
    t0 = time.perf_counter()
    state = LearnState.read(out)
    embedder = asdict(db.embedder)
    if state is not None and state.embedder != embedder:
        raise LearnError(
            f"{out}: learnt on a DB of {state.embedder['backbone']} embeddings ({state.db}); {where} holds "
            f"{embedder['backbone']} embeddings (sha256 {embedder['sha256'][:12]}...): use another --out"
        )
    spec = spec or (LearnSpec(**state.spec) if state is not None else LearnSpec())
    named = [str(Path(s).resolve()) for s in sources if not isinstance(s, pd.DataFrame)]
    paths = list(dict.fromkeys([*(state.verdicts if state else []), *named]))
    table = gather_verdicts([*paths, *[s for s in sources if isinstance(s, pd.DataFrame)]], out)
    labelled, unmatched = labelled_windows(db.windows, table, spec.min_overlap)
    if not len(labelled):
        raise LearnError(f"none of {len(table)} verdict(s) matches a window of {where} (see why per verdict: "
                         f"{unmatched['reason'].iloc[0] if len(unmatched) else 'all unsure'})")  # fmt: skip
    known = state.classes if state else []
    classes = [*known, *sorted(set(labelled["label"]) - set(known))]
    digest = _digest(labelled.to_dict("list"), asdict(spec), classes)
    number = len(state.rounds) + 1 if state else 1
    if state and state.rounds and state.rounds[-1]["digest"] == digest and (out / QUEUE).is_file():
        last = state.rounds[-1]
        model_dir = out / "model" if (out / "model").is_dir() else None
        return RoundResult(last["round"], out, classes, pd.DataFrame(last["counts"]), pd.read_csv(out / QUEUE),
                           unmatched, model_dir, 0.0, up_to_date=True)  # fmt: skip
    ts, _ = training_set(db, labelled, classes, spec.background, spec.seed)
    check_trainable(ts, classes)
    head = fit(ts, spec.classifier, spec.seed)
    seen = {classes.index(c): np.sort(g["window"].to_numpy(np.int64)) for c, g in labelled.groupby("label")}
    best = score_archive(db, head, classes, seen, spec, out / "scores.parquet")
    queue = propose(db, best, classes, spec)
    counts = (
        labelled.groupby("label")["target"].agg(yes="sum", windows="size").reindex(classes).reset_index()
        .assign(no=lambda d: d["windows"] - d["yes"])[["label", "yes", "no", "windows"]]
    )  # fmt: skip
    note = _write_round(out, number, head, classes, db.embedder, spec, where, queue, unmatched, table)
    seconds = time.perf_counter() - t0
    entry = {"round": number, "digest": digest, "verdicts": len(table), "matched_windows": len(labelled),
             "unmatched": len(unmatched), "counts": counts.to_dict("list"), "seconds": round(seconds, 3)}  # fmt: skip
    rounds = [*(state.rounds if state else []), entry]
    LearnState(where, embedder, paths, asdict(spec), classes, rounds).write(out)
    model_dir = None if note else out / "model"
    return RoundResult(number, out, classes, counts, queue, unmatched, model_dir, seconds, notes=[note] if note else [])


def _write_round(
    out: Path, number: int, head, classes: list[str], embedder: Embedder, spec: LearnSpec, where: str,
    queue: pd.DataFrame, unmatched: pd.DataFrame, verdicts: pd.DataFrame,
) -> str | None:  # fmt: skip
    """A round's files (scores.parquet is written while scoring; learn.json, last, by the caller): the model folder
    (swapped in whole), run.json, the queue, the unmatched verdicts, rounds/NNN/. Returns why no model was written."""
    with atomic_dir(out / "model.new") as tmp:
        note = save_model(head, classes, embedder, spec, tmp, {"learn": {"round": number, "db": where}})
    if note:
        _remove(out / "model.new")
    else:
        _replace(out / "model.new", out / "model")
    run = {"classes": classes, "model": None if note else str(out / "model"), "learn": True}
    write_text_atomic(out / "run.json", json.dumps(run))
    with atomic_path(out / QUEUE) as tmp:
        queue.to_csv(tmp, index=False)
    if len(unmatched):
        with atomic_path(out / UNMATCHED) as tmp:
            unmatched.to_csv(tmp, index=False)
    elif (out / UNMATCHED).exists():
        (out / UNMATCHED).unlink()
    with atomic_dir(out / "rounds" / f"{number:03d}", into_existing=True) as tmp:
        queue.to_csv(tmp / QUEUE, index=False)
        verdicts.to_csv(tmp / "verdicts.csv", index=False)
    return note


def _replace(new: Path, old: Path) -> None:
    """The round's model folder in place of the last one's."""
    import shutil

    if old.exists():
        gone = old.with_name(f"{old.name}.old")
        shutil.rmtree(gone, ignore_errors=True)
        old.rename(gone)
        new.rename(old)
        shutil.rmtree(gone, ignore_errors=True)
    else:
        new.rename(old)


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
