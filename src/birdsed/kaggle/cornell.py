"""Kaggle Cornell Birdcall Identification (2020)'s test side: test.csv (site,row_id,seconds,audio_id; a row is the
5 s ending at `seconds`, or the whole file when it is empty, site 3), its row_id,birds truth and submissions.
(Cornell Birdcall Identification, Kaggle, "Data" and "Evaluation" pages.) BirdCLEF 2021 kept the same rows.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.data.manifest import _float_column, is_inside, read_csv_checked
from birdsed.decisions import NOCALL
from birdsed.errors import ManifestError
from birdsed.rows import ROW_S

log = logging.getLogger(__name__)


def read_kaggle_test(csv_path: str | Path, audio_dir: str | Path | None = None) -> pd.DataFrame:
    """Kaggle test.csv (site,row_id,seconds,audio_id) with a `path` column for each audio_id.

    `seconds` is a float (end of the 5 s row) or NaN for whole-file rows (site 3).
    Audio is found as <audio_dir>/<audio_id>.<any audio extension> (Cornell 2020), else as
    <audio_dir>/<audio_id>_<site>_*.<ext> (BirdCLEF 2021's soundscapes); `path` is "" when absent.
    """
    from birdsed.audio.decode import AUDIO_EXTENSIONS

    csv_path = Path(csv_path)
    df = read_csv_checked(csv_path, ["site", "row_id", "seconds", "audio_id"])
    audio_dir = Path(audio_dir) if audio_dir else csv_path.parent / "test_audio"
    raw = df["seconds"].copy()
    df["seconds"] = _float_column(df, "seconds", csv_path)
    for i, (text, sec, rid) in enumerate(zip(raw, df["seconds"], df["row_id"])):
        if text.strip() and not (0 < sec < 1e7 and float(sec / ROW_S).is_integer()):  # "nan" and "inf" too
            raise ManifestError(
                f"{csv_path}: line {i + 2} (row_id {rid!r}), column 'seconds': {sec!r} is not a whole "
                f"positive multiple of the {ROW_S:g} s row (or empty, for a whole-file row)"
            )
    if df["row_id"].duplicated().any():
        i = int(np.flatnonzero(df["row_id"].duplicated())[0])
        raise ManifestError(f"{csv_path}: line {i + 2}: row_id {df['row_id'].iloc[i]!r} listed twice")
    paths: dict[str, str] = {}
    outside = []
    sites = df.groupby("audio_id", sort=False)["site"].first()
    for aid in df["audio_id"].unique():
        hit = next(
            (audio_dir / f"{aid}{ext}" for ext in AUDIO_EXTENSIONS if (audio_dir / f"{aid}{ext}").is_file()), None
        )
        if hit is None and audio_dir.is_dir():  # BirdCLEF 2021: <audio_id>_<site>_<date>.ogg
            hit = next(
                (
                    q
                    for q in sorted(audio_dir.glob(f"{glob.escape(aid)}_{glob.escape(sites[aid])}_*"))
                    if q.suffix.lower() in AUDIO_EXTENSIONS
                ),
                None,
            )
        if hit is not None and not is_inside(hit, audio_dir):
            outside.append(aid)
            hit = None
        paths[aid] = str(hit.resolve()) if hit else ""
    if outside:
        log.warning(
            "%d audio_id(s) of %s resolve outside %s: refused, never opened, e.g. %s",
            len(outside),
            csv_path,
            audio_dir,
            outside[:3],
        )
    df["path"] = df["audio_id"].map(paths)
    df.attrs["outside"] = outside  # audio_ids refused (predict reports them)
    absent = [a for a, p in paths.items() if not p and a not in outside]
    if absent:
        log.warning("%d audio_id(s) of %s have no file in %s, e.g. %s", len(absent), csv_path, audio_dir, absent[:3])
    return df


def read_truth(csv_path: str | Path) -> dict[str, set[str]]:
    """A `row_id,birds` table (truth or submission) as {row_id: set of labels}; nocall -> empty set."""
    csv_path = Path(csv_path)
    df = read_csv_checked(csv_path, ["row_id", "birds"])
    if df["row_id"].duplicated().any():
        raise ManifestError(f"{csv_path}: row_id listed twice: {df.loc[df['row_id'].duplicated(), 'row_id'].iloc[0]}")
    return {r: {b for b in birds.split() if b != "nocall"} for r, birds in zip(df["row_id"], df["birds"])}


def submission(test: pd.DataFrame, row_birds: dict[tuple[str, float], str], file_birds: dict[str, str]) -> pd.DataFrame:
    """row_id,birds for every row of test.csv, in its order.

    Rows with `seconds` are looked up by (path, seconds - 5); rows without (site 3) take the
    whole-file decision. A row with no prediction (missing or failed audio) is `nocall`.
    """
    birds = []
    for path, sec in zip(test["path"], test["seconds"]):
        if pd.isna(sec):
            birds.append(file_birds.get(path, NOCALL))
        else:
            birds.append(row_birds.get((path, float(sec) - ROW_S), NOCALL))
    return pd.DataFrame({"row_id": test["row_id"].to_numpy(), "birds": birds})
