"""Absurd values on the command line of the verbs that are not predict or train (issue 40, items 12, 13, 16, 20), odd
class names in `report`, and the small debts of issue 39 (a preset path that is not a file, the reference's keys in
`evaluate --json`). Each refused value: exit 2, the option named, no traceback, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdsed.cli import main
from birdsed.config import OUTPUT_KINDS
from birdsed.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def predict_folder(folder: Path, classes: list[str], seconds: float = 7.0, n_files: int = 1) -> Path:
    """What `predict --out folder` leaves for `report` and `evaluate`: recordings of noise, scores.parquet with two
    rows per recording and output, and one detection per class."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, detections = [], []
    for i in range(n_files):
        wav = folder / f"rec{i}.wav"
        sf.write(wav, rng.normal(0, 0.1, int(32000 * seconds)).astype("float32"), 32000)
        for output in OUTPUT_KINDS:
            rows += [
                {"file": str(wav), "start_s": s, "end_s": s + 5, "output": output, **{c: 0.9 for c in classes}}
                for s in (0.0, 5.0)
            ]
        detections += [{"file": str(wav), "start_s": 0.0, "end_s": 5.0, "label": c, "score": 0.9} for c in classes]
    pd.DataFrame(rows).to_parquet(folder / "scores.parquet")
    pd.DataFrame(detections).to_csv(folder / "detections.csv", index=False)
    return folder


