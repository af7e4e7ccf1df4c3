"""BirdCLEF's test side (birdsed.kaggle.birdclef): submissions in the sample's layout and the competitions' metrics,
each against an independent computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from birdsed.errors import BirdsedError
from birdsed.kaggle.birdclef import macro_roc_auc, padded_cmap, probability_submission, row_id, sample_columns


def test_padded_cmap_by_hand():
    """One class, rows (score, truth): (0.9, 1), (0.2, 0), plus 5 padded rows (1, 1). Ranked: the 5 padded ties at 1
    first, then 0.9 (positive), then 0.2 (negative): precision 1 at every positive -> AP 1. A second class whose
    one positive scores lowest: ranked pads (5 positives), 0.9 negative, 0.2 positive; AP = (5 * 1 + 6/7) / 6."""
    true = np.array([[1, 0], [0, 1]])
    scores = np.array([[0.9, 0.9], [0.2, 0.2]])
    assert padded_cmap(true, scores) == pytest.approx((1.0 + (5 + 6 / 7) / 6) / 2)
    # a class with no positive is scored (the padding gives it five), unlike plain macro AP
    true0 = np.array([[1, 0], [0, 0]])
    assert padded_cmap(true0, scores) == pytest.approx(
        np.mean([average_precision_score(np.r_[true0[:, k], [1] * 5], np.r_[scores[:, k], [1] * 5]) for k in range(2)])
    )


def test_macro_roc_auc_skips_classes_without_a_positive():
    rng = np.random.default_rng(0)
    true = (rng.random((40, 4)) < 0.3).astype(int)
    true[:, 2] = 0  # no positive: skipped
    scores = rng.random((40, 4))
    expected = np.mean([roc_auc_score(true[:, k], scores[:, k]) for k in (0, 1, 3)])
    assert macro_roc_auc(true, scores) == pytest.approx(expected)
    assert np.isnan(macro_roc_auc(np.zeros((3, 2)), np.ones((3, 2))))


def test_the_submission_follows_the_sample_columns(tmp_path):
    (tmp_path / "sample_submission.csv").write_text("row_id,zeb,amb,unk\nsoundscape_1_5,0,0,0\n")
    cols = sample_columns(tmp_path / "sample_submission.csv")
    assert cols == ["zeb", "amb", "unk"]
    rows = pd.DataFrame(
        {
            "file": ["/t/s2.ogg", "/t/s1.ogg", "/t/s1.ogg"],
            "start_s": [0.0, 5.0, 0.0],
            "amb": [0.1, 0.2, 0.3],
            "zeb": [0.7, 0.8, 0.9],
            "extra": [0.5, 0.5, 0.5],
        }
    )
    sub, unknown = probability_submission(rows, ["amb", "zeb", "extra"], cols)
    assert list(sub.columns) == ["row_id", "zeb", "amb", "unk"] and unknown == ["unk"]
    assert list(sub["row_id"]) == ["s2_5", "s1_5", "s1_10"]  # by time in each recording, recordings as they come
    assert list(sub["zeb"]) == pytest.approx([0.7, 0.9, 0.8]) and (sub["unk"] == 0).all()
    assert row_id("a/b/XC9.ogg", 55.0) == "XC9_60"
    (tmp_path / "bad.csv").write_text("id,x\n")
    with pytest.raises(BirdsedError, match="starts with row_id"):
        sample_columns(tmp_path / "bad.csv")


def test_predict_competition_writes_the_sample_layout_and_2021_rows(synth_data, tmp_path):
    import shutil

    from conftest import tiny_model

    from birdsed.cli import main
    from birdsed.data.manifest import read_dataset

    classes = read_dataset(synth_data).classes
    model = tiny_model(tmp_path / "m", classes)
    comp = tmp_path / "birdclef-2024"
    shutil.copytree(synth_data / "test_audio", comp / "test_soundscapes")
    (comp / "sample_submission.csv").write_text("row_id," + ",".join(reversed(classes)) + ",zzz\n")
    argv = [
        "predict",
        "--model",
        str(model),
        str(comp),
        "--competition",
        "birdclef2024",
        "--out",
        str(tmp_path / "p"),
        "--workers",
        "0",
        "--quiet",
    ]
    assert main(argv) == 0
    sub = pd.read_csv(tmp_path / "p" / "submission.csv")
    assert list(sub.columns) == ["row_id", *reversed(classes), "zzz"]
    n_rows = sum(int(np.ceil(30.0 / 5)) for _ in (comp / "test_soundscapes").iterdir())
    assert len(sub) == n_rows and sub["row_id"].is_unique and sub[classes].to_numpy().max() <= 1
    # 2021: test.csv (row_id,site,audio_id,seconds) naming <audio_id>_<site>_<date>.ogg soundscapes
    c21 = tmp_path / "birdclef-2021"
    (c21 / "test_soundscapes").mkdir(parents=True)
    first = sorted((synth_data / "test_audio").iterdir())[0]
    shutil.copy(first, c21 / "test_soundscapes" / f"{first.stem}_COR_20190904.mp3")
    pd.DataFrame(
        {
            "row_id": [f"{first.stem}_COR_{s}" for s in (5, 10)],
            "site": "COR",
            "audio_id": first.stem,
            "seconds": [5, 10],
        }
    ).to_csv(c21 / "test.csv", index=False)
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                str(c21),
                "--competition",
                "birdclef2021",
                "--out",
                str(tmp_path / "p21"),
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    s21 = pd.read_csv(tmp_path / "p21" / "submission.csv")
    assert list(s21.columns) == ["row_id", "birds"] and list(s21["row_id"]) == [
        f"{first.stem}_COR_{s}" for s in (5, 10)
    ]
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                str(tmp_path),
                "--competition",
                "birdclef2023",
                "--out",
                str(tmp_path / "p23"),
                "--quiet",
            ]
        )
        == 2
    )  # no sample_submission.csv: refused, naming it
