"""predict's spine (infer/predict.py, infer/runners.py): the model directory read once, runners behind one interface,
the options one typed object, the extension points (recording contexts, score transforms) where they are documented."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_audio

from birdsed.decisions import Thresholds
from birdsed.infer.predict import PredictOptions, run_predict
from birdsed.infer.transforms import ScoreTransform, score_transform


def count_model_json_reads(monkeypatch) -> list[Path]:
    """Every read of a model.json from now on, by any reader (they all end in Path.read_text)."""
    reads: list[Path] = []
    read_text = Path.read_text

    def counting(self, *a, **kw):
        if self.name == "model.json":
            reads.append(self)
        return read_text(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", counting)
    return reads


def test_predict_reads_the_model_json_once(model_dir, tmp_path, monkeypatch):
    audio = write_audio(tmp_path / "a.wav", 6.0)
    reads = count_model_json_reads(monkeypatch)
    run_predict(model_dir, [str(audio)], tmp_path / "out", quiet=True, workers=0)
    assert reads == [model_dir / "model.json"]


def test_a_merge_reads_the_model_json_once(model_dir, tmp_path, monkeypatch):
    from birdsed.infer.merge import merge

    audio = write_audio(tmp_path / "a.wav", 6.0)
    run_predict(model_dir, [str(audio)], tmp_path / "out", quiet=True, workers=0, shard="1/1")
    reads = count_model_json_reads(monkeypatch)
    merge(tmp_path / "out")
    assert reads == [model_dir / "model.json"]


SEEN: list = []  # what the test transform was given, batch by batch


@score_transform("test-saturate")
@dataclass(frozen=True)
class Saturate(ScoreTransform):
    """Every score of `output` set to `value` (a test transform)."""

    value: float = 1.0
    output: str = "segmentwise"

    def apply(self, scores, classes, contexts):
        SEEN.append([(c.file, c.duration_s) for c in contexts])
        scores = scores.copy()
        scores.loc[scores["output"] == self.output, classes] = self.value
        return scores


def test_score_transforms_run_between_the_scores_and_the_decision_and_the_parts_keep_raw_scores(model_dir, tmp_path):
    audio = [write_audio(tmp_path / "a.wav", 6.0), write_audio(tmp_path / "b.wav", 12.0)]
    SEEN.clear()
    s = run_predict(
        model_dir, [str(a) for a in audio], tmp_path / "out", quiet=True, workers=0, transforms=(Saturate(),)
    )
    assert sorted(f for batch in SEEN for f in batch) == [(str(audio[0]), 6.0), (str(audio[1]), 12.0)]
    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    seg = scores[scores["output"] == "segmentwise"]
    assert (seg[["x", "y"]] == 1.0).all().all()  # scores.parquet: the scores as decided
    assert s.n_detections == len(seg) * 2  # 2 + 3 rows, both classes present
    parts = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "out" / "parts").glob("*.parquet")))
    assert (parts.loc[parts["output"] == "segmentwise", ["x", "y"]] < 1.0).all().all()  # the parts: raw scores


def test_a_shard_records_its_transforms_and_the_merge_applies_them(model_dir, tmp_path):
    from birdsed.infer.outputs import OutputSpec

    spec = OutputSpec(transforms=(Saturate(0.5, "att"),))
    assert OutputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert "transforms" not in OutputSpec().to_dict()  # the records of runs without any are as before

    audio = write_audio(tmp_path / "a.wav", 6.0)
    run_predict(
        model_dir, [str(audio)], tmp_path / "out", quiet=True, workers=0, shard="1/1", transforms=spec.transforms
    )
    scores = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert (scores.loc[scores["output"] == "att", ["x", "y"]] == 0.5).all().all()


def test_run_predict_takes_one_options_object_or_its_fields_by_name(model_dir, tmp_path):
    audio = write_audio(tmp_path / "a.wav", 6.0)
    opts = PredictOptions(quiet=True, workers=0, formats=("csv", "raven"))
    a = run_predict(model_dir, [str(audio)], tmp_path / "a", opts)
    b = run_predict(model_dir, [str(audio)], tmp_path / "b", quiet=True, workers=0, formats=("csv", "raven"))
    assert (a.n_files, a.n_detections) == (b.n_files, b.n_detections)
    assert (tmp_path / "a" / "raven").is_dir() and (tmp_path / "b" / "raven").is_dir()
    with pytest.raises(TypeError):
        run_predict(model_dir, [str(audio)], tmp_path / "c", windows_s=3.0)  # not an option: refused, not ignored


def test_the_prior_and_the_calibration_are_registered_transforms_a_shards_record_rebuilds():
    from birdsed.decisions import ScoreCalibration
    from birdsed.infer.outputs import OutputSpec
    from birdsed.infer.prior import OccurrencePrior, PriorOptions
    from birdsed.infer.transforms import SCORE_TRANSFORMS, CalibratedScores

    assert {"prior", "calibrated"} <= set(SCORE_TRANSFORMS)
    prior = OccurrencePrior(PriorOptions("soft", 0.5, week=17, labels=("Turdus merula_Eurasian Blackbird", "")))
    calibrated = CalibratedScores(ScoreCalibration("att", (0.5, 2.0), {"x": (-1.0, 1.5)}))
    spec = OutputSpec(transforms=(prior, calibrated))
    assert OutputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.decision_record(["x"], Thresholds(), "segmentwise")["prior"] == prior.options.record()
    old = {**OutputSpec().to_dict(), "prior": prior.options.to_dict()}  # recorded before the prior was a transform
    assert OutputSpec.from_dict(old).transforms == (prior,)
