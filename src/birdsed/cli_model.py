"""Verbs that train, run and score models (registered into birdsed.cli)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from birdsed.cli import batch_status, console, verb


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="a data-set folder or a prepared store")
    p.add_argument("--config", default="seed108", help="a YAML file or a preset name (seed108, small, nips4b)")
    p.add_argument("--out", type=Path, required=True, help="run folder; the model is written to RUN/model")
    p.add_argument(
        "--val", type=Path, default=None, help="a separate validation data set (default: a stratified split)"
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--backbone")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--devices", help="number of devices (GPUs or CPU processes)")
    p.add_argument(
        "--num-nodes", type=int, help="machines of a multi-node run (srun / torchrun start one process per device)"
    )
    p.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    p.add_argument("--workers", type=int, help="data-loader worker processes")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.ckpt")
    p.add_argument(
        "--pseudo",
        action="append",
        metavar="PL",
        help="a pseudo-label table (birdsed pseudo-label): its "
        "windows join training with soft targets (repeatable; data.pseudo)",
    )
    p.add_argument(
        "--teacher",
        type=Path,
        metavar="M",
        help="distil: M's soft labels of the training recordings (and of "
        "--unlabelled) join training (RUN/teacher_pl), e.g. an ensemble into a small model",
    )
    p.add_argument("--unlabelled", nargs="+", default=[], help="with --teacher: unlabelled recordings it labels too")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override any config value")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@verb(
    "train",
    "train an SED model (Lightning; CPU, one GPU or many)",
    "birdsed train --data data/synth --config small --out runs/small --epochs 8",
    _add_train,
)
def cmd_train(a: argparse.Namespace) -> int:
    from birdsed.config import apply_overrides, load_config
    from birdsed.train import train

    cfg = load_config(a.config)
    flags = {
        "train.epochs": a.epochs,
        "train.max_steps": a.max_steps,
        "train.batch_size": a.batch_size,
        "model.backbone": a.backbone,
        "train.device": a.device,
        "train.workers": a.workers,
        "train.seed": a.seed,
        "train.devices": a.devices,
        "train.num_nodes": a.num_nodes,
        "train.strategy": a.strategy,
    }
    overrides = a.set + [f"{k}={v}" for k, v in flags.items() if v is not None]  # named flags win
    pseudo = [str(Path(p).resolve()) for p in a.pseudo or []]
    if a.teacher:
        from birdsed.pseudo import teacher_labels

        apply_overrides(cfg, overrides).check()  # refused before the teacher runs
        pseudo.append(
            str(teacher_labels(a.teacher, a.data, a.out / "teacher_pl", a.unlabelled, quiet=a.quiet).resolve())
        )
    if pseudo:
        overrides.append(f"data.pseudo={json.dumps(pseudo)}")
    cfg = apply_overrides(cfg, overrides)
    model_dir = train(a.data, cfg, a.out, resume=a.resume, val_data=a.val, quiet=a.quiet)
    console.print(f"model written to {model_dir}")
    return 0


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
        choices=["birdclef2021", "birdclef2023", "birdclef2024", "birdclef2025"],
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
    p.add_argument("--window-s", type=float, help="window length (default: the model's: 5 s, BirdNET 3 s)")
    p.add_argument("--hop-s", type=float, help="hop between windows (default: the model's: 2.5 s, BirdNET 3 s)")
    p.add_argument(
        "--pooling",
        choices=["window", "segment"],
        default="window",
        help="row scores: max over overlapping windows (the seed), or over the head's time segments in the row",
    )
    p.add_argument(
        "--output", choices=["segmentwise", "att", "clipwise"], help="output to decide on (default: the model's)"
    )
    p.add_argument(
        "--short",
        choices=["loop", "pad"],
        help="a recording shorter than a window: repeat it to fill the window, or zero-pad it "
        "(default: as the model trained)",
    )
    p.add_argument("--threshold", type=float, help="global threshold (overrides the model's, per-class ones too)")
    p.add_argument("--max-birds", type=int, help="keep at most K classes per row")
    p.add_argument(
        "--neighbour-smoothing", choices=["sum", "max"], help="combine each row's scores with its neighbours'"
    )
    p.add_argument(
        "--format",
        nargs="+",
        default=["csv"],
        choices=["csv", "kaggle", "raven", "audacity"],
        help="outputs besides scores.parquet (kaggle is implied by --test-csv)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="auto: bf16 on CUDA, fp32 on CPU; bf16 on CPU pays on CPUs with AMX or AVX512-BF16",
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnx", "openvino"],
        help="onnx: ONNX Runtime on the CPU (MODEL/model.onnx); openvino: OpenVINO on the CPU (pip install openvino)",
    )
    p.add_argument(
        "--workers", type=int, help="decoding processes (default: GPU: cores - 1; CPU: 0 below 4 cores, else cores / 4)"
    )
    p.add_argument("--quiet", action="store_true")


@verb(
    "predict",
    "find calls in recordings: scores, detections, submission, Raven/Audacity files",
    "birdsed predict --model runs/small/model recordings/ --out preds --format csv raven audacity",
    _add_predict,
)
def cmd_predict(a: argparse.Namespace) -> int:
    from birdsed.predict import DecisionOptions, run_predict

    decision = DecisionOptions(a.output, a.threshold, a.max_birds, a.neighbour_smoothing)
    inputs, test_csv, audio_dir, sample = a.inputs, a.test_csv, a.audio_dir, a.sample_submission
    if a.competition:
        from birdsed.kaggle.birdclef import competition_inputs

        inputs, test_csv, audio_dir, sample = competition_inputs(a.competition, inputs)
    s = run_predict(
        a.model,
        inputs,
        a.out,
        test_csv,
        audio_dir,
        tuple(a.format),
        a.window_s,
        a.hop_s,
        a.batch_size,
        a.workers,
        a.device,
        decision,
        a.quiet,
        a.pooling,
        a.backend,
        a.precision,
        a.short,
        sample,
        a.shard,
        a.cluster,
    )
    console.print(
        f"{s.n_files} recording(s) ({s.n_done_before} done before); {s.audio_s / 3600:.2f} h of audio in "
        f"{s.wall_s:.1f} s = {s.realtime_factor:.0f}x real time; outputs in {s.out}"
    )
    if not s.merged:
        console.print(
            f"shard {a.shard} done; the combined outputs wait for the other shards (the last one merges, or "
            f"`birdsed merge {s.out}`)"
        )
    return batch_status(len(s.errors), s.out / "errors.csv")


def _add_truth_options(p: argparse.ArgumentParser) -> None:
    from birdsed.truth import TRUTH_FORMATS
    from birdsed.truth.events import DEFAULT_MIN_OVERLAP_S

    p.add_argument(
        "--truth-format", default="auto", choices=TRUTH_FORMATS, help="the truth's format (default: by content)"
    )
    p.add_argument(
        "--label-column", help="the annotation tables' label column (Raven default: Species, Annotation, ...)"
    )
    p.add_argument(
        "--min-overlap-s",
        type=float,
        default=DEFAULT_MIN_OVERLAP_S,
        help="a 5 s row is positive for a label its annotated calls cover this long",
    )


def _truth_kw(a: argparse.Namespace) -> dict:
    return {"min_overlap_s": a.min_overlap_s, "fmt": a.truth_format, "label_column": a.label_column}


TRUTH_HELP = (
    "the truth: Raven selection tables, Audacity labels or a CSV of file,start_s,end_s,label (a table or a "
    "folder of them), birdsed's detections.csv, Kaggle row_id,birds (with test.csv), BirdCLEF 2021 labels"
)


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
    from birdsed.predict import merge

    with run_lock(a.out, ".lock-merge"):
        n, n_errors = merge(a.out)
    console.print(f"{n} recording(s) merged into {a.out} (scores.parquet, detections.csv, ...)")
    return batch_status(n_errors, a.out / "errors.csv")


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--truth", type=Path, required=True, help=TRUTH_HELP)
    _add_truth_options(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", type=Path, help="a submission.csv (row_id,birds)")
    src.add_argument("--scores", type=Path, help="a scores.parquet from predict")
    p.add_argument("--test-csv", type=Path, help="maps row_ids to files and times (default: test.csv beside --truth)")
    p.add_argument("--audio-dir", type=Path)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) when any prediction row, truth row or class is not used, or the truth has no positive",
    )


@verb(
    "evaluate",
    "score predictions: row-wise micro F1, P/R/F1, per class, AP, threshold sweeps",
    "birdsed evaluate --scores preds/scores.parquet --truth data/synth/test_labels.csv",
    _add_evaluate,
)
def cmd_evaluate(a: argparse.Namespace) -> int:
    import json

    from birdsed.evaluate import evaluate_submission, scores_report_from_files
    from birdsed.tables import print_score_report, print_submission_report

    if a.pred:
        rep = evaluate_submission(a.pred, a.truth, a.strict)
        if a.json:
            print(json.dumps(rep.to_dict(), indent=1))
        else:
            print_submission_report(rep)
        return 0
    report = scores_report_from_files(a.scores, a.truth, a.test_csv, a.audio_dir, a.strict, **_truth_kw(a))
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print_score_report(report)
    return 0


def _add_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="the model directory to store thresholds in")
    p.add_argument("--scores", type=Path, help="scores.parquet of predict on validation recordings")
    p.add_argument("--truth", type=Path, help=TRUTH_HELP + ", for --scores")
    _add_truth_options(p)
    p.add_argument("--test-csv", type=Path, help="maps row_ids to files (default: test.csv beside --truth)")
    p.add_argument("--data", type=Path, help="or: a labelled data set; each recording is one row (whole-file labels)")
    p.add_argument("--shrink", type=float, default=10.0, help="pull per-class thresholds toward the global one")
    p.add_argument("--no-per-class", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print, do not write model.json")
    p.add_argument(
        "--strict", action="store_true", help="refuse when scores and truth do not share every row and class"
    )


@verb(
    "tune",
    "choose thresholds (global and per class) on validation data; store them in the model",
    "birdsed tune --model runs/small/model --scores preds/scores.parquet --truth data/synth/test_labels.csv",
    _add_tune,
)
def cmd_tune(a: argparse.Namespace) -> int:
    from birdsed.tables import print_tune_result
    from birdsed.tune import tune_model

    result = tune_model(
        a.model,
        a.scores,
        a.truth,
        a.test_csv,
        a.data,
        a.shrink,
        not a.no_per_class,
        a.dry_run,
        a.strict,
        **_truth_kw(a),
    )
    print_tune_result(result)
    return 0


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("birdsed-demo"), help="folder for data, run, predictions, report")
    p.add_argument("--species", type=int, default=6)
    p.add_argument("--clips-per-species", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override the small config")
    p.add_argument("--quiet", action="store_true")


@verb(
    "demo",
    "the whole job on synthetic data: synth, train a small model, predict, evaluate, report",
    "birdsed demo --out birdsed-demo",
    _add_demo,
)
def cmd_demo(a: argparse.Namespace) -> int:
    import dataclasses

    from birdsed.demo import DEMO_SYNTH, run_demo
    from birdsed.tables import print_score_report, print_tune_result

    synth = dataclasses.replace(DEMO_SYNTH, species=a.species, clips_per_species=a.clips_per_species, seed=a.seed)
    res = run_demo(a.out, synth, a.set, a.quiet)
    print_tune_result(res.tuned)
    print_score_report(res.score_report)
    console.print(
        f"[bold green]row-wise micro F1 on the synthetic test soundscapes: {res.row_f1:.4f}[/bold green] "
        f"(output {res.output} at the thresholds tuned on the validation soundscapes; {res.seconds / 60:.1f} min)"
    )
    console.print(
        f"outputs: {res.out / 'predict'} "
        "(report.html, submission.csv, detections.csv, scores.parquet, raven/, audacity/); "
        f"model: {res.out / 'run' / 'model'}"
    )
    return 0


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="a model directory")
    p.add_argument(
        "--onnx",
        type=Path,
        help="write the model (with its log-mel front end) as ONNX; "
        "name it MODEL/model.onnx for `predict --backend onnx`",
    )
    p.add_argument("--check-audio", type=Path, help="also compare ONNX and PyTorch on this recording")
    p.add_argument("--kaggle-dataset", type=Path, help="write a Kaggle data-set folder (model + dataset-metadata.json)")
    p.add_argument("--dataset", default=None, help="Kaggle data set id owner/slug (for --kaggle-dataset)")


@verb(
    "export",
    "export a model: ONNX, or a Kaggle data-set folder",
    "birdsed export --model runs/small/model --onnx runs/small/model/model.onnx",
    _add_export,
)
def cmd_export(a: argparse.Namespace) -> int:
    from birdsed.errors import BirdsedError
    from birdsed.export import export_onnx, kaggle_dataset_folder

    if not a.onnx and not a.kaggle_dataset:
        raise BirdsedError("nothing to export: give --onnx and/or --kaggle-dataset")
    if a.onnx:
        diffs = export_onnx(a.model, a.onnx, check_audio=a.check_audio)
        console.print(f"ONNX model written to {a.onnx}; max |ONNX - PyTorch| = {max(diffs.values()):.2e}")
    if a.kaggle_dataset:
        if not a.dataset:
            raise BirdsedError("--kaggle-dataset needs --dataset owner/slug")
        folder = kaggle_dataset_folder(a.model, a.kaggle_dataset, a.dataset)
        console.print(
            f"Kaggle data-set folder written to {folder} (upload: birdsed kaggle publish, or kaggle datasets create -p)"
        )
    return 0


def _add_ensemble(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "models",
        type=Path,
        nargs="+",
        help="two or more model directories of any kind (same classes, sample rate and window)",
    )
    p.add_argument("--out", type=Path, required=True, help="the ensemble directory to write (must not exist)")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per model (normalised to sum 1; default equal)")


@verb(
    "ensemble",
    "combine trained models into one model directory whose outputs are their mean",
    "birdsed ensemble runs/seed0/model runs/seed1/model --out runs/ensemble",
    _add_ensemble,
)
def cmd_ensemble(a: argparse.Namespace) -> int:
    from birdsed.modeldir import save_ensemble

    out = save_ensemble(a.models, a.out, a.weights)
    console.print(
        f"ensemble of {len(a.models)} models written to {out} (thresholds: the members' mean; "
        f"`birdsed tune --model {out} ...` sets its own)"
    )
    return 0


def _add_kaggle(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    d = sub.add_parser("download", help="download and unpack competition data (or a user data set)")
    d.add_argument("dir", type=Path)
    d.add_argument("--competition", default="birdsong-recognition")
    d.add_argument("--dataset", help="a user data set owner/slug instead of the competition")
    pub = sub.add_parser("publish", help="publish a model directory as a Kaggle data set (new version when it exists)")
    pub.add_argument("model", type=Path)
    pub.add_argument("--dataset", required=True, help="owner/slug")
    pub.add_argument("--message", default="new version")
    pub.add_argument("--folder", type=Path, help="where to write the data-set folder (default: beside the model)")
    pub.add_argument("--public", action="store_true")
    pub.add_argument("--dry-run", action="store_true", help="only write the folder")


@verb(
    "kaggle",
    "the Kaggle workflow: download competition data, publish a model as a data set",
    "birdsed kaggle download data/birdsong-recognition   |   "
    "birdsed kaggle publish runs/seed108/model --dataset me/birdsed-seed108",
    _add_kaggle,
)
def cmd_kaggle(a: argparse.Namespace) -> int:
    from birdsed.kaggle import api as kaggle_io

    if a.action == "download":
        out = kaggle_io.download(a.dir, a.competition, a.dataset)
        console.print(f"downloaded into {out}")
    else:
        folder, action = kaggle_io.publish(a.model, a.dataset, a.message, a.folder, a.dry_run, a.public)
        console.print(f"{action}: {a.dataset} from {folder}")
    return 0


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("pred", type=Path, help="a predict output folder")
    p.add_argument("--out", type=Path, help="HTML file (default: PRED/report.html)")
    p.add_argument("--truth", type=Path, help=TRUTH_HELP + ": drawn under the detections, and the evaluation added")
    _add_truth_options(p)
    p.add_argument("--test-csv", type=Path, help="maps truth row_ids to files (default: test.csv beside --truth)")
    p.add_argument("--run", type=Path, help="a training run folder: adds its loss and metric curves")
    p.add_argument("--output", choices=["segmentwise", "att", "clipwise"], help="score timeline to draw")
    p.add_argument("--max-recordings", type=int, default=20)
    p.add_argument("--page-s", type=float, default=60.0, help="seconds of audio per picture")
    p.add_argument("--max-minutes", type=float, default=10.0, help="minutes drawn per recording")


@verb(
    "report",
    "an HTML page of what was found: spectrograms with detections, score timelines, evaluation",
    "birdsed report preds --truth data/synth/test_labels.csv --run runs/small",
    _add_report,
)
def cmd_report(a: argparse.Namespace) -> int:
    from birdsed.report import build_report

    out = build_report(
        a.pred, a.out, a.truth, a.test_csv, a.run, a.output, a.max_recordings, a.page_s, a.max_minutes, **_truth_kw(a)
    )
    console.print(f"report written to {out}")
    return 0
