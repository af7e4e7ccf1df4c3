"""`birdsed predict` and `birdsed merge` (its shards' combined outputs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from birdsed.cli.registry import batch_status, console, goes_on, verb
from birdsed.cli.values import cores_cap, count, lat_lon, number
from birdsed.cli.windowing import add_window_options, window_arguments
from birdsed.config import (
    BACKENDS,
    COMPETITIONS,
    OUTPUT_FORMATS,
    OUTPUT_KINDS,
    POOLINGS,
    PRECISIONS,
    SMOOTHINGS,
    SPECIES_NAMES,
)
from birdsed.config.choices import DEFAULT_MIN_OCCURRENCE, DEFAULT_PRIOR_WEIGHT, MAX_PRIOR_WEIGHT, PRIORS
from birdsed.progress import audio_pace


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="a model directory (RUN/model)")
    p.add_argument("inputs", nargs="*", help="audio files and folders (recursive)")
    p.add_argument("--out", type=Path, required=True, help="output folder (a re-run resumes)")
    p.add_argument("--test-csv", type=Path, help="Kaggle test.csv: predict its audio and write submission.csv")
    p.add_argument("--audio-dir", type=Path, help="audio of --test-csv (default: test_audio/ beside it)")
    p.add_argument(
        "--sample-submission",
        type=Path,
        help="a BirdCLEF 2023-2025 sample_submission.csv: submission.csv "
        "in its layout (row_id, then one probability column per class, in its order)",
    )
    p.add_argument(
        "--competition",
        choices=COMPETITIONS,
        help="the one input is the competition's data folder: its test soundscapes are predicted and its "
        "submission written (2021: test.csv -> row_id,birds; 2023-2025: sample_submission.csv's layout)",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="run the I-th of N duration-balanced shards of the inputs into the same "
        "--out (job arrays: --array=1-N, --shard $SLURM_ARRAY_TASK_ID/N); the last to finish merges",
    )
    p.add_argument(
        "--cluster",
        metavar="SPEC",
        help="run on a dask.distributed cluster: local:N (N worker processes), "
        "tcp://HOST:PORT (a running scheduler) or FILE.yaml (dask-jobqueue: SLURM, PBS, SGE, LSF); needs "
        "pip install 'birdsed[cluster]'",
    )
    add_window_options(p)
    p.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="window",
        help="row scores: max over overlapping windows (the seed), or over the head's time segments in the row",
    )
    p.add_argument("--output", choices=OUTPUT_KINDS, help="output to decide on (default: the model's)")
    p.add_argument(
        "--threshold", type=number(0, 1), help="global threshold in [0, 1] (overrides the model's, per-class ones too)"
    )
    p.add_argument("--max-birds", type=count(1), help="keep at most K >= 1 classes per row (default: no limit)")
    p.add_argument("--neighbour-smoothing", choices=SMOOTHINGS, help="combine each row's scores with its neighbours'")
    p.add_argument(
        "--calibrated",
        action="store_true",
        help="write the probability that a detection is right (the model's calibration from `birdsed calibrate`) as "
        "the score of detections, Raven and Audacity files; scores.parquet keeps the scores and adds these as output "
        "'calibrated'; detections are still decided by the stored thresholds",
    )
    p.add_argument(
        "--format",
        nargs="+",
        default=["csv"],
        choices=OUTPUT_FORMATS,
        help="what is written besides scores.parquet: csv = detections.csv, raven = raven/, raven-all = "
        "raven.selections.txt (one Raven table of every recording), audacity = audacity/, "
        "kaggle = submission.csv (implied by --test-csv, --sample-submission, --competition) (default: csv)",
    )
    p.add_argument(
        "--names",
        choices=SPECIES_NAMES,
        help="what Raven's Species column and Audacity's labels show: the eBird code, common or scientific name "
        "(default: the class as the model names it; detections.csv and Raven carry all three in columns of their own)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--sites",
        type=Path,
        metavar="SITES.csv",
        help="a sites table: pattern,site,lat,lon[,timezone][,start]; a glob pattern names a recording or a folder "
        "(siteA, siteA/*.wav, SMM01234_*); outputs carry each recording's site, place and date-time",
    )
    where.add_argument(
        "--site",
        type=lat_lon(),
        metavar="LAT,LON",
        help="one place for every recording (e.g. 43.61,3.87); the place of --prior too",
    )
    p.add_argument(
        "--time-pattern",
        metavar="PATTERN",
        help="how file names give the start: strptime's %%Y %%y %%m %%d %%j %%H %%M %%S, e.g. 'rec-%%Y-%%m-%%d_%%H%%M' "
        "(a / reads folders too) (default: AudioMoth's YYYYMMDD_HHMMSS and Song Meter's PREFIX_YYYYMMDD_HHMMSS)",
    )
    p.add_argument(
        "--timezone",
        metavar="ZONE",
        help="the recorders' clock: an IANA name (Europe/Paris), UTC or an offset (+02:00) (default: the sites "
        "table's timezone column, else UTC, AudioMoth's clock)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 on CUDA, fp32 on CPU; bf16 on CPU pays on CPUs with AMX or AVX512-BF16",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="onnx: ONNX Runtime on the CPU (MODEL/model.onnx); openvino: OpenVINO on the CPU (pip install openvino)",
    )
    p.add_argument(
        "--workers",
        type=count(0, cores_cap()),
        help=f"decoding processes, 0 to {cores_cap()} (4 per core; default: GPU: cores - 1; CPU: 0 below 4 cores, "
        "else cores / 4)",
    )
    p.add_argument("--quiet", action="store_true")
    _add_prior(p)


def _add_prior(p: argparse.ArgumentParser) -> None:
    """--prior: BirdNET's metadata model as a prior on the scores (infer/prior.py), at each recording's place (--site
    or --sites) and week (its name's date, else --week)."""
    g = p.add_argument_group(
        "place-and-season prior (BirdNET's metadata model; the birdnet extra)",
        "for any model whose classes are BirdNET labels, eBird codes, scientific or common names; each recording at "
        "its own place (--site or --sites) and week (the date in its name, else --week); scores.parquet keeps the "
        "model's own scores too (output <kind>_raw)",
    )
    g.add_argument(
        "--prior",
        choices=PRIORS,
        default="off",
        help="soft: each score's logit + weight x log(occurrence there and then) (unlikely species down-weighted, "
        "never dropped); filter: species under --min-occurrence score 0 (BirdNET-Analyzer's); off (default)",
    )
    g.add_argument(
        "--prior-weight",
        type=number(0, MAX_PRIOR_WEIGHT),
        default=DEFAULT_PRIOR_WEIGHT,
        help=f"soft: the weight of log(occurrence), 0 to {MAX_PRIOR_WEIGHT:g} (default {DEFAULT_PRIOR_WEIGHT:g}; "
        "an occurrence of 0.01 then takes 2.3 off the logit)",
    )
    g.add_argument(
        "--min-occurrence",
        type=number(0, 1),
        default=DEFAULT_MIN_OCCURRENCE,
        help=f"filter: the least occurrence kept, 0 to 1 (default {DEFAULT_MIN_OCCURRENCE:g}, BirdNET-Analyzer's)",
    )
    g.add_argument(
        "--week",
        type=count(1, 48, also=(-1,)),
        default=-1,
        help="BirdNET's week 1-48 (four a month: 1-4 January) for recordings whose date is unknown, or -1: all "
        "year (default); a recording whose name or sites row gives its date uses that date's week",
    )


@verb(
    "predict",
    "find calls in recordings: scores, detections, submission, Raven/Audacity files",
    "birdsed predict --model runs/small/model recordings/ --out preds --format csv raven audacity\n"
    "  birdsed predict --model bn recordings/ --out preds --sites sites.csv --timezone Europe/Paris --names common",
    _add_predict,
)
def cmd_predict(a: argparse.Namespace) -> int:
    from birdsed.infer.outputs import DecisionOptions
    from birdsed.infer.predict import PredictOptions, run_predict
    from birdsed.places import PlaceOptions

    prior = _prior(a)
    inputs, test_csv, audio_dir, sample = a.inputs, a.test_csv, a.audio_dir, a.sample_submission
    if a.competition:
        from birdsed.kaggle.birdclef import competition_inputs

        inputs, test_csv, audio_dir, sample = competition_inputs(a.competition, inputs)
    options = PredictOptions(
        test_csv=test_csv,
        audio_dir=audio_dir,
        sample_submission=sample,
        formats=tuple(a.format),
        decision=DecisionOptions(a.output, a.threshold, a.max_birds, a.neighbour_smoothing, a.calibrated),
        workers=a.workers,
        **window_arguments(a),
        pooling=a.pooling,
        precision=a.precision,
        backend=a.backend,
        shard=a.shard,
        cluster=a.cluster,
        names=a.names,
        places=PlaceOptions(str(a.sites) if a.sites else None, a.site, a.time_pattern, a.timezone),
        prior=prior,
        quiet=a.quiet,
    )
    with goes_on(lambda: _kept(a.out)):
        s = run_predict(a.model, inputs, a.out, options)
    console.print(
        f"{s.n_files} recording(s) ({s.n_done_before} done before"
        + (f"; {s.n_changed} changed since scored, scored again" if s.n_changed else "")
        + f"); {audio_pace(s.audio_s, s.wall_s)}; outputs in {s.out}"
    )
    if s.n_detections is not None:
        said = f"{s.n_detections} detection(s)" if s.n_detections else "0 detections: nothing passed the decision"
        console.print(said + _decided_by(s.out))
    if s.n_unlisted:
        console.print(
            f"{s.out} also holds the scores of {s.n_unlisted} recording(s) not given this time: the combined outputs "
            "list only these inputs. Give every input again to list them all (none is scored twice)",
            style="yellow",
        )
    if not s.merged:
        console.print(
            f"shard {a.shard} done; the combined outputs wait for the other shards (the last one merges, or "
            f"`birdsed merge {s.out}`)"
        )
    return batch_status(len(s.errors), s.out / "errors.csv")


def _kept(out: Path) -> str:
    """What a stopped predict kept: its recordings' parts (parts.py), which the same command does not score again."""
    from birdsed.infer.parts import part_files

    parts = Path(out) / "parts"
    n = len(part_files(parts))
    return (
        f"{parts} holds {n} recording(s) scored; the same command goes on (none is scored twice)."
        if n
        else "No recording had been scored; the same command starts again."
    )


def _prior(a: argparse.Namespace):
    """The prior the options ask for (PriorOptions checks the mode and --week; OutputSpec.check that it has places)."""
    from birdsed.infer.prior import PriorOptions

    return PriorOptions(a.prior, a.prior_weight, a.min_occurrence, a.week)


def _decided_by(out) -> str:
    """' (output kind, threshold)' of run.json's decision record, to say beside the count."""
    import json

    d = json.loads((out / "run.json").read_text()).get("decision", {})
    thr = f"threshold {d['threshold']:g}" + (" and per-class ones" if d.get("per_class_thresholds") else "")
    return f" ({d['output']} scores, {thr} from {d['thresholds_from']}; run.json records the decision)"


def _add_merge(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="the --out of predict --shard I/N runs")


@verb(
    "merge",
    "build predict's combined outputs from every shard's parts (predict --shard I/N)",
    "birdsed merge preds",
    _add_merge,
)
def cmd_merge(a: argparse.Namespace) -> int:
    from birdsed.fsutil import run_lock
    from birdsed.infer.merge import merge

    with run_lock(a.out, ".lock-merge"):
        n, n_errors = merge(a.out)
    console.print(f"{n} recording(s) merged into {a.out} (scores.parquet, detections.csv, ...)")
    return batch_status(n_errors, a.out / "errors.csv")
