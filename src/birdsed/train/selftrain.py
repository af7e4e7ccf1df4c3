"""Noisy-student self-training (`birdsed self-train`): teacher -> pseudo-labels -> student, for N rounds.

RUN/
  round0/              the teacher, trained on the labels alone (train/run.py's run folder; round0/model)
  round0/pl/           its soft labels of the unlabelled recordings (pseudo.py)
  round1/              a student trained on the labels and round0/pl (augmentation and dropout on, as in training)
  round1/pl/ ...       each student is the next round's teacher
  rounds.csv           one row per finished round: its model, the validation metric it was selected by, its score,
                       the pseudo-labelled windows it trained on

A killed run, started again with the same command, skips finished rounds, resumes a round's training from its
last epoch (train --resume) and its pseudo-labelling where it stopped (predict's parts).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pandas as pd

from birdsed.config import Config
from birdsed.errors import ConfigError
from birdsed.fsutil import atomic_path
from birdsed.train.pseudo import TABLE, SoftLabelOptions, pseudo_label

log = logging.getLogger(__name__)


def round_row(k: int, run: Path, n_pseudo: int) -> dict:
    train = json.loads((run / "model" / "model.json").read_text()).get("train", {})
    return {
        "round": k,
        "model": str(run / "model"),
        "best_metric": train.get("best_metric"),
        "best_score": train.get("best_score"),
        "pseudo_windows": n_pseudo,
    }


def train_round(data: Path, cfg: Config, run: Path, val_data: Path | None, quiet: bool) -> Path:
    """One round's training, resumed from its last epoch when a killed run left one."""
    from birdsed.train.run import train

    if (run / "model" / "model.json").is_file():
        return run / "model"
    resume = (run / "checkpoints" / "last.ckpt").is_file()
    if resume:
        log.info("%s: resuming from its last epoch", run)
    return train(data, cfg, run, resume=resume, val_data=val_data, quiet=quiet)


def self_train(
    data: str | Path,
    unlabelled: list[str],
    rounds: int,
    cfg: Config,
    out: str | Path,
    opts: SoftLabelOptions = SoftLabelOptions(),
    val_data: str | Path | None = None,
    quiet: bool = False,
    predict_workers: int | None = None,
) -> pd.DataFrame:
    """Teacher on the labels, then `rounds` students each on the labels and the previous model's soft labels of
    `unlabelled`; returns (and writes out/rounds.csv) one row per round."""
    if rounds < 1:
        raise ConfigError(f"self-train needs at least one round, got {rounds}")
    opts.check()
    cfg.check()
    out, data = Path(out), Path(data)
    val = Path(val_data) if val_data else None
    from birdsed.train.checkpoint import held_run_folder

    # its rounds.csv here; each round's folder is its own train's
    with held_run_folder(out, {out: ["rounds.csv"]}, ".lock-self-train"):
        rows = []
        model = train_round(data, cfg, out / "round0", val, quiet)
        rows.append(round_row(0, out / "round0", 0))
        for k in range(1, rounds + 1):
            pl = out / f"round{k - 1}" / "pl"
            if not (pl / TABLE).is_file():  # a killed pseudo-labelling resumes from predict's parts
                pseudo_label(model, unlabelled, pl, opts, quiet=quiet, workers=predict_workers)
            n_pseudo = len(pd.read_parquet(pl / TABLE, columns=["file"]))
            student = replace(cfg, data=replace(cfg.data, pseudo=(str(pl.resolve()),)))
            model = train_round(data, student, out / f"round{k}", val, quiet)
            rows.append(round_row(k, out / f"round{k}", n_pseudo))
            table = pd.DataFrame(rows)
            with atomic_path(out / "rounds.csv") as tmp:
                table.to_csv(tmp, index=False)
            log.info("round %d: %s %s", k, rows[-1]["best_metric"], rows[-1]["best_score"])
        return pd.DataFrame(rows)
