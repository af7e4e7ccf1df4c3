"""predict --prior (infer/prior.py): BirdNET's place-and-season occurrence as a score transform before the decision.

Most tests replace BirdNET's labels and metadata model by a three-label fake (no extra needed); the one that runs the
real metadata model skips without the birdnet extra."""

import json
import logging
import shutil
from datetime import date

import numpy as np
import pandas as pd
import pytest
from conftest import birdnet_meta, needs_birdnet, write_audio

from birdsed.cli import main
from birdsed.decisions import ScoreCalibration
from birdsed.errors import ConfigError, ModelError
from birdsed.infer import prior as prior_mod
from birdsed.infer.prior import OccurrencePrior, PriorOptions, model_labels, recording_place
from birdsed.infer.transforms import apply_transforms
from birdsed.infer.writers import RecordingContext
from birdsed.model import birdnet_labels
from birdsed.model.birdnet_labels import aliases_entry
from birdsed.model.birdnet_range import Place
from birdsed.places import RecordingPlace
from birdsed.rows import raw_output

LABELS = ["Turdus merula_Eurasian Blackbird", "Erithacus rubecula_European Robin", "Hylocichla mustelina_Wood Thrush"]
CODES = dict(zip(LABELS, ["eurbla", "eurrob1", "woothr"]))
OCC = np.array([0.9, 0.5, 0.001], np.float32)  # blackbird common, robin half the time, Wood Thrush in Europe: no
MONTPELLIER = Place(43.6, 3.9, 17)


@pytest.fixture
def fake_birdnet(monkeypatch):
    """BirdNET's labels, codes and metadata model replaced by three labels; returns the places the model was run for."""
    calls: list[Place] = []

    def occurrence(place: Place) -> np.ndarray:
        calls.append(place)
        return OCC if place.lat > 0 else OCC[::-1].copy()  # the south: the other way round

    monkeypatch.setattr(birdnet_labels, "read_labels", lambda path=None: list(LABELS))
    monkeypatch.setattr(birdnet_labels, "ebird_codes", lambda: dict(CODES))
    monkeypatch.setattr(prior_mod, "label_occurrence", occurrence)
    return calls


def run_cli(capsys, *argv) -> tuple[int, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse refusals
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_soft_down_weights_filter_cuts_and_classes_without_a_label_keep_their_scores(fake_birdnet):
    opts = PriorOptions("soft", weight=0.5, labels=(LABELS[0], LABELS[2], ""))
    scores = np.array([[0.8, 0.8, 0.8], [0.0, 1.0, 0.3]], np.float32)  # (rows, K)
    soft = OccurrencePrior(opts)(scores, MONTPELLIER)
    logit = np.log(0.8 / 0.2)
    assert soft[0, 0] == pytest.approx(1 / (1 + np.exp(-(logit + 0.5 * np.log(0.9)))), abs=1e-5)
    assert 0 < soft[0, 1] < soft[0, 0]  # unlikely there: down-weighted, not dropped
    assert soft[:, 2].tolist() == scores[:, 2].tolist()  # no BirdNET label: exactly as it was
    hard = OccurrencePrior(PriorOptions("filter", labels=opts.labels))(scores, MONTPELLIER)
    assert hard[:, 1].tolist() == [0.0, 0.0] and hard[:, 0].tolist() == scores[:, 0].tolist()
    off = OccurrencePrior(PriorOptions("off", labels=opts.labels))(scores, None)
    assert off is scores


def test_the_occurrence_is_computed_once_per_place_and_week(fake_birdnet):
    prior = OccurrencePrior(PriorOptions("soft", labels=tuple(LABELS)))
    for _ in range(3):
        prior(np.full((4, 3), 0.5, np.float32), MONTPELLIER)
    prior(np.full((4, 3), 0.5, np.float32), Place(43.6, 3.9, 18))
    assert fake_birdnet == [MONTPELLIER, Place(43.6, 3.9, 18)]


def test_a_batch_of_recordings_each_gets_its_own_place_and_keeps_its_raw_rows(fake_birdnet):
    classes = ["eurbla", "woothr"]
    scores = pd.DataFrame(
        {
            "file": ["north.wav"] * 2 + ["south.wav"] * 2,
            "start_s": [0.0, 0.0, 0.0, 0.0],
            "end_s": [5.0] * 4,
            "output": ["segmentwise", "clipwise"] * 2,
            "eurbla": np.full(4, 0.6, np.float32),
            "woothr": np.full(4, 0.6, np.float32),
        }
    )
    contexts = [
        RecordingContext("north.wav", 5.0, RecordingPlace(lat=43.6, lon=3.9)),
        RecordingContext("south.wav", 5.0, RecordingPlace(lat=-33.9, lon=18.4)),
    ]
    prior = OccurrencePrior(PriorOptions("filter", week=17, labels=(LABELS[0], LABELS[2])))
    adjusted, [raw] = apply_transforms(scores, classes, contexts, (prior,))
    assert list(adjusted.columns) == list(scores.columns) and list(raw.columns) == list(scores.columns)
    assert adjusted["woothr"].tolist() == [0.0, 0.0, pytest.approx(0.6), pytest.approx(0.6)]  # cut in the north
    assert adjusted["eurbla"].tolist() == [pytest.approx(0.6)] * 2 + [0.0, 0.0]  # OCC reversed in the south
    assert raw["output"].tolist() == [raw_output(k) for k in ["segmentwise", "clipwise"] * 2]
    assert raw["woothr"].tolist() == scores["woothr"].tolist()
    assert fake_birdnet == [MONTPELLIER, Place(-33.9, 18.4, 17)]  # each recording's own place, --week without a date
    with pytest.raises(ConfigError, match=r"--prior filter: 1 recording\(s\) have no place \(south.wav\)"):
        prior.apply(scores, classes, [contexts[0], RecordingContext("south.wav", 5.0)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "off", "week": 17}, "--week is the prior's week for recordings whose date is unknown: give --prior"),
        ({"mode": "soft", "week": 49}, "week 49: must be 1 to 48"),
        ({"mode": "soft", "weight": -1.0}, "prior weight -1.0: must be from 0 to 10"),
        ({"mode": "filter", "min_occurrence": 1.5}, "minimum occurrence 1.5"),
        ({"mode": "strong"}, "prior 'strong': must be one of"),
    ],
)
def test_bad_prior_options_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PriorOptions(**kwargs)


