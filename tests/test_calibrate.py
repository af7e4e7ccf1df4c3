"""evaluate/calibrate.py and `birdsed calibrate`: per-species logistic fits of verdicts on logit(score), partially
pooled; thresholds for a chosen precision with a 95 % interval, stored in model.json; bad verdict tables refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_model, write_audio

from birdsed.errors import ReviewError
from birdsed.evaluate.calibrate import LAMBDAS, calibrate, fit_map, logit, probability, sigmoid

TRUTH = {"amecro": (-1.0, 1.5), "woothr": (0.5, 1.0), "Turdus merula": (-2.0, 2.0)}


def simulated(truth=TRUTH, n=300, seed=0, few: dict | None = None) -> pd.DataFrame:
    """Verdicts of a reviewer who says yes with probability sigmoid(a + b logit(score)), scores uniform."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, (a, b) in truth.items():
        m = (few or {}).get(label, n)
        s = rng.uniform(0.01, 0.99, m)
        yes = rng.random(m) < sigmoid(a + b * logit(s))
        rows += [
            {
                "file": f"r{i % 9}.wav",
                "start_s": 5.0 * i,
                "end_s": 5.0 * i + 5,
                "label": label,
                "verdict": "yes" if y else "no",
                "other_label": "",
                "reviewer": "sim",
                "time": "",
                "score": x,
            }
            for i, (x, y) in enumerate(zip(s, yes))
        ]
    return pd.DataFrame(rows)


def test_the_threshold_of_a_known_curve_is_found_with_an_interval_that_holds_the_precision():
    cal = calibrate(simulated(), list(TRUTH), precision=0.9)
    assert cal.lam in LAMBDAS and not cal.too_few
    for s in cal.species:
        a, b = TRUTH[s.label]
        true_t = float(sigmoid((logit(0.9) - a) / b))
        assert abs(s.threshold - true_t) < 0.06, (s.label, s.threshold, true_t)
        assert s.precision == pytest.approx(0.9) and s.precision_lo < 0.9 < s.precision_hi
        assert probability(s.threshold, s.a, s.b) == pytest.approx(0.9)
        assert s.n_above and s.yes_above / s.n_above > 0.8


def test_a_precision_no_score_reaches_is_said_and_no_threshold_of_one_is_written():
    """A species whose verdicts are yes in about half of its clips even at the top scores: 0.9 is past the highest
    score. Was: threshold 1.000 written ("precision 0.90"), and predict --calibrated dropped its every detection."""
    cal = calibrate(simulated({"amecro": (-1.0, 1.5), "woothr": (-0.5, 0.15)}), ["amecro", "woothr"], precision=0.9)
    woothr = next(s for s in cal.species if s.label == "woothr")
    assert woothr.threshold is None and "precision 0.9 is not reached at any score" in woothr.reason
    assert [s.label for s in cal.calibrated] == ["amecro"]


def test_a_species_with_few_verdicts_borrows_from_the_pooled_fit():
    x = logit(np.array([0.2, 0.4, 0.6, 0.8, 0.9]))
    y = np.array([0.0, 1.0, 0.0, 1.0, 1.0])
    pooled = np.array([-1.0, 2.0])
    own, _ = fit_map(x, y, np.zeros(2), 1e-6)
    weak, _ = fit_map(x, y, pooled, 0.01)
    strong, _ = fit_map(x, y, pooled, 1000.0)
    assert np.allclose(weak, own, atol=0.1) and np.allclose(strong, pooled, atol=0.02)
    cal = calibrate(simulated(few={"woothr": 6}), list(TRUTH))
    small = next(s for s in cal.species if s.label == "woothr")
    assert small.threshold is None and small.reason == "6 verdicts (yes + no); at least 10 needed"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda v: v.assign(label=v["label"].replace("woothr", "dodo")), "class(es) the model lacks: 'dodo'"),
        (lambda v: v.assign(verdict="yes"), "no 'no' verdict at all"),
        (lambda v: v.assign(score=np.nan), "without a score"),
    ],
)
def test_bad_verdict_tables_are_refused_naming_what_is_wrong(edit, message):
    with pytest.raises(ReviewError, match=message.replace("(", r"\(").replace(")", r"\)")):
        calibrate(edit(simulated(n=40)), list(TRUTH))


