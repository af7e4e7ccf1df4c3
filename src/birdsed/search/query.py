"""`birdsed search`: the windows of an embedding DB nearest to example clips, as a table and as a queue for the
review page.

An example is a clip (`CLIP[:START-END]`: a recording, or a stretch of it, embedded with the DB's model over the
DB's windows) or a window already in the DB (`FILE:START`: its stored vector). Several examples combine into one
query: q = unit(mean of the positives' unit vectors - NEGATIVE_WEIGHT * mean of the negatives' unit vectors), the
Rocchio rule of relevance feedback: windows like every positive rank first, and those like a negative drop. A clip
gives the mean of its windows' unit vectors (those inside START-END; a stretch shorter than a window, the window
that covers most of it).

The results folder (`--out`) is a predict folder for `birdsed review`: run.json (the model, one class: the label),
scores.parquet (one row per window found, the cosine similarity, clipped to 0-1, as its score), and results.csv.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.audio.decode import audio_info
from birdsed.errors import AudioDecodeError, ConfigError
from birdsed.fsutil import atomic_path, write_text_atomic
from birdsed.search.db import DBError, EmbeddingDB

NEGATIVE_WEIGHT = 0.5  # Rocchio's usual gamma/beta: a negative pushes half as hard as a positive pulls
MAX_K = 100_000  # results one search returns at most
RESULT_COLUMNS = ("rank", "id", "file", "start_s", "end_s", "similarity")
DEFAULT_LABEL = "query"


@dataclass(frozen=True)
class Example:
    """One example: a clip (path, optional start and end s) or, with `window`, a window of the DB (path, start_s)."""

    path: str
    start_s: float | None = None
    end_s: float | None = None
    window: bool = False

    def __str__(self) -> str:
        if self.window:
            return f"{self.path}:{self.start_s:g}"
        return self.path if self.start_s is None else f"{self.path}:{self.start_s:g}-{self.end_s:g}"


_RANGE = re.compile(r"(.+):([0-9]*\.?[0-9]+)-([0-9]*\.?[0-9]+)")
_START = re.compile(r"(.+):([0-9]*\.?[0-9]+)")


def parse_clip(text: str) -> Example:
    """'CLIP' or 'CLIP:START-END' (seconds) -> Example; a ConfigError for an empty or reversed stretch."""
    m = _RANGE.fullmatch(text)
    if not m:
        return Example(text)
    start, end = float(m[2]), float(m[3])
    if not end > start:
        raise ConfigError(f"--query {text!r}: the stretch {start:g}-{end:g} s is empty (END must be after START)")
    return Example(m[1], start, end)


def parse_window(text: str) -> Example:
    """'FILE:START' (a window of the DB) -> Example."""
    m = _START.fullmatch(text)
    if not m:
        raise ConfigError(f"--query-window {text!r}: expected FILE:START (seconds), e.g. rec.wav:12.5")
    return Example(m[1], float(m[2]), window=True)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero)."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def combine(positives: list[np.ndarray], negatives: list[np.ndarray]) -> np.ndarray:
    """One query vector [shape=(D,)] from the examples' vectors (module docstring)."""
    if not positives:
        raise ConfigError("give at least one positive example (--query or --query-window)")
    q = unit(np.stack(positives)).mean(axis=0)
    if negatives:
        q = q - NEGATIVE_WEIGHT * unit(np.stack(negatives)).mean(axis=0)
    return unit(q)[0]


def covering(start_s: np.ndarray, window_s: float, lo: float, hi: float) -> np.ndarray:
    """Indices of the windows (their starts) inside [lo, hi]; when none is, the one overlapping it most."""
    inside = np.flatnonzero((start_s >= lo - 1e-6) & (start_s + window_s <= hi + 1e-6))
    if len(inside):
        return inside
    overlap = np.minimum(start_s + window_s, hi) - np.maximum(start_s, lo)
    return np.array([int(np.argmax(overlap))])


