"""Raven and files (issue 36 item 5): hidden and AppleDouble files in input folders, Raven's High Freq within the
recording's Nyquist frequency, per-recording Raven tables that name their sound."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli, write_audio

from birdsed.audio.decode import find_audio_files
from birdsed.infer.writers import RAVEN_HIGH_HZ, RavenWriter, Target, raven_high_hz


def _folder_with_hidden(root: Path) -> Path:
    write_audio(root / "a.wav")
    (root / "._a.mp3").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # macOS AppleDouble sidecar
    write_audio(root / ".b.wav")
    write_audio(root / ".cache" / "c.wav")
    return root


def test_hidden_and_appledouble_files_in_a_folder_are_skipped_and_said(tmp_path, caplog):
    root = _folder_with_hidden(tmp_path / "in")
    with caplog.at_level(logging.INFO, logger="birdsed.audio.decode"):
        assert find_audio_files([root]) == [root / "a.wav"]
    assert "skipped 3 hidden / AppleDouble files" in caplog.text


def test_a_hidden_file_named_itself_is_listed(tmp_path):
    root = _folder_with_hidden(tmp_path / "in")
    assert find_audio_files([root / ".b.wav"]) == [root / ".b.wav"]


def test_predict_over_a_folder_with_appledouble_sidecars_exits_0(capsys, model_dir, tmp_path):
    root = _folder_with_hidden(tmp_path / "in")
    rc, text = run_cli(capsys, "predict", "--model", model_dir, root, "--out", tmp_path / "out")
    assert rc == 0, text
    files = pd.read_parquet(tmp_path / "out" / "scores.parquet", columns=["file"])["file"].unique()
    assert [Path(f).name for f in files] == ["a.wav"]


EVENTS = pd.DataFrame({"start_s": [0.0, 5.0], "end_s": [5.0, 10.0], "label": ["x", "y"], "score": [0.9, 0.8]})


@pytest.mark.parametrize(("rate", "high_hz"), [(22050, 11025.0), (16000, 8000.0), (32000, RAVEN_HIGH_HZ)])
def test_raven_high_freq_is_at_most_the_recording_nyquist(tmp_path, rate, high_hz):
    rec = write_audio(tmp_path / "r.wav", rate=rate)
    path = tmp_path / "raven" / "r.Table.1.selections.txt"
    w = RavenWriter()
    w.start(Target(tmp_path, ["x", "y"], [str(rec)]))
    w.write(EVENTS, path, str(rec))
    table = pd.read_csv(path, sep="\t")
    assert (table["High Freq (Hz)"] == high_hz).all()
    assert (table["High Freq (Hz)"] > table["Low Freq (Hz)"]).all()


def test_raven_high_freq_of_a_recording_gone_keeps_the_default(tmp_path):
    assert raven_high_hz(tmp_path / "moved.wav") == RAVEN_HIGH_HZ


def test_raven_tables_of_recordings_sharing_a_name_each_name_their_sound(capsys, model_dir, tmp_path):
    recs = [write_audio(tmp_path / "in" / d / "a.wav", seconds=s) for d, s in (("one", 5.0), ("two", 10.0))]
    rc, text = run_cli(
        capsys, "predict", "--model", model_dir, tmp_path / "in", "--out", tmp_path / "out", "--format", "raven",
        "--threshold", "0",
    )  # fmt: skip
    assert rc == 0, text
    tables = sorted((tmp_path / "out" / "raven").glob("*.Table.1.selections.txt"))
    assert len(tables) == 2
    paths = set()
    for t in tables:
        table = pd.read_csv(t, sep="\t")
        assert len(table) and table["Begin Path"].nunique() == 1
        assert (table["Begin File"] == "a.wav").all()
        assert (table["File Offset (s)"] == table["Begin Time (s)"]).all()
        paths.add(table["Begin Path"].iloc[0])
    assert paths == {str(r.resolve()) for r in recs}
    # the truth reader takes each table's recording from the table, not from the table's (keyed) name
    from birdsed.truth import load_truth

    truth = load_truth(tmp_path / "out" / "raven")
    ends = truth.events.groupby("file")["end_s"].max()
    assert {Path(f).parent.name: e for f, e in ends.items()} == {"one": 5.0, "two": 10.0}


def test_one_raven_table_of_every_recording_opens_them_in_sequence(capsys, model_dir, tmp_path):
    """--format raven-all: raven.selections.txt, Begin Time counted from the first recording's start (Raven plays the
    sounds of Begin Path one after the other), File Offset within each; read back, the same events as raven/."""
    for d, s in (("one", 5.0), ("two", 10.0), ("three", 7.5)):
        write_audio(tmp_path / "in" / d / "a.wav", seconds=s)
    rc, text = run_cli(
        capsys, "predict", "--model", model_dir, tmp_path / "in", "--out", tmp_path / "out", "--format", "raven",
        "raven-all", "--threshold", "0",
    )  # fmt: skip
    assert rc == 0, text
    table = pd.read_csv(tmp_path / "out" / "raven.selections.txt", sep="\t")
    assert table["Selection"].tolist() == list(range(1, len(table) + 1))
    start_s = {"one": 0.0, "three": 5.0, "two": 12.5}  # the recordings in order: one, three, two
    folder = table["Begin Path"].map(lambda p: Path(p).parent.name)
    assert (table["Begin Time (s)"] - table["File Offset (s)"] == folder.map(start_s)).all()
    from birdsed.truth import load_truth

    def events(path: Path) -> pd.DataFrame:
        e = load_truth(path).events[["file", "start_s", "end_s", "label"]]
        return e.sort_values(["file", "start_s", "label"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(events(tmp_path / "out" / "raven.selections.txt"), events(tmp_path / "out" / "raven"))


def test_one_raven_table_of_no_recording_is_its_header(tmp_path):
    from birdsed.infer.writers import CombinedRavenWriter, Target

    with CombinedRavenWriter() as w:
        w.start(Target(tmp_path, ["x"], []))
        w.close()
    assert (tmp_path / "raven.selections.txt").read_text().split("\n")[0].split("\t")[7:10] == [
        "Begin Path",
        "File Offset (s)",
        "Begin File",
    ]
