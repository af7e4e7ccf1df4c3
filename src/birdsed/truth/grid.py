"""Truth lined up with the 5 s rows a prediction scored: one labelled row per scored row of every annotated
recording (events.row_labels), or Kaggle's rows as they come.

The annotations name recordings as their authors did (a full path on another machine, a file name, a stem); each
is matched to one predicted file by, in turn, the same string, the same resolved path, the same file name, the same
stem. An annotated recording with no prediction keeps its rows (scored as nothing found: a miss for each of its
events), counted from its audio's duration when the audio is found (the name, or under audio_dir), else up to its
last event.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from birdsed.config import DEFAULT_MIN_OVERLAP_S
from birdsed.errors import TruthError
from birdsed.kaggle.truth import ROW_COLUMNS
from birdsed.rows import ROW_S, n_rows
from birdsed.truth import Truth
from birdsed.truth.events import past_end, row_labels


@dataclass
class TruthRows:
    rows: pd.DataFrame  # kaggle.ROW_COLUMNS; a row's file as the prediction names it when predicted
    events: pd.DataFrame | None = None  # the events used, their `file` as the prediction names it (None: row truth)
    not_predicted: list[str] = field(default_factory=list)  # annotated recordings with no prediction
    past_end: list[str] = field(default_factory=list)  # events beginning after their recording's end (not used)


def match_names(
    names: list[str], predicted: list[str], ambiguous: dict[str, list[str]] | None = None
) -> dict[str, str]:
    """{annotation's name: predicted file} for the names that match one predicted file (module docstring);
    a name matching several predicted files at one step is an error naming them, or, given `ambiguous`, put there
    (name -> the files) and left out."""
    # a Windows path (Raven's Begin Path on another machine) has its name after the last backslash
    keys = (
        lambda f: f,
        lambda f: str(Path(f).resolve()),
        lambda f: Path(f.replace("\\", "/")).name,
        lambda f: Path(f.replace("\\", "/")).stem,
    )
    index = [defaultdict(list) for _ in keys]
    for f in predicted:
        for idx, key in zip(index, keys):
            idx[key(f)].append(f)
    out = {}
    for name in names:
        for idx, key in zip(index, keys):
            hits = idx.get(key(name), [])
            if len(hits) > 1 and ambiguous is not None:
                ambiguous[name] = hits
                break
            if len(hits) > 1:
                raise TruthError(f"annotated recording {name!r} matches several predicted files: {hits[:3]}")
            if hits:
                out[name] = hits[0]
                break
    return out


def _duration(name: str, events: pd.DataFrame, audio_dir: Path | None) -> float:
    candidates = [Path(name)] + (
        [audio_dir / Path(name).name, *sorted(audio_dir.glob(Path(name).stem + ".*"))] if audio_dir else []
    )
    for c in candidates:
        if c.is_file():
            try:
                return float(sf.info(str(c)).duration)
            except (RuntimeError, sf.LibsndfileError):
                continue
    return float(events["end_s"].max()) if len(events) else ROW_S


def truth_rows(
    truth: Truth,
    scored: pd.DataFrame,
    min_overlap_s: float = DEFAULT_MIN_OVERLAP_S,
    audio_dir: str | Path | None = None,
) -> TruthRows:
    """scored: file, start_s, end_s of the rows of one output kind of a scores table."""
    if truth.is_rows:
        return TruthRows(truth.rows)
    if min_overlap_s <= 0 or min_overlap_s > ROW_S:
        raise TruthError(f"--min-overlap-s must be in (0, {ROW_S:g}], got {min_overlap_s}")
    ev = truth.events
    names = sorted(set(truth.covered) | set(ev["file"]))
    matched = match_names(names, list(dict.fromkeys(scored["file"])))
    grid = {f: (g["start_s"].to_numpy(float), float(g["end_s"].max())) for f, g in scored.groupby("file", sort=False)}
    by_name = dict(tuple(ev.groupby("file", sort=False))) if len(ev) else {}
    rows, used, late, not_predicted = [], [], [], []
    for name in names:
        e = by_name.get(name, ev.iloc[:0])
        if name in matched:
            f = matched[name]
            starts, duration = grid[f]
        else:
            f = name
            duration = _duration(name, e, Path(audio_dir) if audio_dir else None)
            starts = np.arange(n_rows(duration)) * ROW_S
            not_predicted.append(name)
        beyond = past_end(e, duration)
        late += list(e.loc[beyond, "where"])
        e = e[~beyond]
        # as many rows as were scored: a folder scored before a short tail was the last row's has a row for it
        labels = row_labels(e, max(n_rows(duration), len(starts)), min_overlap_s)
        for s in starts:
            r = int(round(s / ROW_S))
            rows.append((f"{f}@{s:g}", f, float(s), labels[r] if r < len(labels) else set()))
        used.append(e.assign(file=f))
    events = pd.concat(used, ignore_index=True) if used else ev.iloc[:0]
    return TruthRows(pd.DataFrame(rows, columns=ROW_COLUMNS), events, not_predicted, late)
