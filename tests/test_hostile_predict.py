"""`predict` tried as a hostile user would (issue #40): absurd values, shards whose inputs change, recordings changed
after they were scored, odd and long file names, the same recording twice, spreadsheet formulas in names.

Each test asserts the exit status (0 all done, 1 done with skipped items, 2 refused), the message naming the thing and
that no other recording's outputs are lost. docs/reliability.md has the table of what is tried here.
"""

import csv
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli, write_audio

from birdsed.cli import main
from birdsed.errors import BirdsedError


def predict(capsys, model_dir, out, *args) -> tuple[int, str]:
    return run_cli(capsys, "predict", "--model", model_dir, *args, "--out", out, "--workers", 0, "--quiet")


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--hop-s", "nan", "finite"),
        ("--hop-s", "inf", "finite"),
        ("--hop-s", "0.0001", ">= 0.05"),
        ("--window-s", "nan", "finite"),
        ("--window-s", "inf", "finite"),
        ("--window-s", "1e9", "<= 60"),
        ("--workers", "-1", ">= 0"),
        ("--workers", "10000", "<= "),
        ("--threshold", "nan", "finite"),
        ("--threshold", "2", "<= 1"),
        ("--threshold", "-1", ">= 0"),
        ("--max-birds", "0", ">= 1"),
        ("--max-birds", "-3", ">= 1"),
        ("--batch-size", "0", ">= 1"),
        ("--batch-size", "-5", ">= 1"),
    ],
)
def test_absurd_predict_values_are_refused_before_anything_runs(model_dir, tmp_path, capsys, option, value, says):
    write_audio(tmp_path / "in" / "a.wav", seconds=3.0)
    out = tmp_path / "out"
    argv = ["predict", "--model", model_dir, tmp_path / "in", "--out", out, option, value]
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and option in err and says in err, err
    assert "Traceback" not in err and not out.exists()


def test_a_shard_count_beyond_any_job_array_is_refused(model_dir, tmp_path, capsys):
    write_audio(tmp_path / "in" / "a.wav", seconds=3.0)
    rc, text = predict(capsys, model_dir, tmp_path / "out", tmp_path / "in", "--shard", "1/99999999999")
    assert rc == 2 and "--shard" in text and "N must be <= 100000" in text


def test_the_same_recording_given_twice_is_predicted_once(model_dir, tmp_path, capsys, monkeypatch):
    one = tmp_path / "one"
    write_audio(one / "x.wav", seconds=3.0)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    rc, text = predict(capsys, model_dir, out, "one", "one/x.wav", one / "x.wav", "one/../one/x.wav")
    assert rc == 0, text
    assert "1 recording(s)" in text
    assert pd.read_parquet(out / "scores.parquet")["file"].unique().tolist() == [str(Path("one") / "x.wav")]


def test_a_file_named_like_a_spreadsheet_formula_is_written_as_text(model_dir, tmp_path, capsys):
    from birdsed.evaluate.report import read_detections
    from birdsed.rows import plain_cell
    from birdsed.truth.formats import Table

    name = '=HYPERLINK("x").wav'
    write_audio(tmp_path / "in" / name, seconds=3.0)
    (tmp_path / "in" / "@bad.wav").write_bytes(b"not audio")
    out = tmp_path / "out"
    rc, text = predict(capsys, model_dir, out, tmp_path / "in", "--threshold", "0")
    assert rc == 1, text
    for table in ("detections.csv", "errors.csv"):
        cells = [c for line in (out / table).read_text().splitlines()[1:] for c in next(csv.reader([line]))]
        assert cells and not [c for c in cells if c[:1] in ("=", "+", "@", "-")], (table, cells)
    det = read_detections(out / "detections.csv")
    assert set(det["file"]) == {str(tmp_path / "in" / name)}  # read back as it was
    assert pd.read_csv(out / "errors.csv")["file"].map(plain_cell).tolist() == [str(tmp_path / "in" / "@bad.wav")]
    events, files = Table.read(out / "detections.csv")  # detections.csv as evaluate's truth: the names as they were
    assert files == [str(tmp_path / "in" / name)]


def test_a_file_name_too_long_for_a_raven_table_keeps_every_output(model_dir, tmp_path, capsys):
    long = "b" * 221 + ".wav"  # 225 characters: NAME.Table.1.selections.txt and its temporary name exceed 255 bytes
    write_audio(tmp_path / "in" / long, seconds=3.0)
    write_audio(tmp_path / "in" / "short.wav", seconds=3.0)
    out = tmp_path / "out"
    rc, text = predict(capsys, model_dir, out, tmp_path / "in", "--format", "csv", "raven", "audacity")
    assert rc == 0, text
    assert pd.read_parquet(out / "scores.parquet")["file"].nunique() == 2
    raven = sorted(p.name for p in (out / "raven").iterdir())
    assert len(raven) == 2 and "short.Table.1.selections.txt" in raven
    assert all(len(n.encode()) < 255 - 30 for n in raven)
    assert len(list((out / "audacity").iterdir())) == 2