class Embedder:
    """Clips embedded as the DB's windows were: the DB's model (or `model_dir`, refused unless it gives the DB's
    embedding space), its window and hop."""

    def __init__(self, db: EmbeddingDB, model_dir: str | Path | None = None, device: str = "auto"):
        from birdsed.model.modeldir import load_model_dir
        from birdsed.search.embed import db_info

        model_dir = Path(model_dir or db.info.model)
        if not (model_dir / "model.json").is_file():
            raise DBError(
                f"{db.path} was embedded with the model {model_dir}, which is gone: give that model (--model) to "
                "embed a query clip, or query by a window of the DB (--query-window)"
            )
        model, _, meta = load_model_dir(model_dir)
        info = db_info(model_dir, model, meta, db.info.window_s, db.info.hop_s)
        differ = db.info.same_space(info)
        if differ:
            said = "; ".join(
                f"{k}: {getattr(db.info, k)!r} in the DB, {getattr(info, k)!r} of {model_dir}" for k in differ
            )
            raise ConfigError(f"{db.path} holds embeddings of another model ({db.info.model}): {said}")
        self.db, self.model, self.device = db, model, device
        self.done: dict[str, object] = {}  # path -> FileEmbeddings of the clips embedded

    def embed_clips(self, examples: list[Example]) -> None:
        """Embed the recordings of `examples` in one pass (the model prepared once), kept for clip_vector."""
        from birdsed.search.embed import FileEmbeddings, embed_files

        info = self.db.info
        paths = sorted({ex.path for ex in examples if not ex.window} - set(self.done))
        for res in embed_files(self.model, paths, info.window_s, info.hop_s, device=self.device, quiet=True, workers=0):
            if not isinstance(res, FileEmbeddings):
                raise AudioDecodeError(f"query clip: {res[1]}")
            self.done[res.path] = res

    def clip_vector(self, ex: Example) -> np.ndarray:
        """The clip's vector [shape=(D,)]: the mean of its windows' unit vectors (module docstring)."""
        if ex.path not in self.done:
            self.embed_clips([ex])
        res = self.done[ex.path]
        lo = 0.0 if ex.start_s is None else ex.start_s
        hi = res.duration_s if ex.end_s is None else ex.end_s
        if lo >= res.duration_s:
            raise ConfigError(f"query clip {ex}: starts after the recording's end ({res.duration_s:.2f} s)")
        return unit(res.embeddings[covering(res.start_s, self.db.info.window_s, lo, hi)]).mean(axis=0)


def example_vectors(db: EmbeddingDB, examples: list[Example], embedder: Embedder | None) -> list[np.ndarray]:
    """Each example's vector: a window's from the DB, a clip's embedded."""
    out = []
    for ex in examples:
        if ex.window:
            out.append(db.vectors([db.window_id(ex.path, ex.start_s)])[0])
        else:
            out.append(embedder.clip_vector(ex))
    return out


def search(
    db: EmbeddingDB,
    positives: list[Example],
    negatives: list[Example] = (),
    k: int = 100,
    model_dir: str | Path | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """The k windows nearest the combined query, best first: RESULT_COLUMNS."""
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"k = {k}: must be 1 to {MAX_K}")
    examples = [*positives, *negatives]
    clips = [e for e in examples if not e.window]
    for e in clips:  # a clip that does not decode is refused before the model is loaded
        try:
            audio_info(e.path)
        except AudioDecodeError as err:
            raise AudioDecodeError(f"query clip: {err}") from err
    embedder = Embedder(db, model_dir, device) if clips else None
    if embedder:
        embedder.embed_clips(clips)
    q = combine(example_vectors(db, positives, embedder), example_vectors(db, list(negatives), embedder))
    ids, sims = db.nearest(q[None, :], k)
    ids, sims = ids[0], sims[0]
    windows = db.windows_of(ids)
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(ids) + 1),
            "id": ids,
            "file": windows["file"].to_numpy(),
            "start_s": windows["start_s"].to_numpy(),
            "end_s": windows["end_s"].to_numpy(),
            "similarity": sims,
        }
    )


def write_results(results: pd.DataFrame, out: Path, db: EmbeddingDB, label: str = DEFAULT_LABEL) -> None:
    """results.csv, and scores.parquet + run.json: a folder `birdsed review OUT` opens (module docstring)."""
    from birdsed.config import DEFAULT_OUTPUT

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    scores = pd.DataFrame(
        {
            "file": results["file"].astype(str),
            "start_s": results["start_s"].astype(float),
            "end_s": results["end_s"].astype(float),
            "output": DEFAULT_OUTPUT,
            label: results["similarity"].clip(0.0, 1.0).astype(np.float32),
        }
    )
    with atomic_path(out / "scores.parquet") as tmp:
        scores.to_parquet(tmp, index=False)
    run = {"model": db.info.model, "classes": [label], "search": {"db": str(db.path.resolve()), "n": len(results)}}
    write_text_atomic(out / "run.json", json.dumps(run, indent=2))