def test_a_species_without_a_no_is_listed_and_gets_no_threshold():
    v = simulated(n=60)
    v.loc[v["label"] == "amecro", "verdict"] = "yes"
    cal = calibrate(v, list(TRUTH))
    assert [(s.label, s.reason) for s in cal.too_few] == [("amecro", "no 'no' among its 60 verdicts")]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("cal") / "model", list(TRUTH))


def run_cli(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "birdsed", *map(str, argv)], capture_output=True, text=True, timeout=300
    )


def test_calibrate_writes_thresholds_and_the_calibration_into_the_model_and_prints_the_table(model, tmp_path):
    from birdsed.model.meta import model_digest

    m = tmp_path / "model"
    shutil.copytree(model, m)
    digest = model_digest(m)
    verdicts = simulated(few={"woothr": 5})
    verdicts.to_csv(tmp_path / "v.csv", index=False)
    res = run_cli("calibrate", "--model", m, "--verdicts", tmp_path / "v.csv", "--precision", "0.9")
    assert res.returncode == 1, res.stderr  # done, with a species listed as too few to trust
    assert "not calibrated: woothr: 5 verdicts" in res.stderr and "Turdus" in res.stderr
    meta = json.loads((m / "model.json").read_text())
    cal = meta["calibration"]
    assert cal["precision"] == 0.9 and cal["output"] == meta.get("default_output", "segmentwise")
    thr = meta["thresholds"]["per_class"][cal["output"]]
    assert set(thr) == {"amecro", "Turdus merula"} and thr["amecro"] == cal["per_class"]["amecro"]["threshold"]
    assert cal["per_class"]["woothr"]["threshold"] is None
    assert model_digest(m) == digest  # calibration only decides: predict's --out folders of this model stay valid
    # a model that predicts with these thresholds still loads
    from birdsed.model.meta import read_model_meta

    assert read_model_meta(m).thresholds.vector(cal["output"], list(TRUTH))[0] == pytest.approx(thr["amecro"])


def test_calibrate_refuses_a_class_the_model_lacks_and_leaves_the_model_as_it_was(model, tmp_path):
    m = tmp_path / "model"
    shutil.copytree(model, m)
    before = (m / "model.json").read_text()
    simulated(n=30).assign(label="dodo").to_csv(tmp_path / "v.csv", index=False)
    res = run_cli("calibrate", "--model", m, "--verdicts", tmp_path / "v.csv")
    assert res.returncode == 2 and "error: verdicts for 1 class(es) the model lacks: 'dodo'" in res.stderr
    assert "Traceback" not in res.stderr and (m / "model.json").read_text() == before
    res = run_cli("calibrate", "--model", m, "--verdicts", tmp_path / "v.csv", "--precision", "1.5")
    assert res.returncode == 2 and "1.5: must be <= 0.999" in res.stderr


# --- predict --calibrated ------------------------------------------------------------------------------------------