def test_demo_says_where_it_writes_before_it_starts(tmp_path, capsys, monkeypatch):
    import birdsed.demo

    def refuse(*args, **kwargs):
        raise BirdsedError("stopped here")

    monkeypatch.setattr(birdsed.demo, "run_demo", refuse)
    monkeypatch.chdir(tmp_path)
    rc, text = run_cli(capsys, "demo")
    assert rc == 2 and str(tmp_path / "birdsed-demo") in text.replace("\n", "")


def test_a_file_name_that_is_not_utf8_is_reported_alone(model_dir, tmp_path, capsys):
    d = tmp_path / "in"
    write_audio(d / "good.wav", seconds=3.0)
    shutil.copy(d / "good.wav", os.fsdecode(os.fsencode(d) + b"/\xff.wav"))
    out = tmp_path / "out"
    rc, text = predict(capsys, model_dir, out, d, "--format", "csv", "raven", "audacity")
    assert rc == 1, text
    assert pd.read_parquet(out / "scores.parquet")["file"].tolist()[:1] == [str(d / "good.wav")]
    errors = pd.read_csv(out / "errors.csv")
    assert errors["file"].tolist() == [f"{d}/\\xff.wav"] and "not valid UTF-8" in errors["reason"][0]


def test_a_data_set_path_that_is_not_utf8_is_reported_by_prepare(tmp_path, capsys):
    root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/ds\xff"))
    write_audio(tmp_path / "a.wav", seconds=1.0)
    (root / "audio").mkdir(parents=True)
    shutil.copy(tmp_path / "a.wav", root / "audio" / "a.wav")
    (root / "labels.csv").write_text("filename,labels\na.wav,x\n")
    rc, text = run_cli(capsys, "prepare", root, "--out", tmp_path / "store", "--workers", 1)
    assert rc == 1, text
    report = pd.read_csv(tmp_path / "store" / "report.csv")
    assert report["recording_id"].tolist() == ["a.wav"] and "ds\\xff" in report["reason"][0]


def test_outputs_of_a_format_not_asked_again_are_kept_and_said(model_dir, tmp_path, capsys, caplog):
    """A re-run into the same --out with other formats left the earlier run's Raven tables (made at another decision
    or with other names) without a word; they are kept (a Raven table may hold someone's edits) and said."""
    d = tmp_path / "in"
    write_audio(d / "a.wav", seconds=6.0)
    out = tmp_path / "out"
    assert predict(capsys, model_dir, out, d, "--format", "csv", "raven", "audacity")[0] == 0
    assert "from an earlier run" not in caplog.text
    assert predict(capsys, model_dir, out, d, "--format", "csv", "raven-all", "--threshold", "0.9")[0] == 0
    said = " ".join(caplog.text.split())
    assert f"{out / 'raven'}, {out / 'audacity'}: from an earlier run, not written this time" in said, said
    assert (out / "raven").is_dir() and (out / "raven.selections.txt").is_file()


def test_a_recording_changed_after_it_was_scored_is_scored_again(model_dir, tmp_path, capsys):
    d = tmp_path / "in"
    write_audio(d / "a.wav", seconds=3.0)
    write_audio(d / "b.wav", seconds=3.0)
    out = tmp_path / "out"
    assert predict(capsys, model_dir, out, d)[0] == 0
    first = pd.read_parquet(out / "scores.parquet")
    write_audio(d / "a.wav", seconds=12.0, freq_hz=3000.0)  # replaced (or it was still being written before)
    rc, text = predict(capsys, model_dir, out, d)
    assert rc == 0 and "1 done before; 1 changed since scored, scored again" in text, text
    again = pd.read_parquet(out / "scores.parquet")
    assert again[again["file"] == str(d / "a.wav")]["end_s"].max() > first["end_s"].max()
    assert len(list((out / "parts").glob("*.parquet"))) == 2  # the old part of a.wav is gone
    rc, text = predict(capsys, model_dir, out, d)
    assert rc == 0 and "2 done before); no new audio (" in text, text  # was "0.00 h of audio ... = 0x real time"


