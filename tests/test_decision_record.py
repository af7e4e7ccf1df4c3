"""What predict and evaluate say about the decision (issue #35, item 5): run.json records the decision settings and
summary reads them back; predict says how many detections it wrote (0 too); evaluate shows the threshold used, the
per-class precision / recall / F1 there, and one output when the three are equal (one score per window)."""

import json
import shutil

import pandas as pd
import pytest
from conftest import run_cli, write_audio
from test_summary import make_pred

from birdsed.evaluate.summary import summarize
from birdsed.infer.outputs import RUN_DECISION_KEY


@pytest.fixture
def recordings(tmp_path):
    folder = tmp_path / "rec"
    write_audio(folder / "a.wav", seconds=6.0)
    return folder


def _decision(out):
    return json.loads((out / "run.json").read_text())[RUN_DECISION_KEY]


def test_run_json_records_the_decision_settings_and_a_rerun_with_others_updates_them(
    model_dir, recordings, tmp_path, capsys
):
    out = tmp_path / "pred"
    argv = ["predict", "--model", model_dir, recordings, "--out", out, "--quiet", "--device", "cpu"]
    rc, _ = run_cli(capsys, *argv, "--threshold", "0.3", "--max-birds", "1", "--neighbour-smoothing", "max")
    assert rc == 0
    d = _decision(out)
    assert d["output"] == "segmentwise" and d["threshold"] == 0.3 and d["thresholds_from"] == "--threshold"
    assert (d["max_birds"], d["neighbour_smoothing"], d["calibrated"]) == (1, "max", False)
    assert d["options"] == {
        "output": None,
        "threshold": 0.3,
        "max_birds": 1,
        "neighbour_smoothing": "max",
        "calibrated": False,
    }
    rc, said = run_cli(capsys, *argv, "--output", "clipwise")  # other decision options: no "differ" refusal
    assert rc == 0, said
    d = _decision(out)
    assert (d["output"], d["threshold"], d["thresholds_from"], d["max_birds"]) == ("clipwise", 0.5, "model", None)


def test_predict_says_how_many_detections_it_wrote_and_0_when_none(model_dir, recordings, tmp_path, capsys):
    argv = ["predict", "--model", model_dir, recordings, "--quiet", "--device", "cpu"]
    rc, said = run_cli(capsys, *argv, "--out", tmp_path / "none", "--threshold", "1")
    assert rc == 0 and "0 detections: nothing passed the decision" in said
    assert "threshold 1 from --threshold" in said
    rc, said = run_cli(capsys, *argv, "--out", tmp_path / "all", "--threshold", "0")
    n = len(pd.read_csv(tmp_path / "all" / "detections.csv"))
    assert rc == 0 and n > 0 and f"{n} detection(s)" in said


def _record(pred, **decision):
    run = json.loads((pred / "run.json").read_text())
    run[RUN_DECISION_KEY] = {"options": {"output": None, "threshold": None, "max_birds": None}, **decision}
    (pred / "run.json").write_text(json.dumps(run))


def test_summary_of_a_plain_run_decides_with_run_jsons_recorded_options(tmp_path):
    pred = make_pred(tmp_path)
    assert set(summarize(pred)[0]["class"]) == {"woothr", "mycall"}  # an old run.json: the model's thresholds
    _record(pred, options={"output": None, "threshold": 0.93, "max_birds": None})
    table, decision = summarize(pred)
    assert decision.options.threshold == 0.93
    assert list(table["class"]) == ["mycall"]  # only mycall's 0.95 passes predict's --threshold 0.93


def _truth(tmp_path):
    truth = tmp_path / "truth.csv"
    rows = [("a.wav", 0, 5, "woothr"), ("a.wav", 0, 5, "mycall"), ("b.wav", 5, 10, "mycall")]
    pd.DataFrame(rows, columns=["file", "start_s", "end_s", "label"]).to_csv(truth, index=False)
    return truth