def test_the_score_calibration_gives_each_class_its_curve_and_the_pooled_one_to_a_class_without_verdicts():
    from birdsed.decisions import ScoreCalibration
    from birdsed.errors import ConfigError

    cal = calibrate(simulated(n=200).query("label != 'woothr'"), list(TRUTH))
    stored = ScoreCalibration.from_dict(cal.to_dict("segmentwise"))
    scores = np.random.default_rng(0).uniform(0, 1, (50, 3)).astype(np.float32)
    p = stored.probabilities(scores, list(TRUTH))
    assert p.shape == (50, 3) and p.dtype == np.float32
    for k, label in enumerate(TRUTH):
        a, b = next(((s.a, s.b) for s in cal.species if s.label == label), cal.pooled)
        np.testing.assert_allclose(p[:, k], probability(scores[:, k], a, b), rtol=1e-5)
    assert label == "Turdus merula" and "woothr" not in stored.per_class  # woothr: the pooled curve
    with pytest.raises(ConfigError, match=r"per_class\['amecro'\].b = 'x': must be a finite number"):
        ScoreCalibration.from_dict({**cal.to_dict("att"), "per_class": {"amecro": {"a": 0.0, "b": "x"}}})
    from conftest import birdnet_meta

    from birdsed.errors import ModelError
    from birdsed.model.kinds import parse_meta

    with pytest.raises(ModelError, match=r"model.json: calibration must map 'output', 'pooled' and 'per_class'"):
        parse_meta(Path("m") / "model.json", {**birdnet_meta(), "calibration": [1, 2]})


def test_predict_calibrated_writes_probabilities_keeps_the_scores_and_decides_as_without(model, tmp_path, capsys):
    from conftest import run_cli as main

    m = tmp_path / "model"
    shutil.copytree(model, m)
    audio = tmp_path / "audio"
    for i, f in enumerate([700, 3000]):
        write_audio(audio / f"r{i}.wav", seconds=12, rate=16000, freq_hz=f)
    predict = ["predict", "--model", m, audio, "--quiet", "--device", "cpu", "--workers", "0", "--out"]
    rc, said = main(capsys, *predict, tmp_path / "p", "--calibrated")
    assert rc == 2 and "--calibrated: the model has no calibration: run `birdsed calibrate" in said
    assert not (tmp_path / "p" / "scores.parquet").exists()
    simulated().to_csv(tmp_path / "v.csv", index=False)
    assert main(capsys, "calibrate", "--model", m, "--verdicts", tmp_path / "v.csv")[0] == 0
    # thresholds low enough that the untrained model's scores pass some of them
    meta = json.loads((m / "model.json").read_text())
    meta["thresholds"]["per_class"]["segmentwise"] = {c: 0.5 for c in TRUTH}
    (m / "model.json").write_text(json.dumps(meta))
    for name, more in (("raw", []), ("cal", ["--calibrated"])):
        rc, said = main(capsys, *predict, tmp_path / name, "--format", "csv", "raven", *more)
        assert rc == 0, said
    raw, cal = (pd.read_parquet(tmp_path / n / "scores.parquet") for n in ("raw", "cal"))
    assert set(cal["output"]) == {"segmentwise", "att", "clipwise", "calibrated"}
    pd.testing.assert_frame_equal(cal[cal["output"] != "calibrated"].reset_index(drop=True), raw)
    from birdsed.decisions import ScoreCalibration

    curve = ScoreCalibration.from_dict(meta["calibration"])
    seg = raw[raw["output"] == "segmentwise"]
    want = curve.probabilities(seg[list(TRUTH)].to_numpy(np.float32), list(TRUTH))
    np.testing.assert_allclose(cal.loc[cal["output"] == "calibrated", list(TRUTH)].to_numpy(), want, rtol=1e-6)
    d_raw, d_cal = (pd.read_csv(tmp_path / n / "detections.csv") for n in ("raw", "cal"))
    assert len(d_raw) > 0 and d_raw[["file", "start_s", "label"]].equals(d_cal[["file", "start_s", "label"]])
    k = [list(TRUTH).index(lab) for lab in d_raw["label"]]
    a, b = (np.array(x)[k] for x in curve.coefficients(list(TRUTH)))
    np.testing.assert_allclose(d_cal["score"], sigmoid(a + b * logit(d_raw["score"].to_numpy())), atol=1e-4)
    assert json.loads((tmp_path / "cal" / "run.json").read_text())["decision"]["calibrated"] is True
    rc, said = main(capsys, *predict, tmp_path / "att", "--calibrated", "--output", "att")
    assert rc == 2 and "calibration is of segmentwise scores, and att scores are decided on" in " ".join(said.split())
