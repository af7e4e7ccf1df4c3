"""What to review next: clips (a recording's 5 s row and one species, with its score) from a predict folder's
scores.parquet, filtered by species, recording, folder and score band, and sampled `top` (highest scores first),
`stratified` (equal counts per score band: the sample calibrate wants), `random` (seeded), or `queue`: the clips of
PRED/queue.csv in its order (a list another step proposed: `birdsed learn`'s next clips); progress per species.

The selection functions are pure: a clip table in, a clip table out.

    preds = Predictions.open(pred)                     # run.json's classes, one output kind's scores
    clips = preds.clips("woothr")                      # file, start_s, end_s, label, score
    queue = select(clips, QueueSpec(sample="stratified", n=50), done=store.keys())
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from birdsed.config import DEFAULT_OUTPUT, OUTPUT_KINDS
from birdsed.errors import BirdsedError, ReviewError
from birdsed.rows import SCORE_META_COLUMNS

SAMPLINGS = ("top", "stratified", "random", "queue")
QUEUE_FILE = "queue.csv"  # PRED/queue.csv: CLIP_COLUMNS, in the order they are to be reviewed
BAND_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # score bands: stratified draws equally from each
CLIP_COLUMNS = ("file", "start_s", "end_s", "label", "score")


@dataclass(frozen=True)
class QueueSpec:
    """Which clips, and how many in what order."""

    species: str | None = None
    recording: str | None = None  # a file as scores.parquet names it
    folder: str | None = None  # clips of recordings under this folder
    band: tuple[float, float] = (0.0, 1.0)  # lo <= score <= hi
    sample: str = "top"
    n: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sample not in SAMPLINGS:
            raise ReviewError(f"sampling {self.sample!r}: valid: {list(SAMPLINGS)}")
        lo, hi = self.band
        if not (0.0 <= lo <= hi <= 1.0):
            raise ReviewError(f"score band {lo}..{hi}: must be 0 <= lo <= hi <= 1")


def band_of(scores: np.ndarray, edges: tuple[float, ...] = BAND_EDGES) -> np.ndarray:
    """Index of each score's band [edges[i], edges[i + 1]) (the last band includes 1.0). [shape=(n,)]"""
    return np.clip(np.searchsorted(np.asarray(edges), scores, side="right") - 1, 0, len(edges) - 2)


def select(clips: pd.DataFrame, spec: QueueSpec, done: set | frozenset = frozenset()) -> pd.DataFrame:
    """The queue: `clips` (CLIP_COLUMNS) filtered by `spec`, without those in `done` ((file, start_s, label)), sampled
    and ordered as spec.sample says, at most spec.n."""
    keep = (clips["score"] >= spec.band[0]) & (clips["score"] <= spec.band[1])
    if spec.species is not None:
        keep &= clips["label"] == spec.species
    if spec.recording is not None:
        keep &= clips["file"] == spec.recording
    if spec.folder is not None:
        prefix = spec.folder.rstrip("/") + "/"
        keep &= clips["file"].str.startswith(prefix)
    if done:
        keys = list(zip(clips["file"], clips["start_s"].astype(float), clips["label"]))
        keep &= ~np.array([k in done for k in keys], dtype=bool)
    pool = clips[keep.to_numpy()]
    rng = np.random.default_rng(spec.seed)
    if spec.sample == "top":
        out = pool.sort_values(["score", "file", "start_s"], ascending=[False, True, True], kind="stable")
    elif spec.sample == "random":
        out = pool.iloc[rng.permutation(len(pool))]
    elif spec.sample == "queue":
        out = pool
    else:
        out = pool.iloc[_stratified_order(pool["score"].to_numpy(), rng)]
    return out.head(spec.n).reset_index(drop=True)