def test_a_rerun_given_fewer_inputs_says_the_others_are_left_out(model_dir, tmp_path, capsys):
    """A user who adds a new SD card's folder into the same --out: the combined outputs list only the inputs given,
    which was said nowhere (found by a hostile try as a BirdNET user)."""
    old, new = tmp_path / "card1", tmp_path / "card2"
    write_audio(old / "a.wav", seconds=3.0)
    write_audio(old / "b.wav", seconds=3.0)
    write_audio(new / "c.wav", seconds=3.0)
    out = tmp_path / "out"
    assert predict(capsys, model_dir, out, old)[0] == 0
    rc, text = predict(capsys, model_dir, out, new)
    said = " ".join(text.split())
    assert rc == 0 and "also holds the scores of 2 recording(s) not given this time" in said, text
    assert set(pd.read_parquet(out / "scores.parquet")["file"]) == {str(new / "c.wav")}
    rc, text = predict(capsys, model_dir, out, old, new)
    assert rc == 0 and "3 done before)" in text and "not given this time" not in text, text


def test_a_stopped_predict_says_what_it_kept_and_how_to_go_on(model_dir, tmp_path, capsys, monkeypatch):
    """Ctrl-C of predict said only "stopped by SIGINT." (the README: what was kept and how to go on)."""
    from birdsed.infer import predict as predict_module

    d = tmp_path / "in"
    for name in ("a.wav", "b.wav"):
        write_audio(d / name, seconds=3.0)
    out = tmp_path / "out"
    assert predict(capsys, model_dir, out, d / "a.wav")[0] == 0

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_module, "run_predict", stopped)
    rc, text = predict(capsys, model_dir, out, d)
    said = " ".join(text.split())
    assert rc == 130 and f"stopped by SIGINT. {out / 'parts'} holds 1 recording(s) scored" in said, text
    rc, text = predict(capsys, model_dir, tmp_path / "fresh", d)
    assert rc == 130 and "No recording had been scored; the same command starts again." in " ".join(text.split())


def test_a_mistyped_input_is_refused_before_anything_is_written(model_dir, tmp_path, capsys):
    """predict ... nosuchdir made OUT, wrote empty outputs and exited 1 with errors.csv (a batch item)."""
    write_audio(tmp_path / "in" / "a.wav", seconds=3.0)
    rc, text = predict(capsys, model_dir, tmp_path / "out", tmp_path / "in", tmp_path / "nosuchdir")
    assert rc == 2 and "nosuchdir: no such file or folder (check the path); nothing was run" in text, text
    assert not (tmp_path / "out").exists()


def test_a_recording_whose_size_changes_between_shards_is_in_one_shard(model_dir, tmp_path, capsys):
    d = tmp_path / "in"
    write_audio(d / "a.wav", seconds=6.0)
    write_audio(d / "b.wav", seconds=3.0)
    out = tmp_path / "out"
    rc, text = predict(capsys, model_dir, out, d, "--shard", "1/2")  # by size: a.wav in shard 1, b.wav in shard 2
    assert rc == 0 and "wait for the other shards" in text, text
    write_audio(d / "b.wav", seconds=9.0)  # now the larger: shard 1 by size at shard 2's start
    rc, text = predict(capsys, model_dir, out, d, "--shard", "2/2")
    assert rc == 0, text
    assert sorted(pd.read_parquet(out / "scores.parquet")["file"].unique()) == [str(d / "a.wav"), str(d / "b.wav")]
    assert pd.read_csv(out / "errors.csv").empty


def test_a_recording_of_the_input_set_missing_from_the_merge_is_an_error(model_dir, tmp_path, capsys):
    d = tmp_path / "in"
    write_audio(d / "a.wav", seconds=3.0)
    write_audio(d / "b.wav", seconds=3.0)
    out = tmp_path / "out"
    for i in (1, 2):
        assert predict(capsys, model_dir, out, d, "--shard", f"{i}/2")[0] == 0
    (out / "shards" / "1-of-2.json").write_text(  # a shard whose record lost a recording (or an older birdsed's)
        (out / "shards" / "1-of-2.json").read_text().replace(str(d / "a.wav"), str(d / "x.wav"))
    )
    rc, text = run_cli(capsys, "merge", out)
    assert rc == 1, text
    errors = pd.read_csv(out / "errors.csv")
    assert str(d / "a.wav") in errors["file"].tolist() and "in no shard's outputs" in " ".join(errors["reason"])


def test_text_cells_of_any_text_dtype_are_made_spreadsheet_safe():
    """pandas 3 infers a string dtype for columns of str (not object): they are text cells too."""
    from birdsed.infer.writers import spreadsheet_safe

    df = pd.DataFrame({"file": ["=HYPERLINK(1).wav", "a.wav"], "label": ["+bird", "-x"], "score": [0.5, 0.25]})
    df["obj"] = pd.Series(["@sum", "b"], dtype=object)
    safe = spreadsheet_safe(df)
    assert list(safe["file"]) == ["'=HYPERLINK(1).wav", "a.wav"] and list(safe["label"]) == ["'+bird", "'-x"]
    assert list(safe["obj"]) == ["'@sum", "b"] and list(safe["score"]) == [0.5, 0.25]
