"""Names, places and times through `predict` and `summary` (issue #36 items 1 and 3): detections.csv, Raven,
Audacity and recordings.csv carry them; `summary --by day|hour|site` works from them; bad input is refused before
anything is written, or said while the run goes on."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli, tiny_model, write_audio

SITES = "pattern,site,lat,lon,timezone\nsiteA,A,43.61,3.87,Europe/Paris\nsiteB,B,37.77,-122.42,America/Los_Angeles\n"


@pytest.fixture(scope="module")
def bird_model(tmp_path_factory) -> Path:
    """A tiny untrained model whose classes are eBird codes (names known) and one of a data set's own."""
    return tiny_model(tmp_path_factory.mktemp("birds") / "m", ["woothr", "amecro", "Mycall_1"])


def _archive(root: Path) -> Path:
    """Two sites' recorders: AudioMoth names under siteA, Song Meter names under siteB, 7 s each."""
    write_audio(root / "siteA" / "20230615_053000.WAV", seconds=7.0)
    write_audio(root / "siteB" / "SMM01234_20230616_220000.wav", seconds=7.0)
    return root


def _predict(capsys, model: Path, tmp_path: Path, *extra) -> tuple[int, str, Path]:
    out = tmp_path / "out"
    rc, text = run_cli(
        capsys, "predict", "--model", model, _archive(tmp_path / "in"), "--out", out, "--threshold", "0", *extra
    )
    return rc, text, out


def test_predict_with_a_sites_table_writes_names_places_and_local_times(capsys, bird_model, tmp_path):
    sites = tmp_path / "sites.csv"
    sites.write_text(SITES)
    rc, text, out = _predict(
        capsys, bird_model, tmp_path, "--sites", sites, "--format", "csv", "raven", "raven-all", "audacity"
    )
    assert rc == 0, text
    det = pd.read_csv(out / "detections.csv", keep_default_na=False)
    a = det[(det["site"] == "A") & (det["label"] == "woothr")].sort_values("start_s")
    assert list(a["time"]) == ["2023-06-15T05:30:00+02:00", "2023-06-15T05:30:05+02:00"]
    assert (a["common"] == "Wood Thrush").all() and (a["scientific"] == "Hylocichla mustelina").all()
    assert set(a["lat"]) == {43.61} and set(a["lon"]) == {3.87}
    b = det[det["site"] == "B"]
    assert b["time"].str.startswith("2023-06-16T22:00:0").all() and b["time"].str.endswith("-07:00").all()
    own = det[det["label"] == "Mycall_1"]
    assert (own["code"] == "Mycall_1").all() and (own["common"] == "").all()  # a data set's own class: no names
    rec = pd.read_csv(out / "recordings.csv", keep_default_na=False).set_index("site")
    assert rec.loc["A", "start"] == "2023-06-15T05:30:00+02:00" and rec.loc["B", "timezone"] == "America/Los_Angeles"
    raven = pd.read_csv(next((out / "raven").glob("2023*.txt")), sep="\t", keep_default_na=False)
    assert list(raven["Species"].unique()) != [] and set(raven["Species"]) <= {"woothr", "amecro", "Mycall_1"}
    assert set(raven.loc[raven["Species"] == "amecro", "Common Name"]) == {"American Crow"}
    assert (raven["Site"] == "A").all() and raven["Begin Date Time"].str.endswith("+02:00").all()
    combined = pd.read_csv(out / "raven.selections.txt", sep="\t", keep_default_na=False)
    assert set(combined["Site"]) == {"A", "B"}

    for by, groups in (("site", {"A", "B"}), ("day", {"2023-06-15", "2023-06-16"}), ("hour", {"05", "22"})):
        rc, text = run_cli(capsys, "summary", out, "--by", by, "--threshold", "0", "--out", tmp_path / f"{by}.csv")
        assert rc == 0, text
        assert set(pd.read_csv(tmp_path / f"{by}.csv", dtype=str)[by]) == groups


