"""Truth as people keep it (birdsed.truth): readers, rows from events, event matching, evaluate / tune / report
on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from birdsed.errors import TruthError
from birdsed.evaluate.metrics import average_precision, row_f1
from birdsed.evaluate.score import align_scores, score_report
from birdsed.truth import Truth, load_truth
from birdsed.truth.events import event_table, match_events, row_labels
from birdsed.truth.grid import match_names, truth_rows

RAVEN_HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSpecies"


def raven(path, rows, header=RAVEN_HEADER):
    path.write_text(header + "\n" + "\n".join("\t".join(map(str, r)) for r in rows) + "\n")
    return path


def events(*rows):
    """(file, start, end, label) tuples -> an event table."""
    f, a, b, lab = zip(*rows) if rows else ((), (), (), ())
    return event_table(f, a, b, lab, [f"t: line {i + 2}" for i in range(len(rows))])


def scores_of(files_rows: dict[str, int], classes: list[str], values: dict | None = None) -> pd.DataFrame:
    """A scores table of predict's layout: every output kind, each file's rows at 0, 5, ...; values (file, start,
    class) -> score, else 0."""
    out = []
    for kind in ("clipwise", "segmentwise", "att"):
        for f, n in files_rows.items():
            for r in range(n):
                row = {"file": f, "start_s": 5.0 * r, "end_s": 5.0 * r + 5, "output": kind}
                row.update({c: (values or {}).get((f, 5.0 * r, c), 0.0) for c in classes})
                out.append(row)
    return pd.DataFrame(out)


def test_raven_one_per_recording_keeps_the_spectrogram_view_and_bounds(tmp_path):
    t = raven(
        tmp_path / "rec1.Table.1.selections.txt",
        [
            (1, "Spectrogram 1", 1, 1.0, 2.5, 2000, 4000, "amerob"),
            (1, "Waveform 1", 1, 1.0, 2.5, 2000, 4000, "amerob"),
            (2, "Spectrogram 1", 1, 7.0, 8.0, 3000, 5000, "norcar"),
        ],
    )
    truth = load_truth(t)
    assert truth.fmt == "raven" and truth.covered == ["rec1"]
    ev = truth.events
    assert list(ev["label"]) == ["amerob", "norcar"] and list(ev["file"]) == ["rec1", "rec1"]
    assert list(ev["low_hz"]) == [2000, 3000] and list(ev["high_hz"]) == [4000, 5000]


def test_raven_for_many_files_reads_file_offsets(tmp_path):
    header = "Selection\tView\tBegin Time (s)\tEnd Time (s)\tBegin Path\tFile Offset (s)\tAnnotation"
    t = raven(
        tmp_path / "all.txt",
        [
            (1, "Spectrogram 1", 100.0, 101.0, "/x/a.wav", 3.0, "wren"),
            (2, "Spectrogram 1", 130.0, 132.0, "/x/b.wav", 2.0, "robin"),
        ],
        header,
    )
    ev = load_truth(t).events
    assert list(ev["file"]) == ["/x/a.wav", "/x/b.wav"]
    assert (
        list(ev["start_s"]) == [3.0, 2.0] and list(ev["end_s"]) == [4.0, 4.0] and list(ev["label"]) == ["wren", "robin"]
    )


def test_audacity_labels_with_frequency_lines(tmp_path):
    (tmp_path / "rec2.txt").write_text("1.5\t2.0\twren\n\\\t2500\t6000\n10\t12.25\trobin\n")
    truth = load_truth(tmp_path / "rec2.txt")
    assert truth.fmt == "audacity" and truth.covered == ["rec2"]
    assert list(truth.events["start_s"]) == [1.5, 10.0] and truth.events["low_hz"].iloc[0] == 2500
    assert np.isnan(truth.events["low_hz"].iloc[1])


def test_a_plain_csv_and_birdsed_detections(tmp_path):
    (tmp_path / "det.csv").write_text("file,start_s,end_s,label,score\na.wav,0,5,wren,0.9\nb.wav,5,10,robin,0.4\n")
    truth = load_truth(tmp_path / "det.csv")
    assert (
        truth.fmt == "table"
        and truth.covered == ["a.wav", "b.wav"]
        and list(truth.events["label"]) == ["wren", "robin"]
    )


@pytest.mark.parametrize(
    "rows, header, match",
    [
        (
            [(1, "Spectrogram 1", 1, 3.0, 2.0, 1, 2, "x")],
            RAVEN_HEADER,
            r"line 2: end time 2 s is not after the begin time 3",
        ),
        ([(1, "Spectrogram 1", 1, -1.0, 2.0, 1, 2, "x")], RAVEN_HEADER, r"line 2: begin time -1 s is negative"),
        ([(1, "Spectrogram 1", 1, "abc", 2.0, 1, 2, "x")], RAVEN_HEADER, r"line 2: start 'abc' is not a number"),
        ([(1, "Spectrogram 1", 1, 1.0, 2.0, 1, 2, "")], RAVEN_HEADER, r"line 2: empty label"),
        ([(1, "Spectrogram 1", 1, 1.0, 2.0, 9, 2, "x")], RAVEN_HEADER, r"low frequency 9 Hz above"),
        ([(1, 2.0, "x")], "Selection\tBegin Time (s)\tSpecies", r"needs \['End Time \(s\)'\]; its columns are"),
        ([(1, 1.0, 2.0, "x")], "Selection\tBegin Time (s)\tEnd Time (s)\tNotes", r"no label column .*its columns are"),
    ],
)
def test_bad_raven_tables_name_the_file_line_and_value(tmp_path, rows, header, match):
    t = raven(tmp_path / "r.txt", rows, header)
    with pytest.raises(TruthError, match=match) as err:
        load_truth(t)
    assert str(t) in str(err.value)


def test_an_unknown_table_and_a_missing_label_column_are_refused(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TruthError, match="not a truth table birdsed knows"):
        load_truth(tmp_path / "x.csv")
    t = raven(tmp_path / "r.txt", [(1, "Spectrogram 1", 1, 1.0, 2.0, 1, 2, "x")])
    with pytest.raises(TruthError, match="no label column 'Call'"):
        load_truth(t, label_column="Call")
    with pytest.raises(TruthError, match="truth not found"):
        load_truth(tmp_path / "nothing.txt")


def test_rows_from_events_an_event_spanning_two_rows_and_the_union_rule():
    ev = events(
        ("f", 4.0, 6.0, "a"),  # 1 s in row 0, 1 s in row 1
        ("f", 10.0, 10.02, "b"),
        ("f", 10.1, 10.12, "b"),
        ("f", 10.2, 10.22, "b"),  # 60 ms of notes together
        ("f", 11.0, 11.04, "c"),
        ("f", 11.0, 11.04, "c"),
    )  # two boxes over one 40 ms call: counted once
    rows = row_labels(ev, 3, min_overlap_s=0.05)
    assert rows == [{"a"}, {"a"}, {"b"}]
    assert row_labels(ev, 3, min_overlap_s=1.5) == [set(), set(), set()]


def test_event_matching_by_overlap_and_label():
    truth = events(("f", 1.0, 2.0, "a"), ("f", 12.0, 13.0, "a"), ("f", 1.0, 2.0, "b"), ("g", 0.5, 1.0, "a"))
    det = pd.DataFrame(
        {
            "file": ["f", "f", "f", "g"],
            "start_s": [0.0, 5.0, 0.0, 5.0],
            "end_s": [5.0, 10.0, 5.0, 10.0],
            "label": ["a", "a", "c", "a"],
        }
    )
    m = match_events(truth, det)
    assert (m.recall, m.precision) == (0.25, 0.25)  # only f's first 'a' found, by the first detection
    per = m.per_label.set_index("label")
    assert per.loc["a", "found"] == 1 and per.loc["a", "events"] == 3 and per.loc["c", "correct"] == 0


def test_a_recording_annotated_with_no_calls_is_covered_in_every_layout(tmp_path):
    """Raven's table of no selections (its header alone, also with Begin Path) and Audacity's empty label file are
    recordings annotated with no calls: covered, so their rows score as negatives. Was: the Raven table covered
    nothing (its detections never counted as false) and the empty file was refused as no format birdsed knows."""
    header = RAVEN_HEADER + "\tBegin Path"
    (tmp_path / "r").mkdir()
    raven(tmp_path / "r" / "quiet.Table.1.selections.txt", [], header)
    row = (1, "Spectrogram 1", 1, 1.0, 2.0, 0, 1, "a", "/x/loud.wav")
    raven(tmp_path / "r" / "loud.Table.1.selections.txt", [row], header)
    truth = load_truth(tmp_path / "r")
    assert truth.fmt == "raven" and truth.covered == ["/x/loud.wav", "quiet"]
    session = raven(tmp_path / "session.selections.txt", [], header)  # a table of many sounds: it names none
    assert load_truth(session).covered == []
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "quiet.txt").write_text("")
    (tmp_path / "a" / "loud.txt").write_text("1\t2\ta\n")
    truth = load_truth(tmp_path / "a")
    assert truth.fmt == "audacity" and truth.covered == ["loud", "quiet"] and len(truth.events) == 1
    assert load_truth(tmp_path / "a" / "quiet.txt").covered == ["quiet"]
    al = align_scores(scores_of({"/x/loud.wav": 1, "/x/quiet.wav": 2}, ["a"], {("/x/quiet.wav", 5.0, "a"): 0.9}), truth)
    assert al.row_ids == ["/x/loud.wav@0", "/x/quiet.wav@0", "/x/quiet.wav@5"] and not al.true[1:].any()


def test_names_match_by_path_name_or_stem_and_ambiguity_is_an_error(tmp_path):
    pred = [str(tmp_path / "x" / "rec1.wav"), str(tmp_path / "y" / "rec2.flac")]
    got = match_names(["rec1", "C:\\field\\rec2.flac", str(tmp_path / "x" / "rec1.wav"), "other"], pred)
    assert got == {"rec1": pred[0], "C:\\field\\rec2.flac": pred[1], str(tmp_path / "x" / "rec1.wav"): pred[0]}
    with pytest.raises(TruthError, match="matches several"):
        match_names(["rec1"], [str(tmp_path / "a" / "rec1.wav"), str(tmp_path / "b" / "rec1.wav")])


def test_metrics_on_annotated_rows_equal_an_independent_count(tmp_path):
    """Two files: f (3 rows) with events, g (2 rows) annotated and empty; a third predicted file h not annotated."""
    (tmp_path / "f.txt").write_text("1\t2\ta\n6\t11\tb\n")  # a in row 0, b in rows 1 and 2
    (tmp_path / "g.txt").write_text("")
    truth = load_truth(tmp_path, fmt="audacity")
    classes = ["a", "b"]
    values = {("f", 0.0, "a"): 0.9, ("f", 5.0, "b"): 0.8, ("f", 10.0, "b"): 0.3, ("g", 0.0, "a"): 0.6}
    scores = scores_of({"f": 3, "g": 2, "h": 1}, classes, values)
    al = align_scores(scores, truth)
    assert al.row_ids == ["f@0", "f@5", "f@10", "g@0", "g@5"]
    assert al.unused.pred_rows_without_truth == ["h@0"]
    true = np.array([[1, 0], [0, 1], [0, 1], [0, 0], [0, 0]], bool)
    assert (al.true == true).all()
    s = al.scores["clipwise"]
    pred = s >= 0.5  # rows: {a}, {b}, {} (missed), {a} (false), {}
    assert row_f1(pred, true) == pytest.approx((1 + 1 + 0 + 0 + 1) / 5)  # an empty row predicted empty scores 1
    from sklearn.metrics import average_precision_score

    macro, micro = average_precision(s, true)
    assert macro == pytest.approx(np.mean([average_precision_score(true[:, k], s[:, k]) for k in range(2)]))
    assert micro == pytest.approx(average_precision_score(true.ravel(), s.ravel()))
    report = score_report(al)  # the three outputs' scores are equal here: the decided one alone is shown
    assert report["one_score_per_window"] and len(report["outputs"]) == 1
    assert {"event_recall", "event_precision"} <= set(next(iter(report["outputs"].values())))


def test_events_past_the_end_and_unpredicted_recordings_are_reported(tmp_path):
    (tmp_path / "f.txt").write_text("1\t2\ta\n40\t41\ta\n")  # f is 10 s long: the second call is past its end
    (tmp_path / "lost.txt").write_text("1\t2\ta\n")
    truth = load_truth(tmp_path, fmt="audacity")
    al = align_scores(scores_of({"f": 2}, ["a"]), truth)
    assert al.unused.events_past_end == [f"{tmp_path / 'f.txt'}: line 2"]
    assert al.unused.recordings_not_predicted == ["lost"] and "lost@0" in al.unused.truth_rows_without_pred
    lines = " ".join(al.unused.lines())
    assert "after their recording's end" in lines and "with no prediction" in lines
    from birdsed.errors import BirdsedError

    with pytest.raises(BirdsedError, match="--strict"):
        align_scores(scores_of({"f": 2}, ["a"]), truth, strict=True)


def test_min_overlap_out_of_range_is_refused():
    with pytest.raises(TruthError, match="min-overlap-s"):
        truth_rows(
            Truth("x", "table", events(("f", 0, 1, "a")), ["f"]),
            pd.DataFrame({"file": ["f"], "start_s": [0.0], "end_s": [5.0]}),
            min_overlap_s=0,
        )


def test_birdclef2021_soundscape_labels(tmp_path):
    from conftest import write_audio

    write_audio(tmp_path / "train_soundscapes" / "7019_COR_20190904.ogg", seconds=10, format="OGG", subtype="VORBIS")
    (tmp_path / "labels.csv").write_text(
        "row_id,site,audio_id,seconds,birds\n7019_COR_5,COR,7019,5,nocall\n"
        "7019_COR_10,COR,7019,10,rewbla bkcchi\n9999_SSW_5,SSW,9999,5,nocall\n"
    )
    truth = load_truth(tmp_path / "labels.csv")
    assert truth.fmt == "birdclef2021" and truth.not_listed == ["9999_SSW_5"]
    assert list(truth.rows["start_s"]) == [0.0, 5.0] and truth.rows["labels"].iloc[1] == {"rewbla", "bkcchi"}
    assert truth.rows["file"].iloc[0].endswith("7019_COR_20190904.ogg")


def test_raven_truth_of_synth_equals_its_kaggle_truth_row_for_row(synth_data, tmp_path):
    """synth writes its soundscapes' notes as Raven tables; evaluate on them = evaluate on test_labels.csv."""
    from conftest import tiny_model

    from birdsed.data.manifest import read_dataset
    from birdsed.evaluate.report import build_report
    from birdsed.evaluate.score import align_files, scores_report_from_files
    from birdsed.evaluate.tune import tune_model
    from birdsed.infer.predict import run_predict

    classes = read_dataset(synth_data).classes
    model = tiny_model(tmp_path / "m", classes)
    pred = tmp_path / "pred"
    run_predict(model, [], pred, test_csv=synth_data / "test.csv", quiet=True, workers=0)
    kag = align_files(pred / "scores.parquet", synth_data / "test_labels.csv")
    rav = align_files(pred / "scores.parquet", synth_data / "test_raven")
    test = pd.read_csv(synth_data / "test.csv")
    rows = test[test["seconds"].notna()]  # the row-labelled soundscapes (site 3's one whole-file row aside)
    paths = {r: str(p) for r, p in zip(kag.row_ids, kag.rows["file"])}
    kag_true = dict(zip(kag.row_ids, map(tuple, kag.true[:, : len(classes)])))
    rav_true = dict(zip(rav.row_ids, map(tuple, rav.true[:, : len(classes)])))
    for row_id, sec in zip(rows["row_id"], rows["seconds"]):
        assert kag_true[row_id] == rav_true[f"{paths[row_id]}@{float(sec) - 5:g}"], row_id
    assert rav.unused.lines() == []
    rep = scores_report_from_files(pred / "scores.parquet", synth_data / "test_raven")
    assert rep["outputs"]["clipwise"]["n_events"] > 0
    tuned = tune_model(model, pred / "scores.parquet", synth_data / "test_raven", dry_run=True)
    assert tuned.best_output in ("clipwise", "segmentwise", "att")
    page = build_report(pred, truth=synth_data / "test_raven")
    assert page.is_file() and "truth" in page.read_text()


def test_the_cli_choice_list_names_every_reader():
    from birdsed.config import TRUTH_FORMATS
    from birdsed.truth.formats import FORMATS

    assert set(TRUTH_FORMATS) == {"auto", *FORMATS, "cornell2020", "birdclef2021"}
