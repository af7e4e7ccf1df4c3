"""`predict`: run a model directory over files, folders or a Kaggle test.csv and write every output.

OUT/
  run.json             model and window settings; a re-run must match them
  parts/<key>.parquet  one per finished recording (what makes a re-run resume)
  scores.parquet       all rows, all three outputs
  detections.csv       file,start_s,end_s,label,score (what passes the decision)
  submission.csv       with --test-csv: row_id,birds for every row, in order; with --sample-submission (BirdCLEF
                       2023-2025): row_id, then the scores of each class in the sample's column order
  raven/<name>.Table.1.selections.txt, audacity/<name>.txt   on request
  errors.csv           recordings that failed to decode, with the reason
"""

from __future__ import annotations

import json
import logging
from collections import Counter
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.audio import find_audio_files
from birdsed.config import OUTPUT_KINDS
from birdsed.decide import Thresholds, decide, labels_of, smooth_rows
from birdsed.errors import BirdsedError, ConfigError
from birdsed.fsutil import remove_stale_temps, run_lock, write_text_atomic
from birdsed.infer import FileResult, predict_files, rows_table
from birdsed.kaggle.birdclef import probability_submission, sample_columns
from birdsed.kaggle.cornell import read_kaggle_test, submission
from birdsed.modeldir import kind_of, load_model_dir, model_digest
from birdsed.store import recording_key
from birdsed.writers import detections, merge_runs, raven_table, write_audacity, write_table

log = logging.getLogger(__name__)
FORMATS = ("csv", "kaggle", "raven", "audacity")


@dataclass
class DecisionOptions:
    output: str | None = None  # None: the model's default output kind
    threshold: float | None = None  # overrides the model's thresholds for `output`
    max_birds: int | None = None
    neighbour_smoothing: str | None = None  # "sum" or "max"


@dataclass
class PredictSummary:
    n_files: int
    n_done_before: int
    audio_s: float
    wall_s: float
    errors: list[tuple[str, str]] = field(default_factory=list)
    out: Path | None = None

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("inf")


def resolve_inputs(inputs: list[str], test: pd.DataFrame | None) -> tuple[list[str], list[tuple[str, str]]]:
    """Audio files to run, and (name, reason) for inputs that can't be run at all."""
    missing: list[tuple[str, str]] = []
    if test is not None:
        files = sorted({p for p in test["path"] if p})
        outside = set(test.attrs.get("outside", []))
        missing = [(a, "resolves outside the test audio folder: refused, never opened" if a in outside else
                    "no audio file for this audio_id") for a in sorted(set(test.loc[test["path"] == "", "audio_id"]))]
        return files, missing
    files = []
    for p in find_audio_files(inputs):
        if p.exists():
            files.append(str(p))
        else:
            missing.append((str(p), "file not found"))
    return files, missing


def decide_scores(scores: pd.DataFrame, classes: list[str], thresholds: Thresholds,
                  opts: DecisionOptions, default_output: str) -> tuple[pd.DataFrame, np.ndarray, str, np.ndarray]:
    """(rows of the chosen output, boolean presence per row and class, output kind, thresholds [shape=(K,)])."""
    kind = opts.output or default_output
    if kind not in OUTPUT_KINDS:
        raise ConfigError(f"unknown output {kind!r}; valid: {list(OUTPUT_KINDS)}")
    rows = scores[scores["output"] == kind].reset_index(drop=True)
    values = rows[classes].to_numpy(np.float32, copy=True)  # smoothed in place below
    if opts.neighbour_smoothing:
        for idx in rows.groupby("file", sort=False).indices.values():
            values[idx] = smooth_rows(values[idx], opts.neighbour_smoothing)
    thr = thresholds.vector(kind, classes) if opts.threshold is None else np.full(len(classes), opts.threshold, np.float32)
    present = decide(values, thr, opts.max_birds)
    rows = rows.copy()
    rows[classes] = values
    return rows, present, kind, thr


def _check_run(out: Path, model_dir: Path, window_s: float, hop_s: float, classes: list[str], pooling: str,
               short_policy: str | None) -> None:
    stamp = {"model": str(model_dir.resolve()), "model_sha256": model_digest(model_dir),
             "window_s": window_s, "hop_s": hop_s, "pooling": pooling, "classes": classes}
    if short_policy:  # only when overridden, so that the stamps of earlier runs still match
        stamp["short_policy"] = short_policy
    path = out / "run.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not readable ({e}); this --out was tampered with: use a new --out") from e
        if old != stamp:
            changed = sorted(k for k in set(old) | set(stamp) if old.get(k) != stamp.get(k))
            raise ConfigError(f"{out} holds results of another model or window setting ({path}: {', '.join(changed)} "
                              "differ; the model's files changed, or another model or setting was given); use a new --out")
    else:
        write_text_atomic(path, json.dumps(stamp, indent=2))


def read_part(path: Path, recording: str) -> pd.DataFrame:
    """One finished recording's rows; a part that is not what predict wrote is a clear error naming it."""
    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise BirdsedError(f"{path}: the scores of {recording} are unreadable ({type(e).__name__}); delete that file and "
                           "run the same command again to predict it afresh") from e