def test_predict_names_chooses_what_ravens_species_column_and_audacity_show(capsys, bird_model, tmp_path):
    rc, text, out = _predict(capsys, bird_model, tmp_path, "--names", "common", "--format", "raven", "audacity")
    assert rc == 0, text
    raven = pd.read_csv(next((out / "raven").glob("2023*.txt")), sep="\t", keep_default_na=False)
    assert {"Wood Thrush", "American Crow", "Mycall_1"} == set(raven["Species"])  # unknown names: the class
    assert set(raven["Species Code"]) == {"woothr", "amecro", "Mycall_1"}
    assert "Wood Thrush (" in next((out / "audacity").glob("2023*.txt")).read_text()


def test_predict_without_places_reads_the_names_times_in_utc_and_says_so(capsys, bird_model, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        rc, text, out = _predict(capsys, bird_model, tmp_path)
    assert rc == 0, text
    assert "2 recording(s): start times read from the names as UTC" in caplog.text
    rec = pd.read_csv(out / "recordings.csv", keep_default_na=False)
    assert set(rec["start"]) == {"2023-06-15T05:30:00+00:00", "2023-06-16T22:00:00+00:00"}
    assert set(rec["site"]) == {""}


@pytest.mark.parametrize("zone", ["+02:00", "-03:00"])
def test_an_offset_time_zone_and_a_southern_site_read_back_in_summary(capsys, bird_model, tmp_path, zone):
    """--timezone +02:00 (the README's form): recordings.csv holds it spreadsheet-safe ("'+02:00"), and summary
    refused its own table ("time zone "'+02:00" does not exist"). "--site -33.9,151.2" and "--timezone -03:00" were
    argparse's "expected one argument" (a value starting with "-")."""
    rc, text, out = _predict(capsys, bird_model, tmp_path, "--timezone", zone, "--site", "-33.9,151.2")
    assert rc == 0, text
    rec = pd.read_csv(out / "recordings.csv", keep_default_na=False)
    assert set(rec["lat"]) == {-33.9} and set(rec["timezone"]) == {"'" + zone}
    rc, text = run_cli(capsys, "summary", out, "--by", "hour")
    assert rc == 0, text
    assert f"2023-06-15T05:30:00{zone}" in text and f"2023-06-16T22:00:00{zone}" in text, text


def test_a_name_whose_time_does_not_parse_is_said_and_the_run_goes_on(capsys, bird_model, tmp_path, caplog):
    write_audio(tmp_path / "in" / "siteA" / "dawn chorus.wav", seconds=3.0)
    with caplog.at_level(logging.WARNING):
        rc, text, out = _predict(capsys, bird_model, tmp_path, "--timezone", "Europe/Paris")
    assert rc == 0, text
    assert "1 recording(s) (dawn chorus.wav): no start time in the name (YYYYMMDD_HHMMSS)" in caplog.text
    det = pd.read_csv(out / "detections.csv", keep_default_na=False)
    assert (det.loc[det["file"].str.endswith("dawn chorus.wav"), "time"] == "").all()
    assert (det.loc[det["file"].str.endswith(".WAV"), "time"] != "").all()


def test_a_sites_pattern_matching_no_recording_is_said(capsys, bird_model, tmp_path, caplog):
    sites = tmp_path / "sites.csv"
    sites.write_text(SITES + "siteC,C,1,2,UTC\n")
    with caplog.at_level(logging.WARNING):
        rc, text, _ = _predict(capsys, bird_model, tmp_path, "--sites", sites)
    assert rc == 0, text
    assert "sites.csv:4: pattern 'siteC' (site 'C') matches no recording" in caplog.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--timezone", "Mars/Olympus"), "--timezone: time zone 'Mars/Olympus' does not exist"),
        (("--sites", "{SITES}"), "is matched by line 2 ('siteA') and line 3 ('*.WAV')"),
        (("--sites", "{BAD}"), "bad.csv:2: latitude 95: must be a number from -90 to 90"),
        (("--time-pattern", "%H%M"), "--time-pattern '%H%M': needs a year"),
    ],
)
def test_bad_places_are_refused_before_anything_is_written(capsys, bird_model, tmp_path, args, message):
    (tmp_path / "twice.csv").write_text("pattern,site,lat,lon\nsiteA,A,1,2\n*.WAV,W,1,2\n")
    (tmp_path / "bad.csv").write_text("pattern,site,lat,lon\nsiteA,A,95,2\n")
    args = [a.format(SITES=tmp_path / "twice.csv", BAD=tmp_path / "bad.csv") for a in args]
    rc, text, out = _predict(capsys, bird_model, tmp_path, *args)
    assert rc == 2 and "error:" in text and message in text.replace("\n", " "), text
    assert not out.exists()


