"""Verbs on model directories: export, ensemble, kaggle."""

from __future__ import annotations

import argparse
from pathlib import Path

from birdsed.cli.registry import console, verb
from birdsed.cli.values import number


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="a model directory")
    p.add_argument(
        "--onnx",
        type=Path,
        help="write the model (with its front end: log-mel, or BirdNET's spectrogram for a head on BirdNET) as ONNX; "
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
    from birdsed.kaggle.api import kaggle_dataset_folder
    from birdsed.model.export import export_onnx

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
    p.add_argument(
        "--weights",
        type=number(0, 1e6),
        nargs="+",
        help="one weight per model, 0 to 1e6 (normalised to sum 1; default equal)",
    )


@verb(
    "ensemble",
    "combine trained models into one model directory whose outputs are their mean",
    "birdsed ensemble runs/seed0/model runs/seed1/model --out runs/ensemble",
    _add_ensemble,
)
def cmd_ensemble(a: argparse.Namespace) -> int:
    from birdsed.model.modeldir import save_ensemble

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