def _stratified_order(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions in round-robin over score bands (random within each band), so that any prefix holds about equal
    counts per band (bands that run out leave their turns to the others)."""
    bands = band_of(scores)
    per_band = [rng.permutation(np.flatnonzero(bands == b)) for b in range(len(BAND_EDGES) - 1)]
    per_band = [b for b in per_band if len(b)]
    order = []
    for i in range(max((len(b) for b in per_band), default=0)):
        order.extend(int(b[i]) for b in per_band if i < len(b))
    return np.array(order, dtype=np.int64)


def progress(verdicts: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per species with verdicts: verified (yes + no + unsure), yes, no, unsure and the share of yes among yes + no."""
    rows = []
    for label, g in verdicts.groupby("label", sort=False):
        n = g["verdict"].value_counts()
        yes, no, unsure = (int(n.get(v, 0)) for v in ("yes", "no", "unsure"))
        rows.append((label, yes + no + unsure, yes, no, unsure, yes / (yes + no) if yes + no else float("nan")))
    order = {c: i for i, c in enumerate(classes)}
    out = pd.DataFrame(rows, columns=["label", "verified", "yes", "no", "unsure", "yes_share"])
    return out.sort_values("label", key=lambda s: s.map(lambda c: order.get(c, len(order)))).reset_index(drop=True)


@dataclass
class Predictions:
    """A predict folder's scores of one output kind, as a (rows, classes) matrix beside the rows' file and times."""

    pred: Path
    classes: list[str]
    output: str
    model_dir: Path | None
    rows: pd.DataFrame  # file, start_s, end_s
    scores: np.ndarray  # [shape=(len(rows), len(classes))]

    @classmethod
    def open(cls, pred: str | Path, output: str | None = None) -> Predictions:
        """Read PRED's run.json and scores.parquet (one output kind: `output`, else the model's default output, else
        the first in the file); a ReviewError naming what is missing."""
        pred = Path(pred)
        run_path, scores_path = pred / "run.json", pred / "scores.parquet"
        if not scores_path.is_file():
            raise ReviewError(
                f"{pred}: no scores.parquet: not a finished predict folder (run `birdsed predict` "
                "or `birdsed merge` first)"
            )
        try:
            run = json.loads(run_path.read_text())
            classes = [str(c) for c in run["classes"]]
            model_dir = Path(run["model"]) if run.get("model") else None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ReviewError(f"{run_path}: not a predict folder's run.json ({e})") from e
        rows, scores, output = _read_scores(scores_path, classes, output, model_dir)
        return cls(pred, classes, output, model_dir, rows, scores)

    @cached_property
    def files(self) -> set[str]:
        return set(self.rows["file"].unique())

    def find_file(self, name: str) -> str | None:
        """The predicted recording `name` means: the path as predict saw it, else the one recording whose resolved
        path, file name or stem it is (as annotations are matched: truth.grid.match_names); None when none is; a
        ReviewError naming them when several are."""
        from birdsed.truth.grid import match_names

        if name in self.files:
            return name
        several: dict[str, list[str]] = {}
        found = match_names([name], sorted(self.files), several).get(name)
        if several:
            raise ReviewError(f"recording {name!r} matches several of the predictions' recordings: {several[name][:3]}")
        return found

    @property
    def ends_s(self) -> dict[str, float]:
        """Each recording's length: its last row's end (rows.py: the last row runs to the recording's end)."""
        ends = self.rows.groupby("file", observed=True)["end_s"].max()
        return {str(f): float(e) for f, e in ends.items()}

    def clips(self, species: str | None = None) -> pd.DataFrame:
        """Every (row, class) of one species (or all) as CLIP_COLUMNS."""
        which = range(len(self.classes)) if species is None else [self.class_index(species)]
        parts = [self.rows.assign(label=self.classes[k], score=self.scores[:, k].astype(np.float64)) for k in which]
        return pd.concat(parts, ignore_index=True)[list(CLIP_COLUMNS)]

    def candidates(self, spec: QueueSpec, done: set | frozenset = frozenset()) -> pd.DataFrame:
        """The clips `select(..., spec, done)` can choose from, bounded without building every (row, class) clip: per
        class in scope, the rows that pass the filters, then at most n + (its clips in `done`) per class (per score
        band for `stratified`): the highest for `top`, a seeded random draw otherwise. `stratified` over every species
        draws from the species that score BAND_EDGES[1] (0.1) or more in some row in scope: a species the model never
        scores above it (most of BirdNET's 6,522 labels at one site) has no detection to calibrate, and its clips of
        score 0 filled the lowest band."""
        if spec.sample == "queue":
            return self.queued()
        rows = np.ones(len(self.rows), dtype=bool)
        if spec.recording is not None:
            rows &= (self.rows["file"] == spec.recording).to_numpy()
        if spec.folder is not None:
            rows &= self.rows["file"].str.startswith(spec.folder.rstrip("/") + "/").to_numpy()
        which = range(len(self.classes)) if spec.species is None else [self.class_index(spec.species)]
        done_per_class = pd.Series([k[2] for k in done], dtype=object).value_counts().to_dict() if done else {}
        rng = np.random.default_rng(spec.seed)
        parts = []
        every_species = spec.sample == "stratified" and spec.species is None
        for k in which:
            s = self.scores[:, k]
            if every_species and not (rows & (s >= BAND_EDGES[1])).any():
                continue
            pos = np.flatnonzero(rows & (s >= spec.band[0]) & (s <= spec.band[1]))
            cap = spec.n + int(done_per_class.get(self.classes[k], 0))
            if spec.sample == "top" and len(pos) > cap:
                pos = pos[np.argpartition(-s[pos], cap - 1)[:cap]]
            elif spec.sample == "random" and len(pos) > cap:
                pos = rng.choice(pos, cap, replace=False)
            elif spec.sample == "stratified":
                bands = band_of(s[pos])
                pos = np.concatenate(
                    [rng.permutation(pos[bands == b])[:cap] for b in range(len(BAND_EDGES) - 1)] + [pos[:0]]
                )
            parts.append(self.rows.iloc[np.sort(pos)].assign(label=self.classes[k], score=s[np.sort(pos)]))
        if not parts:
            return pd.DataFrame(columns=list(CLIP_COLUMNS))
        out = pd.concat(parts, ignore_index=True)
        out["score"] = out["score"].astype(np.float64)
        return out[list(CLIP_COLUMNS)]

    @property
    def has_queue(self) -> bool:
        return (self.pred / QUEUE_FILE).is_file()

    def queued(self) -> pd.DataFrame:
        """PRED/queue.csv (CLIP_COLUMNS, in order): the clips of its files and classes; a ReviewError when absent."""
        path = self.pred / QUEUE_FILE
        if not path.is_file():
            raise ReviewError(f"{self.pred}: no {QUEUE_FILE} (`birdsed learn` writes one): choose another sampling")
        try:
            table = pd.read_csv(path, dtype={"file": str, "label": str}, keep_default_na=False)
            table = table[list(CLIP_COLUMNS)].astype({"start_s": float, "end_s": float, "score": float})
        except (OSError, ValueError, KeyError, pd.errors.ParserError) as e:
            raise ReviewError(f"{path}: not a queue of {list(CLIP_COLUMNS)} ({e})") from e
        known = table["file"].isin(self.files) & table["label"].isin(self.classes)
        return table[known.to_numpy()].reset_index(drop=True)

    def class_index(self, species: str) -> int:
        try:
            return self.classes.index(species)
        except ValueError:
            raise ReviewError(f"{species!r}: not a class of {self.pred}'s model") from None

    def clip_at(self, file: str, start_s: float, label: str) -> dict | None:
        """The clip (CLIP_COLUMNS) of `file`'s row starting at start_s for class `label`, or None if PRED has none."""
        if label not in self.classes:
            return None
        hit = np.flatnonzero((self.rows["file"].to_numpy() == file) & np.isclose(self.rows["start_s"], start_s))
        if not len(hit):
            return None
        row = self.rows.iloc[hit[0]]
        score = float(self.scores[hit[0], self.class_index(label)])
        return {
            "file": file,
            "start_s": float(row["start_s"]),
            "end_s": float(row["end_s"]),
            "label": label,
            "score": score,
        }

    def score_of(self, file: str, start_s: float, label: str) -> float | None:
        """The score of one clip, or None if PRED has no such row or class."""
        if label not in self.classes:
            return None
        hit = np.flatnonzero((self.rows["file"].to_numpy() == file) & np.isclose(self.rows["start_s"], start_s))
        return float(self.scores[hit[0], self.class_index(label)]) if len(hit) else None


def _read_scores(
    path: Path, classes: list[str], output: str | None, model_dir: Path | None
) -> tuple[pd.DataFrame, np.ndarray, str]:
    """The rows (file as a category, start_s, end_s) and the scores [shape=(rows, classes), each class's column
    contiguous] of one output kind (`output`, else the model's default, else the first present), read batch by batch:
    only that kind's rows and the classes' columns are ever held (never the whole table)."""
    try:
        pf = pq.ParquetFile(path, read_dictionary=["file", "output"])
        names = set(pf.schema_arrow.names)  # (schema_arrow is built anew at each use: once, not once per class)
        missing = [c for c in [*SCORE_META_COLUMNS, *classes] if c not in names]
        if missing:
            raise ReviewError(f"{path}: not a scores table of run.json's classes: no column(s) {missing[:5]}")
        kinds = pf.read(columns=["output"])["output"]
        counts = {str(r["values"]): int(r["counts"]) for r in pc.value_counts(kinds).to_pylist()}
        present = [k for k in OUTPUT_KINDS if k in counts]
        if output is None:
            output = _default_output(model_dir) if model_dir else DEFAULT_OUTPUT
            output = output if output in present else (present[0] if present else output)
        if output not in present:
            raise ReviewError(f"{path}: no rows of output {output!r}; it holds {present}")
        by_class = np.empty((len(classes), counts[output]), dtype=np.float32)  # (K, N): a class's scores contiguous
        meta: dict[str, list] = {c: [] for c in ("file", "start_s", "end_s")}
        at = 0
        for g in range(pf.num_row_groups):  # one row group at a time: memory of one (predict writes them bounded)
            batch = pf.read_row_group(g, columns=[*SCORE_META_COLUMNS, *classes])
            batch = batch.filter(pc.equal(batch.column("output"), output))
            n = batch.num_rows
            for k, c in enumerate(classes):
                by_class[k, at : at + n] = batch.column(c).to_numpy(zero_copy_only=False)
            for c, chunks in meta.items():
                chunks.append(batch.column(c))
            at += n
    except (OSError, pa.ArrowException) as e:
        raise ReviewError(f"{path}: not a readable scores table with run.json's classes ({e})") from e
    rows = pd.DataFrame({c: pa.chunked_array(chunks).to_pandas() for c, chunks in meta.items()})
    rows["file"] = rows["file"].astype("category")
    return rows, by_class.T, output


def _default_output(model_dir: Path) -> str:
    from birdsed.model.meta import read_model_meta

    try:
        return read_model_meta(model_dir).default_output
    except BirdsedError:
        return DEFAULT_OUTPUT
