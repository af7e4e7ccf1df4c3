"""`predict`: run a model directory over files, folders or a Kaggle test.csv and write every output.

OUT/
  run.json             model and window settings; a re-run must match them
  parts/<key>.<size>-<mtime_ns>.parquet  one per finished recording (what makes a re-run resume; a recording whose
                       size or mtime changed since is scored again: parts.py)
  scores.parquet       all rows, all three outputs (row groups of whole recordings, parts.ROW_GROUP_ROWS rows)
  detections.csv       file,start_s,end_s,label,score (what passes the decision), then the label's code, common and
                       scientific names and the row's site, lat, lon and date-time (ISO 8601 with the offset)
  recordings.csv       each recording's site, lat, lon, time zone, start (places.py: --sites, --site, the name's
                       time) and length
  submission.csv       with --test-csv: row_id,birds for every row, in order; with --sample-submission (BirdCLEF
                       2023-2025): row_id, then the scores of each class in the sample's column order
  raven/<name>.Table.1.selections.txt, audacity/<name>.txt   on request
  errors.csv           recordings that failed to decode, with the reason
  shards/I-of-N.json   with --shard I/N: what shard I did (shard.py); the combined files above wait for every shard

The combined files are built by streaming over the parts (outputs.py), in memory bounded by one recording.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from birdsed.audio.decode import find_audio_files
from birdsed.config import BACKENDS, MAX_WINDOW_S, MIN_HOP_S, MIN_WINDOW_S
from birdsed.errors import BirdsedError, ConfigError
from birdsed.fsutil import remove_stale_temps, run_lock, undecodable_name, write_text_atomic
from birdsed.infer.grid import FileResult, rows_table
from birdsed.infer.merge import merge_if_complete
from birdsed.infer.outputs import RUN_DECISION_KEY, DecisionOptions, OutputSpec, record_decision, write_combined
from birdsed.infer.parts import part_paths, superseded
from birdsed.infer.prior import PriorOptions
from birdsed.infer.shard import my_inputs, parse_shard, write_record
from birdsed.infer.writers import COMBINED, write_errors, write_table
from birdsed.kaggle.birdclef import sample_columns
from birdsed.kaggle.cornell import read_kaggle_test
from birdsed.model.meta import default_output_of, kind_of, model_digest, read_meta, thresholds_of
from birdsed.places import PlaceOptions, Places

log = logging.getLogger(__name__)

RUN_FILES = ("run.json", "errors.csv", *COMBINED)  # what predict writes in OUT itself (a killed run's temporaries go)


@dataclass
class PredictSummary:
    n_files: int
    n_done_before: int
    audio_s: float
    wall_s: float
    errors: list[tuple[str, str]] = field(default_factory=list)
    out: Path | None = None
    n_changed: int = 0  # recordings scored again: they changed since their part was written (parts.py)
    merged: bool = True  # False: a shard whose combined outputs wait for the other shards
    n_detections: int | None = None  # rows x classes in detections.csv (None: not merged yet)

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("inf")


def resolve_inputs(inputs: list[str], test: pd.DataFrame | None) -> tuple[list[str], list[tuple[str, str]]]:
    """Audio files to run, and (name, reason) for inputs that can't be run at all."""
    missing: list[tuple[str, str]] = []
    if test is not None:
        files = sorted({p for p in test["path"] if p})
        outside = set(test.attrs.get("outside", []))
        missing = [
            (
                a,
                "resolves outside the test audio folder: refused, never opened"
                if a in outside
                else "no audio file for this audio_id",
            )
            for a in sorted(set(test.loc[test["path"] == "", "audio_id"]))
        ]
        return files, missing
    files = []
    for p in find_audio_files(inputs):
        shown = undecodable_name(p)
        if shown is not None:  # no output (Parquet, CSV, the part's key) can hold it: that file alone is skipped
            missing.append((shown, "the file name is not valid UTF-8 (shown with \\xNN escapes): rename it"))
        elif p.exists():
            files.append(str(p))
        else:
            missing.append((str(p), "file not found"))
    return files, missing


def _check_grid(window_s: float | None, hop_s: float | None) -> None:
    """The window and hop the CLI's types allow (config.choices): a huge window or a tiny hop never starts."""
    for name, value, lo in (("window_s", window_s, MIN_WINDOW_S), ("hop_s", hop_s, MIN_HOP_S)):
        if value is not None and not (math.isfinite(value) and lo <= value <= MAX_WINDOW_S):
            raise ConfigError(f"{name} = {value!r}: must be a number from {lo:g} to {MAX_WINDOW_S:g} s")