def refused(capsys, argv: list[str]) -> str:
    """Run the CLI on argv: it must exit 2 without a traceback; returns what it printed."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert e.value.code == 2, text
    assert "Traceback" not in text
    return text


VALUE_CASES = [
    # report: 0 and nan pages were tracebacks, -1 drew no pictures, 0.001 hung; nan/inf minutes, -1 recordings
    (["report", "{d}"], "--page-s", ["0", "nan", "-1", "0.001", "inf"]),
    (["report", "{d}"], "--max-minutes", ["nan", "inf", "0", "-1", "1e9"]),
    (["report", "{d}"], "--max-recordings", ["-1", "1.5", "x"]),
    (["report", "{d}"], "--review-port", ["0", "70000", "x"]),
    (["report", "{d}"], "--min-overlap-s", ["nan", "0", "6"]),
    (["tune", "--model", "{d}", "--scores", "{d}/s.parquet", "--truth", "{d}/t.csv"], "--shrink", ["-1", "nan", "inf"]),
    (["evaluate", "--scores", "{d}/s.parquet", "--truth", "{d}/t.csv"], "--min-overlap-s", ["nan", "-1", "inf"]),
    (["synth", "{d}/synth"], "--soundscape-s", ["1e9", "0", "nan", "-5"]),
    (["synth", "{d}/synth"], "--species", ["0", "-3", "1e6", "100000"]),
    (["synth", "{d}/synth"], "--clips-per-species", ["0", "-1"]),
    (["synth", "{d}/synth"], "--soundscapes", ["0", "-1"]),
    (["synth", "{d}/synth"], "--min-clip-s", ["0", "inf", "nan"]),
    (["synth", "{d}/synth"], "--max-clip-s", ["-1", "1e9"]),
    (["synth", "{d}/synth"], "--seed", ["-1", "99999999999999999999"]),
    (["synth", "{d}/synth"], "--soundscape-seed", ["-1", "99999999999999999999"]),
    (["synth", "{d}/synth"], "--soundscape-rate", ["0", "-32000", "1e9"]),
    (["synth", "{d}/synth"], "--shift", ["nan", "-1", "3"]),
    (["demo", "--out", "{d}/demo"], "--species", ["0", "-1"]),
    (["demo", "--out", "{d}/demo"], "--clips-per-species", ["0"]),
    (["demo", "--out", "{d}/demo"], "--seed", ["-5"]),
    (["prepare", "{d}", "--out", "{d}/store"], "--workers", ["-1", "10000"]),
    (["birdnet", "init", "--out", "{d}/bn"], "--hop-s", ["0", "nan", "1e-6", "inf"]),
    (["birdnet", "init", "--out", "{d}/bn"], "--sensitivity", ["0", "9", "nan"]),
    (["birdnet", "init", "--out", "{d}/bn"], "--threshold", ["2", "-1", "nan", "0", "1"]),
]


@pytest.mark.parametrize(
    ("argv", "option", "value"),
    [(argv, option, value) for argv, option, values in VALUE_CASES for value in values],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_an_absurd_value_is_refused_naming_the_option(tmp_path, capsys, argv, option, value):
    text = refused(capsys, [a.format(d=tmp_path) for a in argv] + [option, value])
    assert f"argument {option}" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("weights", [["1e308", "1e308"], ["-1", "1"], ["nan", "1"]])
def test_ensemble_weights_are_finite_and_bounded(tmp_path, capsys, weights):
    text = refused(
        capsys,
        ["ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "e")]
        + [
            "--weights",
            *weights,
        ],
    )
    assert "argument --weights" in text and not (tmp_path / "e").exists()


# --- report: what the data says is drawn as written, and what it draws is bounded ------------------------------------

ODD_CLASSES = ["a$\\foo$b", "", "_x", "NA", "$x^2$", "<b>&"]


def test_report_draws_any_class_name_as_written(tmp_path, capsys):
    pred = predict_folder(tmp_path / "pred", ODD_CLASSES)
    assert main(["report", str(pred)]) == 0, capsys.readouterr()
    page = (pred / "report.html").read_text()
    assert "a$\\foo$b" in page and "$x^2$" in page and "&lt;b&gt;&amp;" in page and "<b>&" not in page
    summary = page.split("Detections per class", 1)[1].split("</table>", 1)[0]
    assert summary.count("<tr>") == len(ODD_CLASSES)  # one row a class: the empty, "NA" and "_x" ones kept
    assert page.count("<img") == 1  # one recording of 7 s: one page of 60 s


def test_report_pictures_are_bounded_and_the_page_says_what_was_left_out(tmp_path, capsys, monkeypatch):
    import birdsed.evaluate.report as report

    monkeypatch.setattr(report, "REPORT_MAX_PICTURES", 5)
    pred = predict_folder(tmp_path / "pred", ["a"], seconds=7.0, n_files=3)
    assert main(["report", str(pred), "--page-s", "2"]) == 0, capsys.readouterr()
    page = (pred / "report.html").read_text()
    assert page.count("<img") == 5
    assert "3 page(s) not drawn" in page and "1 recording(s) not drawn" in page
    assert "at most" in page


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"page_s": 0.001}, "page_s"),
        ({"page_s": float("nan")}, "page_s"),
        ({"max_minutes": float("inf")}, "max_minutes"),
        ({"max_recordings": -1}, "max_recordings"),
    ],
)
def test_build_report_refuses_absurd_pages_before_reading_anything(tmp_path, kw, message):
    from birdsed.evaluate.report import build_report

    with pytest.raises(ConfigError, match=message):
        build_report(tmp_path / "no-such-folder", **kw)


# --- tune, synth: the library checks what the CLI's types check -----------------------------------------------------


@pytest.mark.parametrize("shrink", [-1.0, float("nan"), float("inf")])
def test_tune_refuses_a_negative_or_non_finite_shrink(tmp_path, shrink):
    from birdsed.evaluate.tune import tune_model

    with pytest.raises(ConfigError, match="shrink"):
        tune_model(tmp_path / "model", shrink=shrink)


def test_synth_refuses_a_shortest_clip_above_the_longest(tmp_path, capsys):
    rc = main(["synth", str(tmp_path / "s"), "--min-clip-s", "10", "--max-clip-s", "5"])
    assert rc == 2 and "min_clip_s 10 is above max_clip_s 5" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


# --- issue 39's debts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["some/dir/small.yaml", "small.yaml", "./small", "configs/small.yaml"])
def test_a_config_path_that_is_not_a_file_is_an_error_never_the_preset(tmp_path, capsys, monkeypatch, path):
    from birdsed.config import load_config

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"config {path}: no such file$"):
        load_config(path)
    rc = main(["train", "--data", str(tmp_path), "--config", path, "--out", str(tmp_path / "run")])
    assert rc == 2 and f"config {path}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_bare_name_is_a_preset_and_a_yaml_file_is_read(tmp_path):
    from birdsed.config import load_config

    assert load_config("small").to_dict() != load_config(None).to_dict()
    (tmp_path / "small.yaml").write_text("train:\n  epochs: 3\n")
    assert load_config(tmp_path / "small.yaml").train.epochs == 3


def test_the_repository_has_no_broken_symlinks():
    broken = [p.name for p in REPO.iterdir() if p.is_symlink() and not p.exists()]
    assert broken == []


def test_evaluate_json_names_the_reference_not_the_seed(tmp_path, capsys):
    pred = predict_folder(tmp_path / "pred", ["a", "b"])
    (tmp_path / "truth.csv").write_text("file,start_s,end_s,label\nrec0.wav,1.0,2.0,a\n")
    rc = main(["evaluate", "--scores", str(pred / "scores.parquet"), "--truth", str(tmp_path / "truth.csv"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["outputs"]  # every output shown (one when the three are equal)
    for output in report["outputs"]:
        keys = set(report["outputs"][output])
        assert {"reference_threshold", "reference_row_f1"} <= keys
        assert not [k for k in keys if k.startswith("seed")]


def test_a_table_with_a_column_twice_is_refused_naming_it(tmp_path, capsys):
    """labels.csv with two `labels` columns (pandas reads the second as `labels.1` and the reader used the first)."""
    from conftest import run_cli, write_audio

    from birdsed.data.manifest import read_dataset
    from birdsed.errors import ManifestError, TruthError
    from birdsed.truth.formats import Table

    write_audio(tmp_path / "ds" / "audio" / "a.wav", seconds=1.0)
    (tmp_path / "ds" / "labels.csv").write_text("filename,labels,labels\na.wav,x,y\n")
    with pytest.raises(ManifestError, match=r"\['labels'\] appear more than once"):
        read_dataset(tmp_path / "ds")
    rc, text = run_cli(capsys, "prepare", tmp_path / "ds", "--out", tmp_path / "st")
    assert rc == 2 and "more than once" in text and not (tmp_path / "st").exists(), text
    table = tmp_path / "events.csv"
    table.write_text("file,start_s,end_s,label,label\na.wav,0,1,x,y\n")
    with pytest.raises(TruthError, match="more than once"):
        Table.read(table)