@pytest.mark.parametrize(
    ("value", "message"), [("91,0", "latitude 91: must be <= 90"), ("0,-181", "longitude -181: must be >= -180")]
)
def test_site_out_of_range_is_refused_by_its_type(capsys, bird_model, tmp_path, value, message):
    with pytest.raises(SystemExit) as e:
        _predict(capsys, bird_model, tmp_path, "--site", value)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_sharded_run_merges_with_the_same_places(capsys, bird_model, tmp_path):
    """The places options travel with each shard's output options: the merge writes the same columns."""
    rc, text, out = _predict(
        capsys, bird_model, tmp_path, "--shard", "1/1", "--site", "43.61,3.87", "--timezone", "Europe/Paris"
    )
    assert rc == 0, text
    det = pd.read_csv(out / "detections.csv", keep_default_na=False)
    assert set(det["lat"]) == {43.61} and det["time"].str.endswith("+02:00").all()
    rec = pd.read_csv(out / "recordings.csv", keep_default_na=False)
    assert set(rec["timezone"]) == {"Europe/Paris"} and set(rec["site"]) == {""}


def test_a_trained_models_classes_are_named_by_its_data_sets_species_csv(capsys, tmp_path):
    """train keeps a data set's species.csv names in model.json (`aliases`): its own codes get their species' names
    in detections.csv, Raven and Audacity (they were empty, and Raven's Species column showed the code)."""
    import json

    from birdsed.model.birdnet_labels import aliases_entry

    data = tmp_path / "data"
    data.mkdir()
    (data / "species.csv").write_text(
        "label,english_name,scientific_name\nTurmer_song,Common Blackbird,Turdus merula\n"
        "Cicorn_song,Grey Cicada,Cicada orni\n"
    )
    model = tiny_model(tmp_path / "m", ["Turmer_song", "Cicorn_song", "Mycall_1"])
    meta = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**meta, **aliases_entry(data)}))
    rc, text, out = _predict(
        capsys, model, tmp_path, "--names", "common", "--format", "csv", "raven", "audacity", "--workers", 0
    )
    assert rc == 0, text
    det = pd.read_csv(out / "detections.csv", keep_default_na=False)
    names = det.drop_duplicates("label").set_index("label")[["code", "common", "scientific"]].T.to_dict("list")
    assert names == {
        "Turmer_song": ["eurbla", "Eurasian Blackbird", "Turdus merula"],  # BirdNET's species of one of its names
        "Cicorn_song": ["Cicorn_song", "Grey Cicada", "Cicada orni"],  # one BirdNET does not know: the names given
        "Mycall_1": ["Mycall_1", "", ""],  # no names kept for it
    }
    raven = pd.read_csv(next((out / "raven").glob("2023*.txt")), sep="\t", keep_default_na=False)
    assert set(raven["Species"]) == {"Eurasian Blackbird", "Grey Cicada", "Mycall_1"}
    assert "Grey Cicada (" in next((out / "audacity").glob("2023*.txt")).read_text()
    if importlib.util.find_spec("starlette") is not None:  # the review page's cards name them alike (they were empty)
        from birdsed.review.app import build_app

        review = build_app(out).state.review
        shown = {c: [review.species(c)[k] for k in ("code", "common", "scientific")] for c in names}
        assert shown == names