def _check_run(
    out: Path,
    model_dir: Path,
    window_s: float,
    hop_s: float,
    classes: list[str],
    pooling: str,
    short_policy: str | None,
) -> None:
    stamp = {
        "model": str(model_dir.resolve()),
        "model_sha256": model_digest(model_dir),
        "window_s": window_s,
        "hop_s": hop_s,
        "pooling": pooling,
        "classes": classes,
    }
    if short_policy:  # only when overridden, so that the stamps of earlier runs still match
        stamp["short_policy"] = short_policy
    path = out / "run.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not readable ({e}); this --out was tampered with: use a new --out") from e
        if isinstance(old, dict):  # what the last run decided is not part of the stamp
            old.pop(RUN_DECISION_KEY, None)
        if old != stamp:
            changed = sorted(k for k in set(old) | set(stamp) if old.get(k) != stamp.get(k))
            raise ConfigError(
                f"{out} holds results of another model or window setting ({path}: {', '.join(changed)} "
                "differ; the model's files changed, or another model or setting was given); use a new --out"
            )
    else:
        write_text_atomic(path, json.dumps(stamp, indent=2))


def run_predict(
    model_dir: str | Path,
    inputs: list[str],
    out: str | Path,
    test_csv: str | Path | None = None,
    audio_dir: str | Path | None = None,
    formats: tuple[str, ...] = ("csv",),
    window_s: float | None = None,
    hop_s: float | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    decision: DecisionOptions = DecisionOptions(),
    quiet: bool = False,
    pooling: str = "window",
    backend: str = "torch",
    precision: str = "auto",
    short_policy: str | None = None,
    sample_submission: str | Path | None = None,
    shard: str | None = None,
    cluster: str | None = None,
    names: str | None = None,
    places: PlaceOptions | None = None,
    prior: PriorOptions | None = None,
) -> PredictSummary:
    """short_policy: how recordings shorter than a window are fitted to it, "loop" or "pad", for every model
    (default: each model, or each member of an ensemble, as it saw them in training).
    window_s, hop_s: default the model's own (5 s / 2.5 s for the SED models, 3 s windows for BirdNET).
    sample_submission: a BirdCLEF 2023-2025 sample_submission.csv: submission.csv takes its layout (kaggle.birdclef).
    shard: "I/N": only the I-th of N shards of the inputs (shard.py); the last shard to finish merges.
    cluster: run the recordings on a dask.distributed cluster (cluster.py: local:N, tcp://HOST:PORT, FILE.yaml).
    names: what Raven's Species column and Audacity's labels show: "code", "common", "scientific" (default the class).
    places: the recordings' sites and start times (places.py: a sites table or one place, a time pattern, a time
    zone); what they lack is said before anything runs, a recording two rows of the table match is refused.
    prior: BirdNET's place-and-season prior on the scores before the decision (prior.py); the parts keep the model's
    scores, so a re-run with another prior decides again without scoring again."""
    if cluster and backend != "torch":
        raise ConfigError("--cluster runs the torch backend")
    spec = OutputSpec(
        tuple(formats),
        decision,
        str(test_csv) if test_csv else None,
        str(audio_dir) if audio_dir else None,
        str(sample_submission) if sample_submission else None,
        names,
        places or PlaceOptions(),
        prior,
    )
    spec.check()
    _check_grid(window_s, hop_s)
    if sample_submission and test_csv:
        raise ConfigError(
            "--test-csv (row_id,birds) and --sample-submission (probabilities) write different submissions: give one"
        )
    model_dir, out = Path(model_dir), Path(out)
    device = device if backend == "torch" else "cpu"
    with _models(model_dir, backend, cluster) as (model, runner, thresholds, meta):
        spec.calibration(thresholds, default_output_of(meta))  # --calibrated of a model without one: refused now
        if sample_submission:
            sample_columns(sample_submission)  # a bad sample is refused before anything runs
        test = read_kaggle_test(test_csv, audio_dir) if test_csv else None
        files, errors = resolve_inputs(inputs, test)
        if not files and not errors:
            raise BirdsedError("no audio files to predict (give files, folders or --test-csv)")
        i, n = parse_shard(shard) if shard else (0, 0)
        if shard:
            out.mkdir(parents=True, exist_ok=True)
            files, errors, new = my_inputs(out, files, errors, i, n)
            if new:
                log.warning(
                    "%d input(s) appeared after the first shard of %s started: not in its input set, not predicted "
                    "(run them into a new --out): %s",
                    len(new),
                    out,
                    ", ".join(new[:3]) + (", ..." if len(new) > 3 else ""),
                )
        resolved = Places.from_options(spec.places).resolve(files)
        for message in resolved.messages(spec.places):
            log.warning("%s", message)
        facts = runner.model_facts() if runner else model  # window_s, hop_s, classes
        window_s = facts.window_s if window_s is None else window_s
        hop_s = facts.hop_s if hop_s is None else hop_s
        classes = facts.classes
        spec.prior = prior.for_model(classes, meta, model_dir, resolved.places) if prior and prior.on else None
        out.mkdir(parents=True, exist_ok=True)
        parts = out / "parts"
        part_of = part_paths(parts, files)  # named by each recording as it is now, before anything reads it
        # one lock per shard: N shards write side by side into one --out (their files never overlap)
        with run_lock(out, f".lock-shard{i}of{n}" if shard else ".lock"):
            _check_run(out, model_dir, window_s, hop_s, classes, pooling, short_policy)
            if shard:  # what this shard's killed run left half-written (never another shard's live files)
                remove_stale_temps(parts, [p.name for p in part_of.values()])
            else:
                remove_stale_temps(out, RUN_FILES)
                remove_stale_temps(parts, lambda name: name.endswith(".parquet"))  # any run's parts, of any input
            changed = superseded(parts, part_of)
            todo = [f for f in files if not part_of[f].is_file()]
            if changed:
                log.warning(
                    "%d recording(s) changed since they were scored (size or modification time), scored again: %s",
                    len(changed),
                    ", ".join(sorted(changed)[:3]) + (", ..." if len(changed) > 3 else ""),
                )
                for old in changed.values():  # predict's own parts of an earlier version of the recording
                    for path in old:
                        path.unlink(missing_ok=True)
            t0 = time.perf_counter()
            audio_s = 0.0
            if runner:
                if todo:
                    options = {
                        "window_s": window_s,
                        "hop_s": hop_s,
                        "batch_size": batch_size,
                        "device": device,
                        "pooling": pooling,
                        "precision": precision,
                        "short_policy": short_policy,
                    }
                    audio_s, failed = runner.predict(todo, part_of, options, quiet)
                    errors += failed
                    remove_stale_temps(parts, [part_of[f].name for f in todo])  # a worker killed mid-write left it
                runner.close_soon()  # while the combined outputs are built
            else:
                from birdsed.infer.loop import predict_files  # torch: only where this process predicts

                for res in predict_files(
                    model, todo, window_s, hop_s, batch_size, workers, device, quiet, pooling, precision, short_policy
                ):
                    if isinstance(res, FileResult):
                        write_table(rows_table(res, classes), part_of[res.path])
                        audio_s += res.duration_s
                    else:
                        errors.append(res)
            wall_s = time.perf_counter() - t0
            summary = PredictSummary(len(files), len(files) - len(todo), audio_s, wall_s, errors, out, len(changed))
            if shard:
                write_record(out, i, n, files, errors, spec.to_dict(), {f: p.name for f, p in part_of.items()})
            else:
                write_errors(errors, out / "errors.csv")
                done = [f for f in files if part_of[f].is_file()]
                default_output = default_output_of(meta)
                summary.n_detections = write_combined(
                    out, [(f, part_of[f]) for f in done], classes, thresholds, default_output, spec, meta
                )
                record_decision(out, spec.decision_record(classes, thresholds, default_output))
                return summary
    summary.merged = merge_if_complete(out)
    return summary


