"""Verified clips as a training data set (`review PRED --export-labels DATA`): the labels.csv layout `train` reads.

Each verified clip (a recording's [start_s, end_s) with at least one `yes`, `no` or another-species verdict) becomes
one short audio file cut from its recording, `DATA/audio/<name>.wav`, and one row of `DATA/labels.csv`:

    filename, labels, source_file, start_s, end_s, verdicts

`labels` are the clip's verified species (space-separated; a label holding spaces is written with "_" for them, and
DATA/species.csv keeps its name): a `yes` makes the verdict's species a label, a verdict
naming another species (`other_label`) makes that one a label. A clip with only `no` verdicts has no label: a negative
clip, whose target train sets to 0 for every class, so the species that was said `no` learns from it (a clip is
exported once, so what its other classes are is what train assumes of every clip: absent unless labelled). `unsure`
is left out, and so is a clip whose reviewers disagree (a `yes` and a `no` for one species): listed, not guessed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from birdsed.data.manifest import SPECIES_FILE
from birdsed.errors import AudioDecodeError, ReviewError
from birdsed.model.names import SCIENTIFIC, Names, norm_name
from birdsed.review.media import excerpt

LABELS_COLUMNS = ("filename", "labels", "source_file", "start_s", "end_s", "verdicts")
MARKER = "review_export.json"  # says a folder was written by --export-labels (so a re-export may replace it)
CLIP_KEY = ["file", "start_s", "end_s"]


@dataclass
class LabelExport:
    """What an export wrote and what it left out (`skipped`: file, start_s, end_s, reason)."""

    folder: Path
    clips: int
    positives: int
    negatives: int
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[*CLIP_KEY, "reason"]))


def clip_labels(verdicts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per clip (file, start_s, end_s) its verified labels (a sorted list; empty for a negative clip) and its
    verdicts as text ("amecro:yes woothr:no"); and the clips left out with a reason (reviewers disagree)."""
    v = verdicts[verdicts["verdict"].isin(["yes", "no"])].copy()
    other = v["other_label"].fillna("").astype(str)
    # another species said: a positive of that species (and, as the store keeps it, a `no` of the detected one)
    named = v[other != ""].assign(label=other[other != ""], verdict="yes")
    v = pd.concat([v, named], ignore_index=True)
    rows, skipped = [], []
    for (file, start_s, end_s), g in v.groupby(CLIP_KEY, sort=True):
        said = g.groupby("label")["verdict"].agg(lambda s: set(s))
        torn = sorted(lab for lab, s in said.items() if s == {"yes", "no"})
        if torn:
            skipped.append((file, start_s, end_s, f"reviewers disagree on {', '.join(torn)} (yes and no)"))
            continue
        labels = sorted(lab for lab, s in said.items() if s == {"yes"})
        text = " ".join(f"{lab}:{next(iter(s))}" for lab, s in said.items())
        rows.append((file, float(start_s), float(end_s), labels, text))
    return (
        pd.DataFrame(rows, columns=[*CLIP_KEY, "labels", "verdicts"]),
        pd.DataFrame(skipped, columns=[*CLIP_KEY, "reason"]),
    )


def spaceless(labels: list[str]) -> dict[str, str]:
    """The labels that hold white space, each -> its name with "_" for each run of it: labels.csv's labels are
    space-separated ("Sardinian Warbler" -> "Sardinian_Warbler"). A ReviewError if two labels would become one."""
    renamed = {lab: re.sub(r"\s+", "_", lab.strip()) for lab in labels if re.search(r"\s", lab)}
    taken = {new: old for old, new in renamed.items()}
    clash = sorted(f"{old!r} and {new!r}" for new, old in taken.items() if new in labels)
    if clash or len(taken) < len(renamed):
        raise ReviewError(f"labels {clash or sorted(renamed)} would be one class in labels.csv: rename one of them")
    return renamed


def write_species_names(renamed: dict[str, str], path: Path) -> None:
    """species.csv of the renamed labels (label, scientific_name, common_name), so that a model trained on the
    export keeps each class's name as the reviewed model had it (its aliases, BirdNET's prior)."""
    known = Names.default()

    def scientific(name: str) -> bool:  # a known species' name says which it is ("Great tit" reads as "Genus epithet")
        sp = known.lookup(name)
        return norm_name(sp.common) != norm_name(name) if sp else bool(SCIENTIFIC.match(name))

    rows = [(new, old, "") if scientific(old) else (new, "", old) for old, new in sorted(renamed.items())]
    pd.DataFrame(rows, columns=["label", "scientific_name", "common_name"]).to_csv(path, index=False)


def clip_name(file: str, start_s: float, end_s: float) -> str:
    """A clip's file name: its recording's stem, a short digest of the recording's full path (two recordings of one
    name in different folders stay apart) and its times in milliseconds."""
    digest = hashlib.sha1(file.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{Path(file).stem}-{digest}-{round(start_s * 1000):09d}-{round(end_s * 1000):09d}.wav"


def export_labels(verdicts: pd.DataFrame, folder: str | Path) -> LabelExport:
    """Write the verified clips of `verdicts` (the verdict table) as a labels.csv data set in `folder`, whole or not
    at all (a temporary folder renamed). `folder` must not exist, or be an earlier export (replaced); a ReviewError
    otherwise, or when no clip is left to export. Clips whose recording moved or does not decode are skipped
    (listed in the result)."""
    from birdsed.fsutil import atomic_dir

    folder = Path(folder)
    if folder.exists() and not (folder / MARKER).is_file():
        raise ReviewError(
            f"{folder}: exists and is not an earlier --export-labels folder (no {MARKER}): choose a new folder"
        )
    clips, skipped = clip_labels(verdicts)
    if clips.empty:
        raise ReviewError(
            f"no clip to export: {len(verdicts)} verdict(s), none a yes, no or another species that reviewers agree on"
        )
    names, kept, lost = [], [], list(skipped.itertuples(index=False, name=None))
    with atomic_dir(folder, into_existing=folder.exists()) as tmp:
        (tmp / "audio").mkdir()
        for r in clips.itertuples(index=False):
            try:
                x = excerpt(r.file, r.start_s, r.end_s, context_s=0.0)
            except AudioDecodeError as e:
                lost.append((r.file, r.start_s, r.end_s, str(e)))
                continue
            name = clip_name(r.file, r.start_s, r.end_s)
            sf.write(tmp / "audio" / name, np.clip(x.samples, -1.0, 1.0), x.rate_hz, subtype="PCM_16")
            names.append(name)
            kept.append(r)
        if not kept:
            raise ReviewError(
                f"no clip to export: none of the {len(clips)} verified clips' recordings decodes ({lost[-1][3]})"
            )
        table = pd.DataFrame(kept)
        table.insert(0, "filename", names)
        renamed = spaceless(sorted({lab for ls in table["labels"] for lab in ls}))
        table["labels"] = [" ".join(renamed.get(lab, lab) for lab in ls) for ls in table["labels"]]
        if renamed:
            write_species_names(renamed, tmp / SPECIES_FILE)
        table = table.rename(columns={"file": "source_file"})[list(LABELS_COLUMNS)]
        table.to_csv(tmp / "labels.csv", index=False)
        (tmp / MARKER).write_text(json.dumps({"clips": len(table), "skipped": len(lost)}, indent=1) + "\n")
    positives = int((table["labels"] != "").sum())
    return LabelExport(
        folder, len(table), positives, len(table) - positives, pd.DataFrame(lost, columns=[*CLIP_KEY, "reason"])
    )
