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

run_predict reads top to bottom once, whatever runs the model and whichever recordings the run takes:

    options (PredictOptions) -> model.json read once -> a runner (runners.py: this process, or a Dask cluster)
      -> the inputs listed; what scoring would refuse (the device, the model's runtime, the window) refused before
         anything is written into OUT (runner.check)
      -> the run's scope's share of the inputs (scope.py: every input, or a --shard I/N)
      -> under the scope's lock: the runner writes one part per recording (runners.write_parts)
      -> the scope finishes: the writers build the combined outputs (outputs.combine), or the shard records itself
         and the last shard merges
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from birdsed.audio.decode import find_audio_files
from birdsed.config import MAX_WINDOW_S, MIN_HOP_S, MIN_WINDOW_S
from birdsed.errors import BirdsedError, ConfigError
from birdsed.fsutil import run_lock, undecodable_name, write_text_atomic
from birdsed.infer.outputs import RUN_DECISION_KEY, DecisionOptions, OutputSpec
from birdsed.infer.parts import part_files, part_paths, superseded
from birdsed.infer.prior import OccurrencePrior, PriorOptions
from birdsed.infer.runners import ModelFacts, ScoringOptions, open_runner
from birdsed.infer.scope import PARTS, FinishedRun, scope_of
from birdsed.infer.transforms import ScoreTransform
from birdsed.kaggle.birdclef import sample_columns
from birdsed.kaggle.cornell import read_kaggle_test
from birdsed.model.kinds import ModelMeta
from birdsed.model.meta import model_digest, read_model_meta
from birdsed.places import PlaceOptions, Places

log = logging.getLogger(__name__)


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
    n_unlisted: int = 0  # parts in OUT of recordings not among these inputs: kept, out of the combined outputs

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("inf")


def resolve_inputs(inputs: list[str], test: pd.DataFrame | None) -> tuple[list[str], list[tuple[str, str]]]:
    """Audio files to run, and (name, reason) for inputs that can't be run at all (a file in a folder that cannot be
    decoded, a dangling link); an input given that does not exist is a ConfigError (a typo, said before any run)."""
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
    absent = [str(p) for p in inputs if not os.path.lexists(p)]
    if absent:  # a path typed on the command line: a mistake to fix now, not a recording to skip
        shown = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        raise ConfigError(f"{shown}: no such file or folder (check the path); nothing was run")
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


def _check_run(out: Path, model_dir: Path, meta: ModelMeta, scoring: ScoringOptions, classes: list[str]) -> None:
    """Stamp OUT/run.json with the model and the window settings, or refuse an OUT stamped with others."""
    stamp = {
        "model": str(model_dir.resolve()),
        "model_sha256": model_digest(model_dir, meta),
        "window_s": scoring.window_s,
        "hop_s": scoring.hop_s,
        "pooling": scoring.pooling,
        "classes": classes,
    }
    if scoring.short_policy:  # only when overridden, so that the stamps of earlier runs still match
        stamp["short_policy"] = scoring.short_policy
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


@dataclass(frozen=True)
class PredictOptions:
    """Everything `predict` takes besides the model, the inputs and OUT (the CLI's options, typed).

    test_csv, audio_dir: a Kaggle test.csv and its audio (default: test_audio/ beside it): submission.csv for it.
    sample_submission: a BirdCLEF 2023-2025 sample_submission.csv: submission.csv takes its layout (kaggle.birdclef).
    formats: what is written besides scores.parquet (OutputSpec.writers); decision: how scores become detections.
    transforms: score transforms (transforms.py) applied, in order, between the rows' scores and the decision;
      none by default (--prior's comes before them, --calibrated's after the decision: run_predict adds them).
    window_s, hop_s: default the model's own (5 s / 2.5 s for the SED models, 3 s windows for BirdNET).
    short_policy: how recordings shorter than a window are fitted to it, "loop" or "pad", for every model (default:
      each model, or each member of an ensemble, as it saw them in training).
    backend: torch, or the export run by onnx / openvino (a CPU is their device).
    shard: "I/N": only the I-th of N shards of the inputs (shard.py); the last shard to finish merges.
    cluster: run the recordings on a dask.distributed cluster (cluster.py: local:N, tcp://HOST:PORT, FILE.yaml).
    names: what Raven's Species column and Audacity's labels show: "code", "common", "scientific" (default the class).
    places: the recordings' sites and start times (places.py: a sites table or one place, a time pattern, a time
      zone); what they lack is said before anything runs, a recording two rows of the table match is refused.
    prior: BirdNET's place-and-season prior on the scores before the decision (prior.py: a score transform, the
      first); the parts keep the model's scores, so a re-run with another prior decides again without scoring again.
    """

    test_csv: str | Path | None = None
    audio_dir: str | Path | None = None
    sample_submission: str | Path | None = None
    formats: tuple[str, ...] = ("csv",)
    decision: DecisionOptions = field(default_factory=DecisionOptions)
    transforms: tuple[ScoreTransform, ...] = ()
    window_s: float | None = None
    hop_s: float | None = None
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    pooling: str = "window"
    precision: str = "auto"
    short_policy: str | None = None
    backend: str = "torch"
    shard: str | None = None
    cluster: str | None = None
    names: str | None = None
    places: PlaceOptions = field(default_factory=PlaceOptions)
    prior: PriorOptions | None = None
    quiet: bool = False

    def output_spec(self) -> OutputSpec:
        """What the combined outputs are (saved with each shard, for the merge)."""
        return OutputSpec(
            tuple(self.formats),
            self.decision,
            str(self.test_csv) if self.test_csv else None,
            str(self.audio_dir) if self.audio_dir else None,
            str(self.sample_submission) if self.sample_submission else None,
            self.names,
            self.places or PlaceOptions(),
            tuple(self.transforms),  # with --prior's and --calibrated's once the model is known (run_predict)
        )

    def scoring(self, facts: ModelFacts) -> ScoringOptions:
        """How the runner scores the windows, with the model's window and hop where none was given."""
        return ScoringOptions(
            window_s=self.window_s,
            hop_s=self.hop_s,
            batch_size=self.batch_size,
            workers=self.workers,
            device=self.device if self.backend == "torch" else "cpu",
            pooling=self.pooling,
            precision=self.precision,
            short_policy=self.short_policy,
        ).resolved(facts)

    def check(self) -> OutputSpec:
        """Refuse options that do not go together, before anything is read; the output spec they give."""
        if self.cluster and self.backend != "torch":
            raise ConfigError("--cluster runs the torch backend")
        spec = self.output_spec()
        spec.check()
        if self.prior and self.prior.on and not (spec.places.sites or spec.places.site):
            raise ConfigError(
                f"--prior {self.prior.mode} needs where the recordings are: give --site LAT,LON (one place for "
                "every recording) or --sites SITES.csv (each recording's own); each recording's week comes from the "
                "date in its name, else --week"
            )
        _check_grid(self.window_s, self.hop_s)
        if self.sample_submission and self.test_csv:
            raise ConfigError(
                "--test-csv (row_id,birds) and --sample-submission (probabilities) write different submissions: "
                "give one"
            )
        return spec


def list_inputs(inputs: list[str], opts: PredictOptions) -> tuple[list[str], list[tuple[str, str]]]:
    """The recordings to run and (name, reason) for the inputs that can't run: files and folders, or a Kaggle test
    set; a bad sample submission, and no input at all, are refused before anything runs."""
    if opts.sample_submission:
        sample_columns(opts.sample_submission)
    test = read_kaggle_test(opts.test_csv, opts.audio_dir) if opts.test_csv else None
    files, errors = resolve_inputs(inputs, test)
    if not files and not errors:
        raise BirdsedError("no audio files to predict (give files, folders or --test-csv)")
    return files, errors


def drop_superseded(parts: Path, part_of: dict[str, Path]) -> dict[str, list[Path]]:
    """Remove predict's own parts of earlier versions of the recordings (they changed since: parts.superseded), said
    once; returns them by recording."""
    changed = superseded(parts, part_of)
    if changed:
        log.warning(
            "%d recording(s) changed since they were scored (size or modification time), scored again: %s",
            len(changed),
            ", ".join(sorted(changed)[:3]) + (", ..." if len(changed) > 3 else ""),
        )
        for old in changed.values():
            for path in old:
                path.unlink(missing_ok=True)
    return changed


def run_predict(
    model_dir: str | Path,
    inputs: list[str],
    out: str | Path,
    options: PredictOptions | None = None,
    **fields,
) -> PredictSummary:
    """`predict` (module docstring). options: PredictOptions; `fields` are its fields by name, a shorthand that
    replaces them (run_predict(model, files, out, quiet=True, workers=0))."""
    opts = replace(options or PredictOptions(), **fields)
    spec = opts.check()
    model_dir, out = Path(model_dir), Path(out)
    meta = read_model_meta(model_dir)  # the one read of model.json: the runner, the stamp and the decision use it
    with open_runner(model_dir, meta, opts.backend, opts.cluster) as runner:
        calibrated = spec.calibrated(meta.thresholds, meta.default_output)  # of a model without one: refused now
        files, errors = list_inputs(inputs, opts)
        facts = runner.facts()
        scoring = opts.scoring(facts)
        runner.check(scoring)  # the device, the model's runtime, the window: refused before OUT is touched
        # every input's place, of the whole input set with --shard (each shard refuses or accepts the same), before
        # the shard's own inputs are chosen: that writes the shards' partition into OUT
        resolved = Places.from_options(spec.places).resolve(files)
        for message in resolved.messages(spec.places):
            log.warning("%s", message)
        if opts.prior and opts.prior.on:  # the score transforms, set up for the model: the prior's first
            fitted = opts.prior.for_model(facts.classes, meta.raw, model_dir, resolved.places)
            spec.transforms = (OccurrencePrior(fitted), *spec.transforms)
        spec.transforms = (*spec.transforms, *calibrated)  # the calibration's last: of the scores decided on
        scope = scope_of(opts.shard)
        files, errors = scope.select(out, files, errors)
        out.mkdir(parents=True, exist_ok=True)
        part_of = part_paths(out / PARTS, files)  # named by each recording as it is now, before anything reads it
        with run_lock(out, scope.lock):
            _check_run(out, model_dir, meta, scoring, facts.classes)
            scope.sweep(out, part_of)
            changed = drop_superseded(out / PARTS, part_of)
            todo = [f for f in files if not part_of[f].is_file()]
            t0 = time.perf_counter()
            scored = runner.score(todo, part_of, scoring, opts.quiet)
            runner.close_soon()  # while the combined outputs are built
            wall_s = time.perf_counter() - t0
            errors = errors + scored.errors
            summary = PredictSummary(
                len(files), len(files) - len(todo), scored.audio_s, wall_s, errors, out, len(changed)
            )
            summary.merged, summary.n_detections = scope.finish(
                out, FinishedRun(files, part_of, errors, facts.classes, meta, spec)
            )
            if opts.shard is None:
                summary.n_unlisted = unlisted_parts(out / PARTS, part_of)
    return summary


def unlisted_parts(parts: Path, part_of: dict[str, Path]) -> int:
    """How many of predict's parts in `parts` are of none of this run's inputs (`part_of`): recordings an earlier
    run into the same OUT was given. They stay (a later run given them again does not score them twice), but the
    combined outputs list only this run's inputs."""
    own = {p.name for p in part_of.values()}
    return sum(1 for n in part_files(parts) if n not in own)
