"""Soft labels of unlabelled recordings (`birdsed pseudo-label`): a model's scores per 5 s row, transformed as the
BirdCLEF winners did, in one Parquet table for training on recordings nobody labelled.

PL/ (the --out folder)
  run.json, parts/, scores.parquet, errors.csv   predict's own files: streamed, resumable, bad files reported
  pseudo_labels.parquet   file, start_s, end_s, then one float column per class in [0, 1]; its schema metadata
                          (key b"birdsed") holds the model's sha256, the classes, the output kind and the transform

The transform of a score p, in this order (SoftLabelOptions):
  temperature T   sigmoid(logit(p) / T): T < 1 sharpens, T > 1 softens
  power a         p ** a (BirdCLEF 2025's 1st place raised its soft labels to a power between rounds)
  floor f         below f: 0 (a weak score is more often noise than a distant bird)
  top_k k         only each row's k highest scores are kept
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from birdsed.config import OUTPUT_KINDS
from birdsed.data.dataset import fit_length
from birdsed.data.store import AudioStore
from birdsed.errors import ConfigError
from birdsed.fsutil import atomic_path

log = logging.getLogger(__name__)
TABLE = "pseudo_labels.parquet"
KEY_COLUMNS = ("file", "start_s", "end_s")
META_KEY = b"birdsed"


@dataclass
class SoftLabelOptions:
    output: str = "clipwise"  # which of the model's outputs gives the soft labels
    temperature: float = 1.0
    power: float = 1.0
    floor: float = 0.0
    top_k: int | None = None

    def check(self) -> None:
        if self.output not in OUTPUT_KINDS:
            raise ConfigError(f"pseudo-label output {self.output!r}: valid: {list(OUTPUT_KINDS)}")
        for name in ("temperature", "power"):
            if not 0 < getattr(self, name) < 100:
                raise ConfigError(f"pseudo-label {name} must be positive (and below 100), got {getattr(self, name)}")
        if not 0 <= self.floor < 1:
            raise ConfigError(f"pseudo-label floor must be in [0, 1), got {self.floor}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"pseudo-label top_k must be at least 1, got {self.top_k}")


def soft_labels(p: np.ndarray, opts: SoftLabelOptions) -> np.ndarray:
    """[shape=(n_rows, K)] scores in [0, 1] -> soft labels of the same shape (the module docstring's transform)."""
    q = np.clip(p.astype(np.float64), 0.0, 1.0)
    if opts.temperature != 1.0:
        eps = 1e-7
        logit = np.log(np.clip(q, eps, 1 - eps)) - np.log1p(-np.clip(q, eps, 1 - eps))
        q = 1.0 / (1.0 + np.exp(-logit / opts.temperature))
    if opts.power != 1.0:
        q = q**opts.power
    q[q < opts.floor] = 0.0
    if opts.top_k is not None and opts.top_k < q.shape[1]:
        drop = np.argsort(-q, axis=1, kind="stable")[:, opts.top_k :]
        np.put_along_axis(q, drop, 0.0, axis=1)
    return q.astype(np.float32)


def soft_label_table(scores: pd.DataFrame, classes: list[str], opts: SoftLabelOptions) -> pd.DataFrame:
    """predict's scores table (every output kind) -> the soft-label table of opts.output, rows in file and time
    order."""
    rows = (
        scores[scores["output"] == opts.output].sort_values(["file", "start_s"], kind="stable").reset_index(drop=True)
    )
    values = soft_labels(rows[classes].to_numpy(np.float32), opts)
    return pd.concat([rows[list(KEY_COLUMNS)], pd.DataFrame(values, columns=classes)], axis=1)


def write_soft_labels(table: pd.DataFrame, path: Path, meta: dict) -> Path:
    """The table as Parquet, `meta` (JSON) in its schema metadata; written atomically."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)
    return path


@dataclass
class SoftLabels:
    table: pd.DataFrame  # file, start_s, end_s, one column per class
    classes: list[str]
    meta: dict
    missing_files: list[str]  # files the table names that are not there (reported, left out)


def read_soft_labels(path: str | Path, classes: list[str] | None = None) -> SoftLabels:
    """A pseudo-label table (a PL folder or its pseudo_labels.parquet). With `classes` (the training classes), a table
    of other classes is refused naming the ones that differ. Rows of files that are not there are left out and
    listed."""
    path = Path(path)
    if path.is_dir():
        path = path / TABLE
    if not path.is_file():
        raise ConfigError(f"{path}: no pseudo-label table (write one with `birdsed pseudo-label`)")
    try:
        arrow = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
        raise ConfigError(f"{path}: not a readable pseudo-label table ({type(e).__name__})") from e
    try:
        meta = json.loads((arrow.schema.metadata or {}).get(META_KEY, b"{}"))
    except ValueError as e:
        raise ConfigError(f"{path}: its birdsed metadata is not JSON") from e
    table = arrow.to_pandas()
    lacking = [c for c in KEY_COLUMNS if c not in table.columns]
    if lacking:
        raise ConfigError(f"{path}: not a pseudo-label table: no column(s) {lacking}")
    own = [c for c in table.columns if c not in KEY_COLUMNS]
    if not own or not all(pd.api.types.is_float_dtype(table[c]) for c in own):
        raise ConfigError(f"{path}: every column after {list(KEY_COLUMNS)} must be a class of float soft labels")
    values = table[own].to_numpy()
    if not np.isfinite(values).all() or values.min(initial=0) < 0 or values.max(initial=0) > 1:
        raise ConfigError(f"{path}: soft labels must be numbers in [0, 1]")
    if classes is not None and own != list(classes):
        only_pl, only_train = sorted(set(own) - set(classes)), sorted(set(classes) - set(own))
        raise ConfigError(
            f"{path}: its classes differ from the training classes: only in the table {only_pl[:20]}, "
            f"only in training {only_train[:20]}" + ("" if only_pl or only_train else " (same names, other order)")
        )
    present = {f: Path(f).is_file() for f in table["file"].unique()}
    missing = sorted(f for f, ok in present.items() if not ok)
    for f in missing:
        log.warning("%s: pseudo-labelled file %s is not there; its rows are left out", path, f)
    if missing:
        table = table[table["file"].map(present)].reset_index(drop=True)
    return SoftLabels(table, own, meta, missing)


def pseudo_label(
    model_dir: str | Path, inputs: list[str], out: str | Path, opts: SoftLabelOptions = SoftLabelOptions(), **predict_kw
) -> tuple[Path, object]:
    """Score unlabelled recordings with any model directory (predict: streamed, resumable, bad files reported) and
    write out/pseudo_labels.parquet. Returns (its path, predict's summary)."""
    from birdsed.infer.predict import run_predict
    from birdsed.model.meta import model_digest, read_model_meta

    opts.check()
    out = Path(out)
    summary = run_predict(model_dir, inputs, out, **predict_kw)
    classes = read_model_meta(model_dir).classes
    table = soft_label_table(pd.read_parquet(out / "scores.parquet"), classes, opts)
    meta = {
        "model_sha256": model_digest(model_dir),
        "model": str(Path(model_dir).resolve()),
        "classes": classes,
        "transform": asdict(opts),
    }
    return write_soft_labels(table, out / TABLE, meta), summary


class PseudoPool:
    """Pseudo-labelled 5 s windows for training (train --pseudo): their audio in a prepared store, their soft labels
    (N, K) in the training classes' order. Picklable for loader workers (the store is reopened there)."""

    def __init__(self, store_root: Path, rows: list[tuple[str, float, float]], targets: np.ndarray):
        self.store_root, self.rows, self.targets = Path(store_root), rows, targets.astype(np.float32)
        self._store = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self):
        return {**self.__dict__, "_store": None}

    def window(self, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Window k as n samples (zero-padded at a recording's end) and its soft labels (K,)."""
        if self._store is None:
            self._store = AudioStore(self.store_root)
        rid, start, end = self.rows[k]
        x = self._store.read(rid, start, end - start)
        return fit_length(x, n, "pad"), self.targets[k]


def load_pool(
    paths: list[str], classes: list[str], dest: Path, workers: int | None = None, held_out: Iterable[str] = ()
) -> PseudoPool:
    """The windows of pseudo-label tables (each checked against the training classes), their recordings prepared
    once into the store `dest` (a re-run resumes; files that fail to decode are left out and listed in
    dest/report.csv). Windows of the `held_out` recordings (the validation set's paths) are left out: a student
    trained on them would be validated on audio it learnt from (train --teacher labels every recording of --data)."""
    from birdsed.data.manifest import Manifest, clean_id
    from birdsed.data.store import prepare

    tables = [read_soft_labels(p, classes).table for p in paths]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=[*KEY_COLUMNS, *classes])
    held = {os.path.realpath(p) for p in held_out}
    if held:
        real = {f: os.path.realpath(f) for f in table["file"].unique()}  # once per recording, not per window
        validation = table["file"].map(real).isin(held).to_numpy()
        if validation.any():
            log.info(
                "%d pseudo-labelled window(s) of %d validation recording(s) left out (the validation set stays unseen)",
                int(validation.sum()),
                table["file"][validation].nunique(),
            )
            table = table[~validation].reset_index(drop=True)
    files = sorted(table["file"].unique())
    manifest = Manifest(
        pd.DataFrame(
            {
                "recording_id": [clean_id(f) for f in files],
                "path": files,
                "primary_labels": [[] for _ in files],
                "secondary_labels": [[] for _ in files],
                "duration_s": np.nan,
                "rating": np.nan,
            }
        ),
        Path("/"),
        "pseudo",
    )
    prepare(manifest, dest, workers=workers, quiet=True)
    store = AudioStore(dest)
    ok = table["file"].map(clean_id).isin(set(store.index.index))
    if (~ok).any():
        log.warning(
            "%d pseudo-labelled window(s) of files that did not decode are left out (see %s)",
            int((~ok).sum()),
            dest / "report.csv",
        )
    table = table[ok].reset_index(drop=True)
    rows = [(clean_id(f), float(s), float(e)) for f, s, e in zip(table["file"], table["start_s"], table["end_s"])]
    return PseudoPool(dest, rows, table[classes].to_numpy(np.float32))


def teacher_labels(
    teacher: str | Path,
    data: str | Path,
    out: str | Path,
    extra: list[str] | None = None,
    opts: SoftLabelOptions = SoftLabelOptions(),
    allow_outside: bool = False,
    **predict_kw,
) -> Path:
    """Distillation (train --teacher): a teacher's soft labels of every recording of the training data set (a data-set
    folder or a prepared store), and of `extra` unlabelled recordings, as a pseudo-label table in `out`; training on
    it (data.pseudo) teaches a small student the teacher's outputs beside the labels. allow_outside: the data set's
    table may name files outside its folder (data.allow_outside_paths, as training reads it)."""
    from birdsed.data.manifest import read_dataset
    from birdsed.data.store import is_store

    manifest = AudioStore(data).manifest() if is_store(data) else read_dataset(data, allow_outside=allow_outside)
    if not len(manifest.table):
        raise ConfigError(f"{data}: no training recording to take the teacher's soft labels of")
    return pseudo_label(teacher, [*manifest.table["path"], *(extra or [])], out, opts, **predict_kw)[0]