@contextlib.contextmanager
def _models(model_dir: Path, backend: str, cluster: str | None) -> Iterator[tuple]:
    """(model, cluster run, thresholds, model.json): the model loaded here, or with --cluster only model.json here
    and the model on the workers (ClusterRun: they start loading it at once, while the inputs are listed)."""
    if cluster:
        from birdsed.infer.cluster import ClusterRun

        meta = read_meta(model_dir)
        thresholds = thresholds_of(model_dir, meta)
        with ClusterRun(cluster, model_dir) as runner:
            yield None, runner, thresholds, meta
    elif backend in ("onnx", "openvino"):
        from birdsed.model.onnx_detector import OnnxSED, OpenVinoSED

        meta = read_meta(model_dir)
        if kind_of(meta) != "sed":
            raise ConfigError(
                f"{model_dir} is a {kind_of(meta)} model; the {backend} backend runs single SED models "
                "(use --backend torch)"
            )
        # the export alone: the PyTorch network (and timm) is never built
        yield (OnnxSED if backend == "onnx" else OpenVinoSED)(model_dir), None, thresholds_of(model_dir, meta), meta
    elif backend == "torch":
        from birdsed.model.modeldir import load_model_dir

        model, thresholds, meta = load_model_dir(model_dir)
        yield model, None, thresholds, meta
    else:
        raise ConfigError(f"unknown backend {backend!r}; valid: {list(BACKENDS)}")