def test_evaluate_shows_the_models_threshold_and_per_class_prf_at_it(tmp_path, capsys):
    pred = make_pred(tmp_path)
    argv = ["evaluate", "--scores", pred / "scores.parquet", "--truth", _truth(tmp_path)]
    rc, said = run_cli(capsys, *argv, "--json")
    assert rc == 0
    report = json.loads(said)
    d = report["decision"]
    assert (d["output"], d["threshold"], d["per_class"]) == ("clipwise", 0.5, {"mycall": 0.9})
    assert "stored thresholds" in d["source"]
    by = {r["class"]: r for r in report["per_class"]}
    assert by["mycall"]["threshold"] == pytest.approx(0.9)
    # mycall: rows >= 0.9 are a.wav@0 (true) and b.wav@5 (true): precision 1, recall 1
    assert (by["mycall"]["precision"], by["mycall"]["recall"], by["mycall"]["f1"]) == (1.0, 1.0, 1.0)
    # woothr >= 0.5: a.wav@0 (true), a.wav@10, b.wav@15 (false): precision 1/3, recall 1
    assert by["woothr"]["precision"] == pytest.approx(1 / 3) and by["woothr"]["recall"] == 1.0
    rc, said = run_cli(capsys, *argv)
    assert rc == 0 and "threshold used: clipwise 0.5 (1 class(es) with their own)" in said
    assert "per class, at it" in said


def test_evaluate_says_model_unknown_without_a_run_json(tmp_path, capsys):
    pred = make_pred(tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(pred / "scores.parquet", alone / "scores.parquet")
    rc, said = run_cli(capsys, "evaluate", "--scores", alone / "scores.parquet", "--truth", _truth(tmp_path))
    assert rc == 0 and "model unknown" in said


def test_evaluate_prefers_run_jsons_decision_record(tmp_path, capsys):
    pred = make_pred(tmp_path)
    _record(pred, output="clipwise", threshold=0.8, per_class_thresholds={}, thresholds_from="--threshold")
    argv = ["evaluate", "--scores", pred / "scores.parquet", "--truth", _truth(tmp_path), "--json"]
    report = json.loads(run_cli(capsys, *argv)[1])
    assert report["decision"]["threshold"] == 0.8 and "decision record" in report["decision"]["source"]
    assert {r["class"]: r["threshold"] for r in report["per_class"]}["mycall"] == pytest.approx(0.8)
    # the headline table shows the decided output at that threshold (was: the reference solution's 0.5 beside it)
    from birdsed.evaluate.metrics import row_f1
    from birdsed.evaluate.score import align_files, score_table

    al = align_files(pred / "scores.parquet", _truth(tmp_path))
    head = score_table(report).set_index("output").loc["clipwise"]
    assert head["threshold"] == 0.8 and head["row F1"] == pytest.approx(row_f1(al.scores["clipwise"] >= 0.8, al.true))
    assert (
        report["outputs"]["segmentwise"]["reference_threshold"]
        == score_table(report).set_index("output").loc["segmentwise", "threshold"]
    )


def test_evaluate_shows_one_output_when_the_three_are_equal(tmp_path, capsys):
    pred = make_pred(tmp_path)
    scores = pd.read_parquet(pred / "scores.parquet")
    clip = scores[scores["output"] == "clipwise"]
    same = pd.concat([clip.assign(output=k) for k in ("clipwise", "segmentwise", "att")], ignore_index=True)
    same.to_parquet(pred / "scores.parquet", index=False)
    argv = ["evaluate", "--scores", pred / "scores.parquet", "--truth", _truth(tmp_path)]
    report = json.loads(run_cli(capsys, *argv, "--json")[1])
    assert list(report["outputs"]) == ["clipwise"] and report["one_score_per_window"] is True
    rc, said = run_cli(capsys, *argv)
    assert rc == 0 and "shown once" in said and "segmentwise" not in said
