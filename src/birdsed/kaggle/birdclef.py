"""BirdCLEF's test side, 2021-2025: the submissions the competitions take and the metrics they were scored by.

- 2021: one row per 5 s of each test soundscape, `row_id,birds` (species codes or "nocall"), scored by row-wise
  micro F1 as Cornell 2020 was; its test.csv (row_id,site,audio_id,seconds) names soundscapes
  <audio_id>_<site>_<date>.ogg. (BirdCLEF 2021, Kaggle, "Data" and "Evaluation" pages.)
- 2023, 2024, 2025: one row per 5 s of each soundscape in test_soundscapes/, `row_id` = "<soundscape stem>_<end s>",
  then one probability column per class in sample_submission.csv's order. 2023 was scored by padded cmAP: five
  rows of all-positive truth and all-one scores appended, then macro AP over every class (sklearn's
  average_precision_score, average="macro"); 2024 and 2025 by macro ROC-AUC over the classes with at least one
  positive row. Submissions run in a CPU-only notebook under a time limit (benchmarks/bench_birdclef.py measures
  against BirdCLEF 2024's 120 minutes). (BirdCLEF 2023, 2024, 2025 on Kaggle, "Evaluation" pages; the 2023 metric
  notebook "birdclef-2023-metric"; HawkEars' core/metrics.py keeps the same padding.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from birdsed.errors import BirdsedError
from birdsed.rows import ROW_S


def competition_inputs(competition: str, inputs: list[str]) -> tuple[list[str], Path | None, Path | None, Path | None]:
    """predict --competition: (inputs, test_csv, audio_dir, sample_submission) from the competition's data folder
    (the one input): test_soundscapes/ and sample_submission.csv, or for 2021 test.csv and test_soundscapes/."""
    if len(inputs) != 1 or not Path(inputs[0]).is_dir():
        raise BirdsedError(
            f"--competition {competition}: give the competition's data folder as the one input, got {inputs}"
        )
    folder = Path(inputs[0])
    soundscapes = folder / "test_soundscapes"
    if competition == "birdclef2021":
        if not (folder / "test.csv").is_file():
            raise BirdsedError(f"{folder}: no test.csv (BirdCLEF 2021 lists its test rows there)")
        return [], folder / "test.csv", soundscapes, None
    sample = folder / "sample_submission.csv"
    if not sample.is_file():
        raise BirdsedError(f"{folder}: no sample_submission.csv (its columns give the classes and their order)")
    if not soundscapes.is_dir():
        raise BirdsedError(f"{folder}: no test_soundscapes/ folder")
    return [str(soundscapes)], None, None, sample


def sample_columns(sample_csv: str | Path) -> list[str]:
    """The class columns of a sample_submission.csv, in its order (row_id first, then the classes)."""
    path = Path(sample_csv)
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise BirdsedError(f"{path}: not a readable sample submission ({e})") from e
    if not header or header[0] != "row_id" or len(header) < 2:
        raise BirdsedError(
            f"{path}: a sample submission starts with row_id, then one column per class; got {header[:5]}"
        )
    return header[1:]


def row_id(file: str, start_s: float) -> str:
    """BirdCLEF 2023-2025's row id: the soundscape's stem and the row's end in whole seconds."""
    return f"{Path(file).stem}_{int(round(start_s + ROW_S))}"


def probability_submission(
    rows: pd.DataFrame, classes: list[str], columns: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """rows: predict's scores of one output kind (file, start_s, one column per model class) -> (the submission:
    row_id, then `columns` in order; the columns the model does not know, filled with 0)."""
    # by time within each recording, the recordings in the order they come (a batch of them, in predict's order)
    rows = rows.iloc[np.lexsort((rows["start_s"].to_numpy(), pd.factorize(rows["file"])[0]))]
    unknown = [c for c in columns if c not in classes]
    out = pd.DataFrame({"row_id": [row_id(f, s) for f, s in zip(rows["file"], rows["start_s"])]})
    known = [c for c in columns if c in classes]
    values = pd.DataFrame(rows[known].to_numpy(np.float32), columns=known).reindex(columns=columns, fill_value=0.0)
    return pd.concat([out, values], axis=1), unknown


def padded_cmap(true: np.ndarray, scores: np.ndarray, padding: int = 5) -> float:
    """BirdCLEF 2023's metric: macro AP over every class after `padding` rows of all ones in truth and scores."""
    from sklearn.metrics import average_precision_score

    ones = np.ones((padding, true.shape[1]))
    return float(average_precision_score(np.vstack([true, ones]), np.vstack([scores, ones]), average="macro"))


def macro_roc_auc(true: np.ndarray, scores: np.ndarray) -> float:
    """BirdCLEF 2024-2025's metric: ROC-AUC averaged over the classes with at least one positive row (NaN when
    none has one, or every row of each is positive)."""
    from sklearn.metrics import roc_auc_score

    keep = [k for k in range(true.shape[1]) if 0 < true[:, k].sum() < len(true)]
    if not keep:
        return float("nan")
    return float(np.mean([roc_auc_score(true[:, k], scores[:, k]) for k in keep]))