def run_predict(model_dir: str | Path, inputs: list[str], out: str | Path, test_csv: str | Path | None = None,
                audio_dir: str | Path | None = None, formats: tuple[str, ...] = ("csv",), window_s: float | None = None,
                hop_s: float | None = None, batch_size: int = 64, workers: int | None = None, device: str = "auto",
                decision: DecisionOptions = DecisionOptions(), quiet: bool = False, pooling: str = "window",
                backend: str = "torch", precision: str = "auto", short_policy: str | None = None,
                sample_submission: str | Path | None = None) -> PredictSummary:
    """short_policy: how recordings shorter than a window are fitted to it, "loop" or "pad", for every model
    (default: each model, or each member of an ensemble, as it saw them in training).
    window_s, hop_s: default the model's own (5 s / 2.5 s for the SED models, 3 s windows for BirdNET).
    sample_submission: a BirdCLEF 2023-2025 sample_submission.csv: submission.csv takes its layout (kaggle.birdclef)."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ConfigError(f"unknown format(s) {sorted(unknown)}; valid: {list(FORMATS)}")
    if (window_s is not None and window_s <= 0) or (hop_s is not None and hop_s <= 0):
        raise ConfigError("--window-s and --hop-s must be positive")
    model_dir, out = Path(model_dir), Path(out)
    model, thresholds, meta = load_model_dir(model_dir)
    window_s = model.window_s if window_s is None else window_s
    hop_s = model.hop_s if hop_s is None else hop_s
    if backend == "onnx":
        from birdsed.export import OnnxSED

        if kind_of(meta) != "sed":
            raise ConfigError(f"{model_dir} is a {kind_of(meta)} model; the onnx backend runs single SED models "
                              "(use --backend torch)")
        model = OnnxSED(model_dir)
        device = "cpu"
    elif backend != "torch":
        raise ConfigError(f"unknown backend {backend!r}; valid: torch, onnx")
    classes = model.classes
    if sample_submission and test_csv:
        raise ConfigError("--test-csv (row_id,birds) and --sample-submission (probabilities) write different "
                          "submissions: give one")
    columns = sample_columns(sample_submission) if sample_submission else None
    test = read_kaggle_test(test_csv, audio_dir) if test_csv else None
    files, errors = resolve_inputs(inputs, test)
    if not files and not errors:
        raise BirdsedError("no audio files to predict (give files, folders or --test-csv)")
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):  # a second run into the same --out is refused while this one holds it
        _check_run(out, model_dir, window_s, hop_s, classes, pooling, short_policy)
        parts = out / "parts"
        for folder in (out, parts):  # what a killed run left half-written
            remove_stale_temps(folder)
        part_of = {f: parts / f"{recording_key(f)}.parquet" for f in files}
        todo = [f for f in files if not part_of[f].is_file()]
        t0 = time.perf_counter()
        audio_s = 0.0
        for res in predict_files(model, todo, window_s, hop_s, batch_size, workers, device, quiet, pooling, precision,
                                 short_policy) if todo else []:
            if isinstance(res, FileResult):
                write_table(rows_table(res, classes), part_of[res.path])
                audio_s += res.duration_s
            else:
                errors.append(res)
        wall_s = time.perf_counter() - t0
        write_table(pd.DataFrame(errors, columns=["file", "reason"]), out / "errors.csv")
        done = [f for f in files if part_of[f].is_file()]
        scores = pd.concat([read_part(part_of[f], f) for f in done], ignore_index=True) if done else \
            pd.DataFrame(columns=["file", "start_s", "end_s", "output", *classes])
        write_table(scores, out / "scores.parquet")
        write_outputs(scores, classes, thresholds, decision, meta.get("default_output", "segmentwise"), out, formats, test,
                      columns)
        return PredictSummary(len(files), len(files) - len(todo), audio_s, wall_s, errors, out)


def write_outputs(scores: pd.DataFrame, classes: list[str], thresholds: Thresholds, decision: DecisionOptions,
                  default_output: str, out: Path, formats: tuple[str, ...], test: pd.DataFrame | None,
                  sample_columns: list[str] | None = None) -> None:
    rows, present, _, thr = decide_scores(scores, classes, thresholds, decision, default_output)
    det = detections(rows, present, classes)
    write_table(det, out / "detections.csv")
    if sample_columns is not None:
        sub, unknown = probability_submission(rows, classes, sample_columns)
        if unknown:
            log.warning("%d class(es) of the sample submission the model does not know score 0, e.g. %s", len(unknown),
                        unknown[:5])
        write_table(sub, out / "submission.csv")
    if test is not None:
        birds = labels_of(present, classes)
        row_birds = {(f, float(s)): b for f, s, b in zip(rows["file"], rows["start_s"], birds)}
        values = rows[classes].to_numpy()
        file_birds = {f: labels_of(decide(values[idx].max(axis=0, keepdims=True), thr, decision.max_birds), classes)[0]
                      for f, idx in rows.groupby("file", sort=False).indices.items()}
        write_table(submission(test, row_birds, file_birds), out / "submission.csv")
    if not {"raven", "audacity"} & set(formats):
        return
    events = merge_runs(det)
    by_file = dict(tuple(events.groupby("file", sort=False))) if len(events) else {}
    files = list(scores["file"].unique())
    stem_counts = Counter(Path(f).stem for f in files)
    # label files are named by the recording's stem; recordings sharing a stem get a unique key instead
    names = {f: Path(f).stem if stem_counts[Path(f).stem] == 1 else recording_key(f) for f in files}
    for fmt, folder in (("raven", "raven"), ("audacity", "audacity")):
        if fmt not in formats:
            continue
        for f in files:
            ev = by_file.get(f, events.iloc[:0])
            stem = names[f]
            if fmt == "raven":
                write_table(raven_table(ev), out / folder / f"{stem}.Table.1.selections.txt", sep="\t")
            else:
                write_audacity(ev, out / folder / f"{stem}.txt")