def test_classes_map_by_a_birdnet_models_own_mapping_or_by_name(fake_birdnet):
    assert model_labels(["x", "y"], {"kind": "birdnet", "birdnet": {"indices": [2, -1]}}) == [LABELS[2], ""]
    assert model_labels(["eurbla", "European Robin", "Cicada"], {"kind": "sed"}) == [LABELS[0], LABELS[1], ""]


def test_an_ensemble_maps_a_class_through_its_birdnet_members(fake_birdnet, tmp_path):
    members = {"m0": (["Aegcau_call", "Cicada"], [2, -1]), "m1": (["Aegcau_call", "eurbla"], [-1, 0])}
    for name, (classes, indices) in members.items():
        (tmp_path / "e" / name).mkdir(parents=True)
        (tmp_path / "e" / name / "model.json").write_text(
            json.dumps(birdnet_meta(indices=indices) | {"classes": classes})
        )
    meta = {"kind": "ensemble", "classes": ["Aegcau_call", "eurbla", "Cicada"], "ensemble": ["m0", "m1"]}
    (tmp_path / "e" / "model.json").write_text(json.dumps(meta))
    assert model_labels(meta["classes"], meta, tmp_path / "e") == [LABELS[2], LABELS[0], ""]
    assert model_labels(meta["classes"], meta) == ["", LABELS[0], ""]  # by name alone: a data set's code maps to none


def test_a_model_trained_on_a_data_set_keeps_its_classes_names_and_the_prior_maps_them(fake_birdnet, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "species.csv").write_text(
        "label,english_name,scientific_name\nTurmer_call,Eurasian Blackbird,Turdus merula\n"
    )
    entry = aliases_entry(data)  # what train writes into model.json
    assert entry == {"aliases": {"Turmer_call": ["Turdus merula", "Eurasian Blackbird"]}}
    assert aliases_entry(tmp_path / "store.npy") == {}  # trained on a store or a file: no names to keep
    meta = {"kind": "birdnet_head", **entry}
    assert model_labels(["Turmer_call", "Cicada"], meta) == [LABELS[0], ""]
    with pytest.raises(ModelError, match="'aliases' must map each class to a list of names"):
        model_labels(["Turmer_call"], {"kind": "sed", "aliases": {"Turmer_call": "Turdus merula"}})


def test_a_recordings_place_and_start_date_give_its_week():
    assert recording_place(43.6, 3.9, date(2023, 5, 9)) == Place(43.6, 3.9, 18)  # May's second week
    assert recording_place(43.6, 3.9, None, week=21) == Place(43.6, 3.9, 21)  # no start: --week
    assert recording_place(None, None, date(2023, 5, 9)) is None  # no place: no prior


def test_a_model_whose_classes_do_not_map_is_refused_and_unmapped_ones_are_named(fake_birdnet, caplog):
    opts = PriorOptions("soft")
    with pytest.raises(ConfigError, match=r"none of the model's 2 classes \(Aegcau_call, Cicada\)"):
        opts.for_model(["Aegcau_call", "Cicada"], {"kind": "sed"})
    with caplog.at_level(logging.WARNING):
        resolved = opts.for_model(["eurbla", "Cicada"], {"kind": "sed"})
    assert resolved.labels == (LABELS[0], "") and "1 of 2 class(es) map to no BirdNET label" in caplog.text
    assert "Cicada" in caplog.text
    assert PriorOptions.from_dict(json.loads(json.dumps(resolved.to_dict()))) == resolved  # a shard's record


def test_predict_with_the_prior_decides_on_adjusted_scores_and_keeps_the_raw_ones(
    tmp_path, capsys, model_dir, monkeypatch, fake_birdnet
):
    monkeypatch.setattr(birdnet_labels, "ebird_codes", lambda: {LABELS[0]: "x", LABELS[2]: "y"})  # the tiny model's
    rec = write_audio(tmp_path / "rec" / "a.wav", seconds=6.0)
    out = tmp_path / "p"
    argv = ["predict", "--model", model_dir, rec, "--out", out, "--threshold", "1e-9", "--workers", "0", "--quiet"]
    rc, text = run_cli(capsys, *argv, "--prior", "filter", "--site", "43.6,3.9", "--week", 17)
    assert rc == 0, text
    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores["output"]) == {"segmentwise", "att", "clipwise", "segmentwise_raw", "att_raw", "clipwise_raw"}
    kept, raw = scores[scores["output"] == "segmentwise"], scores[scores["output"] == "segmentwise_raw"]
    assert (kept["y"] == 0).all() and (raw["y"] > 0).all()  # y, a Wood Thrush in France: cut by the filter
    assert kept["x"].tolist() == raw["x"].tolist()  # x, a blackbird: kept as it was
    assert set(pd.read_csv(out / "detections.csv")["label"]) == {"x"}
    decision = json.loads((out / "run.json").read_text())["decision"]
    assert decision["prior"] == {
        "mode": "filter",
        "week_without_date": 17,
        "min_occurrence": 0.03,
        "classes_without_prior": 0,
    }
    # the same --out without the prior: the parts are the model's scores, decided again, nothing scored again
    rc, text = run_cli(capsys, *argv)
    assert rc == 0 and "1 done before" in text
    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores["output"]) == {"segmentwise", "att", "clipwise"} and (scores["y"] > 0).all()
    assert set(pd.read_csv(out / "detections.csv")["label"]) == {"x", "y"}
    assert fake_birdnet == [Place(43.6, 3.9, 17)] * 2  # a.wav has no date in its name: --week (set up, then run)


def test_calibrated_with_the_prior_calibrates_the_prior_s_scores_the_decision_was_made_on(
    tmp_path, capsys, model_dir, monkeypatch, fake_birdnet
):
    """Both are score transforms (the prior before the decision, the calibration after it): the probabilities are of
    the prior's scores, which predict decided on and a review of such a run shows; a shard's record keeps both."""
    monkeypatch.setattr(birdnet_labels, "ebird_codes", lambda: {LABELS[0]: "x", LABELS[2]: "y"})
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    meta = json.loads((model / "model.json").read_text())
    meta["calibration"] = {
        "output": "segmentwise",
        "pooled": {"a": 0.5, "b": 2.0},
        "per_class": {"x": {"a": -1, "b": 1}},
    }
    (model / "model.json").write_text(json.dumps(meta))
    rec = write_audio(tmp_path / "rec" / "a.wav", seconds=6.0)
    both = ["--prior", "filter", "--site", "43.6,3.9", "--week", 17, "--calibrated", "--threshold", "1e-9"]
    for out, more in (("p", []), ("s", ["--shard", "1/1"])):
        argv = ["predict", "--model", model, rec, "--out", tmp_path / out, "--workers", "0", "--quiet", *both, *more]
        rc, text = run_cli(capsys, *argv)
        assert rc == 0, text
    scores = pd.read_parquet(tmp_path / "p" / "scores.parquet")
    kinds = ["segmentwise", "att", "clipwise"]
    assert list(scores["output"].unique()) == [*kinds, *(raw_output(k) for k in kinds), "calibrated"]
    decided = scores[scores["output"] == "segmentwise"]
    assert (decided["y"] == 0).all() and (scores.loc[scores["output"] == "segmentwise_raw", "y"] > 0).all()
    curve = ScoreCalibration.from_dict(meta["calibration"])
    want = curve.probabilities(decided[["x", "y"]].to_numpy(np.float32), ["x", "y"])  # of the prior's scores
    np.testing.assert_allclose(scores.loc[scores["output"] == "calibrated", ["x", "y"]].to_numpy(), want, rtol=1e-6)
    detections = pd.read_csv(tmp_path / "p" / "detections.csv")
    assert set(detections["label"]) == {"x"}  # decided on the prior's scores: y, cut by the filter, absent
    np.testing.assert_allclose(sorted(detections["score"]), sorted(want[:, 0]), atol=1e-4)  # shown: probabilities
    decision = json.loads((tmp_path / "p" / "run.json").read_text())["decision"]
    assert decision["calibrated"] is True and decision["prior"]["mode"] == "filter"
    record = json.loads((tmp_path / "s" / "shards" / "1-of-1.json").read_text())["spec"]
    assert [t["name"] for t in record["transforms"]] == ["prior", "calibrated"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s" / "scores.parquet"), scores)  # the merge's


def test_each_recording_gets_its_own_place_from_the_sites_table_and_week_from_its_name(
    tmp_path, capsys, model_dir, monkeypatch, fake_birdnet
):
    monkeypatch.setattr(birdnet_labels, "ebird_codes", lambda: {LABELS[0]: "x", LABELS[2]: "y"})
    north = write_audio(tmp_path / "rec" / "north" / "20230509_060000.wav", seconds=3.0)  # 9 May: BirdNET week 18
    south = write_audio(tmp_path / "rec" / "south" / "20231224_060000.wav", seconds=3.0)  # 24 December: week 48
    sites = tmp_path / "sites.csv"
    sites.write_text("pattern,site,lat,lon\nnorth,N,43.6,3.9\nsouth,S,-33.9,18.4\n")
    out = tmp_path / "p"
    argv = ["predict", "--model", model_dir, tmp_path / "rec", "--out", out, "--threshold", "1e-9", "--workers", "0"]
    rc, text = run_cli(capsys, *argv, "--quiet", "--sites", sites, "--prior", "filter", "--week", 30)
    assert rc == 0, text
    assert set(fake_birdnet) == {Place(43.6, 3.9, 18), Place(-33.9, 18.4, 48)}  # --week 30: for no date, unused
    scores = pd.read_parquet(out / "scores.parquet")
    kept = scores[scores["output"] == "segmentwise"].set_index("file")
    raw = scores[scores["output"] == "segmentwise_raw"].set_index("file")
    assert (kept.loc[str(north), "y"] == 0).all() and (kept.loc[str(north), "x"] == raw.loc[str(north), "x"]).all()
    assert (kept.loc[str(south), "x"] == 0).all() and (kept.loc[str(south), "y"] == raw.loc[str(south), "y"]).all()


@pytest.mark.parametrize("shard", [[], ["--shard", "1/2"]], ids=["whole", "shard"])
def test_the_prior_is_refused_for_recordings_the_sites_table_gives_no_place(
    tmp_path, capsys, model_dir, monkeypatch, fake_birdnet, shard
):
    monkeypatch.setattr(birdnet_labels, "ebird_codes", lambda: {LABELS[0]: "x", LABELS[2]: "y"})
    write_audio(tmp_path / "rec" / "north" / "a.wav")
    write_audio(tmp_path / "rec" / "elsewhere" / "b.wav")
    sites = tmp_path / "sites.csv"
    sites.write_text("pattern,site,lat,lon\nnorth,N,43.6,3.9\n")
    argv = ["predict", "--model", model_dir, tmp_path / "rec", "--out", tmp_path / "p", "--sites", sites]
    rc, text = run_cli(capsys, *argv, "--prior", "soft", *shard)
    said = " ".join(text.split())
    assert rc == 2 and "error: --prior soft: 1 recording(s) have no place (b.wav): add rows for them" in said, text
    assert not (tmp_path / "p").exists()  # with --shard: no partition of the inputs, which the next run would keep
    assert fake_birdnet == []  # refused before the metadata model ran


@pytest.mark.slow  # two shards' predict runs and a merge: about 20 s on the shared 2-core machine
def test_shards_merge_with_the_prior_they_ran_with(tmp_path, capsys, model_dir, monkeypatch, fake_birdnet):
    monkeypatch.setattr(birdnet_labels, "ebird_codes", lambda: {LABELS[0]: "x", LABELS[2]: "y"})
    recs = [write_audio(tmp_path / "rec" / f"{n}.wav", seconds=3.0) for n in ("a", "b")]
    out = tmp_path / "p"
    prior = ["--prior", "filter", "--site", "43.6,3.9", "--week", 17]
    for i in (1, 2):
        argv = ["predict", "--model", model_dir, *recs, "--out", out, "--shard", f"{i}/2", "--workers", "0"]
        rc, text = run_cli(capsys, *argv, "--quiet", "--threshold", "1e-9", *prior)
        assert rc == 0, text
    scores = pd.read_parquet(out / "scores.parquet")  # built by the last shard's merge, from the shards' records
    assert sorted(scores.loc[scores["output"] == "segmentwise_raw", "file"]) == sorted(map(str, recs))
    assert (scores.loc[scores["output"] == "segmentwise", "y"] == 0).all()
    assert json.loads((out / "run.json").read_text())["decision"]["prior"]["mode"] == "filter"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prior", "soft"], "error: --prior soft needs where the recordings are: give --site LAT,LON"),
        (["--prior", "soft", "--week", "17"], "error: --prior soft needs where the recordings are"),
        (["--prior", "soft", "--site", "95,3"], "argument --site: latitude 95: must be <= 90"),
        (["--prior", "soft", "--site", "43,-200"], "argument --site: longitude -200: must be >= -180"),
        (["--prior", "soft", "--site", "43,3", "--week", "49"], "argument --week: 49: must be 1 to 48"),
        (["--week", "17"], "error: --week is the prior's week for recordings whose date is unknown"),
        (["--prior", "soft", "--lat", "43", "--lon", "3"], "unrecognized arguments: --lat 43 --lon 3"),
        (["--prior", "soft", "--site", "43,3", "--prior-weight", "11"], "--prior-weight: 11: must be <="),
    ],
)
def test_predict_refuses_a_bad_prior_naming_it_before_anything_runs(tmp_path, capsys, argv, message):
    rec = write_audio(tmp_path / "a.wav")
    rc, text = run_cli(capsys, "predict", "--model", tmp_path / "no-model", rec, "--out", tmp_path / "p", *argv)
    assert rc == 2 and message in " ".join(text.split()), text
    assert not (tmp_path / "p").exists()


def test_predict_refuses_the_prior_for_a_model_none_of_whose_classes_maps(tmp_path, capsys, model_dir, fake_birdnet):
    rec = write_audio(tmp_path / "a.wav")
    prior = ["--prior", "soft", "--site", "43,3"]
    rc, text = run_cli(capsys, "predict", "--model", model_dir, rec, "--out", tmp_path / "p", *prior)
    assert rc == 2 and "none of the model's 2 classes (x, y)" in " ".join(text.split())
    assert not (tmp_path / "p" / "scores.parquet").exists()


@needs_birdnet
def test_the_real_metadata_model_down_weights_a_wood_thrush_in_france():
    opts = PriorOptions("soft", weight=1.0).for_model(
        ["eurbla", "woothr"], {"kind": "sed", "classes": ["eurbla", "woothr"]}
    )
    adjusted = OccurrencePrior(opts)(np.full((1, 2), 0.7, np.float32), MONTPELLIER)
    assert adjusted[0, 1] < 0.1 < adjusted[0, 0]
