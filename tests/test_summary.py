"""`birdsed summary` (evaluate/summary.py): per species and recording / site / day / hour, decided as predict did,
streamed over scores.parquet row group by row group; refusals name what is missing."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from birdsed.cli import main
from birdsed.evaluate.summary import summarize
from birdsed.model.birdnet_labels import MODEL_FILE, SHA256
from birdsed.model.meta import model_digest

CLASSES = ["woothr", "eurbla", "mycall"]
SCORES = {  # per recording, per class: the clipwise score of each 5 s row
    "a.wav": {"woothr": [0.9, 0.1, 0.6, 0.1], "eurbla": [0.2] * 4, "mycall": [0.95, 0.1, 0.1, 0.85]},
    "b.wav": {"woothr": [0.1, 0.1, 0.1, 0.7], "eurbla": [0.3] * 4, "mycall": [0.1, 0.92, 0.1, 0.1]},
}


def make_pred(root, extra=None, model=True, last_row_s=5.0):
    """A predict folder: run.json, a model.json with thresholds (clipwise 0.5, mycall 0.9), scores.parquet with one
    row group per recording (extra: further columns per recording, e.g. site, time)."""
    m = root / "model"
    m.mkdir(parents=True)
    thresholds = {"global": {"clipwise": 0.5}, "per_class": {"clipwise": {"mycall": 0.9}}}
    birdnet = {"model_file": MODEL_FILE, "sha256": SHA256[MODEL_FILE], "n_labels": 6522, "indices": [-1] * 3}
    meta = {"kind": "birdnet", "classes": CLASSES, "birdnet": birdnet, "thresholds": thresholds}  # a whole model.json
    meta["default_output"] = "clipwise"
    (m / "model.json").write_text(json.dumps(meta))
    pred = root / "pred"
    pred.mkdir()
    (pred / "run.json").write_text(json.dumps({"model": str(m), "model_sha256": model_digest(m), "classes": CLASSES}))
    writer = None
    for f, per_class in SCORES.items():
        n = len(per_class["woothr"])
        parts = []
        for kind in ("clipwise", "segmentwise", "att"):
            start = np.arange(n) * 5.0
            end = start + 5.0
            end[-1] = start[-1] + last_row_s
            df = pd.DataFrame({"file": f, "start_s": start, "end_s": end, "output": kind})
            for c in CLASSES:
                df[c] = np.float32(per_class[c]) if kind == "clipwise" else np.float32(0.0)
            for col, values in (extra or {}).get(f, {}).items():
                df[col] = values
            parts.append(df)
        table = pa.Table.from_pandas(pd.concat(parts), preserve_index=False)
        writer = writer or pq.ParquetWriter(pred / "scores.parquet", table.schema)
        writer.write_table(table)  # one row group per recording, as predict writes them
    writer.close()
    if not model:
        (m / "model.json").unlink()
    return pred


def run_cli(capsys, *argv):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_summary_per_species_over_the_archive_decided_with_the_models_thresholds(tmp_path):
    pred = make_pred(tmp_path, last_row_s=2.5)
    assert pq.ParquetFile(pred / "scores.parquet").num_row_groups == 2
    table, decision = summarize(pred)
    by = table.set_index("class")
    assert list(table["class"]) == ["woothr", "mycall"]  # eurbla never passes 0.5; most rows first
    w = by.loc["woothr"]
    assert (w.rows, w.first_file, w.first_s, w.last_file, w.last_s) == (3, "a.wav", 0.0, "b.wav", 15.0)
    assert w.minutes == pytest.approx((5 + 5 + 2.5) / 60, abs=0.01)  # b.wav's last row is 2.5 s long
    assert w.code == "woothr" and w.common == "Wood Thrush" and w.scientific == "Hylocichla mustelina"
    recorded_h = (4 * 5 - 2.5) * 2 / 3600
    assert w.hours_recorded == pytest.approx(recorded_h, abs=1e-3)
    assert w.per_hour == pytest.approx(3 / recorded_h, rel=1e-3) and w.max_score == pytest.approx(0.9)
    c = by.loc["mycall"]  # its own threshold 0.9: 0.85 is not a detection
    assert (c.rows, c.first_file, c.first_s, c.last_file, c.last_s) == (2, "a.wav", 0.0, "b.wav", 5.0)
    assert c.common == "" and c.max_score == pytest.approx(0.95)


def test_summary_by_recording_and_the_cli_writes_csv_and_parquet(tmp_path, capsys):
    pred = make_pred(tmp_path)
    rc, text = run_cli(capsys, "summary", pred, "--by", "recording", "--out", tmp_path / "s.csv")
    assert rc == 0 and "woothr" in text and "clipwise" in text
    csv = pd.read_csv(tmp_path / "s.csv")
    assert list(zip(csv["file"], csv["class"], csv["rows"])) == [
        ("a.wav", "woothr", 2),
        ("a.wav", "mycall", 1),
        ("b.wav", "woothr", 1),  # a tie: in the model's class order
        ("b.wav", "mycall", 1),
    ]
    rc, _ = run_cli(capsys, "summary", pred, "--by", "recording", "--out", tmp_path / "s.parquet")
    assert rc == 0
    parquet = pd.read_parquet(tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(parquet, pd.read_csv(tmp_path / "s.csv", keep_default_na=False), check_dtype=False)


def test_summary_uses_the_threshold_and_output_predict_was_given(tmp_path):
    pred = make_pred(tmp_path)
    assert summarize(pred, threshold=0.05)[0].set_index("class").loc["eurbla", "rows"] == 8
    assert summarize(pred, output="segmentwise")[0].empty  # all 0 there
    shards = pred / "shards"
    shards.mkdir()
    spec = {"formats": ["csv"], "decision": {"output": None, "threshold": 0.25, "max_birds": None}}
    (shards / "1-of-1.json").write_text(json.dumps({"shard": 1, "of": 1, "files": [], "errors": [], "spec": spec}))
    table, decision = summarize(pred)  # a sharded run's options are kept with it
    assert decision.options.threshold == 0.25 and table.set_index("class").loc["eurbla", "rows"] == 4


def test_summary_by_site_day_and_hour_when_the_scores_carry_them(tmp_path):
    times = {
        "a.wav": pd.date_range("2026-06-01 05:59:50", periods=4, freq="5s"),
        "b.wav": pd.date_range("2026-06-02 07:00:00", periods=4, freq="5s"),
    }
    extra = {f: {"site": "north" if f == "a.wav" else "south", "time": t} for f, t in times.items()}
    pred = make_pred(tmp_path, extra)
    day = summarize(pred, by="day")[0]
    assert set(zip(day["day"], day["class"], day["rows"])) == {
        ("2026-06-01", "woothr", 2),
        ("2026-06-01", "mycall", 1),
        ("2026-06-02", "woothr", 1),
        ("2026-06-02", "mycall", 1),
    }
    hour = summarize(pred, by="hour")[0].set_index(["hour", "class"])
    assert hour.loc[("05", "woothr"), "rows"] == 1 and hour.loc[("06", "woothr"), "rows"] == 1
    first = summarize(pred)[0].set_index("class").loc["woothr", "first_time"]
    assert pd.Timestamp(first) == pd.Timestamp("2026-06-01 05:59:50")
    site = summarize(pred, by="site")[0]
    assert set(site["site"]) == {"north", "south"}


@pytest.mark.parametrize(
    "by, message",
    [
        ("site", "--by site needs each recording's site: neither"),
        ("day", "--by day needs each recording's start time: neither"),
        ("hour", "--by hour needs each recording's start time: neither"),
    ],
)
def test_summary_by_site_day_or_hour_without_them_says_what_is_missing(tmp_path, capsys, by, message):
    pred = make_pred(tmp_path)
    rc, text = run_cli(capsys, "summary", pred, "--by", by, "--out", tmp_path / "s.csv")
    assert rc == 2 and message in text and "scores.parquet" in text and "recordings.csv" in text
    assert not (tmp_path / "s.csv").exists()


def _recordings(pred, rows):
    """PRED/recordings.csv as predict writes it: file, site, lat, lon, timezone, start, duration_s."""
    columns = ["file", "site", "lat", "lon", "timezone", "start", "duration_s"]
    pd.DataFrame(rows, columns=columns).to_csv(pred / "recordings.csv", index=False)


def test_summary_by_site_day_and_hour_from_predicts_recordings_table(tmp_path):
    """Places and times from recordings.csv: a day and an hour are the recording's local ones (a.wav starts at
    05:59:50 in Paris, 03:59:50 UTC); a recording without a site or a start falls in the group "unknown"."""
    pred = make_pred(tmp_path)
    _recordings(
        pred,
        [
            ("a.wav", "north", 43.6, 3.9, "Europe/Paris", "2026-06-01T05:59:50+02:00", 20.0),
            ("b.wav", "", "", "", "", "", 20.0),
        ],
    )
    hour = summarize(pred, by="hour")[0].set_index(["hour", "class"])
    assert hour.loc[("05", "woothr"), "rows"] == 1 and hour.loc[("06", "woothr"), "rows"] == 1
    assert hour.loc[("unknown", "woothr"), "rows"] == 1
    day = summarize(pred, by="day")[0].set_index(["day", "class"])
    assert day.loc[("2026-06-01", "mycall"), "rows"] == 1 and day.loc[("unknown", "mycall"), "rows"] == 1
    site = summarize(pred, by="site")[0].set_index(["site", "class"])
    assert site.loc[("north", "woothr"), "rows"] == 2 and site.loc[("unknown", "woothr"), "rows"] == 1
    north = summarize(pred, by="site")[0].query("site == 'north' and `class` == 'woothr'").iloc[0]
    assert (north["first_time"], north["last_time"]) == ("2026-06-01T05:59:50+02:00", "2026-06-01T06:00:00+02:00")


def test_summary_first_and_last_follow_the_recordings_times(tmp_path):
    """b.wav was recorded a day before a.wav: its woothr row is the first, whatever the order of the scores."""
    pred = make_pred(tmp_path)
    _recordings(
        pred,
        [
            ("a.wav", "n", 1, 2, "UTC", "2026-06-02T05:00:00+00:00", 20.0),
            ("b.wav", "n", 1, 2, "America/Los_Angeles", "2026-06-01T05:00:00-07:00", 20.0),
        ],
    )
    w = summarize(pred)[0].set_index("class").loc["woothr"]
    assert (w["first_file"], w["first_time"]) == ("b.wav", "2026-06-01T05:00:15-07:00")
    assert (w["last_file"], w["last_time"]) == ("a.wav", "2026-06-02T05:00:10+00:00")
    assert w["common"] == "Wood Thrush" and w["scientific"] == "Hylocichla mustelina"


def test_summary_refusals_name_the_file(tmp_path, capsys):
    pred = make_pred(tmp_path, model=False)
    rc, text = run_cli(capsys, "summary", pred)
    assert rc == 2 and "is not there or changed" in text and "give --threshold" in text
    rc, text = run_cli(capsys, "summary", pred, "--threshold", 0.5)
    assert rc == 0 and "woothr" in text
    rc, text = run_cli(capsys, "summary", pred, "--threshold", 0.5, "--out", tmp_path / "s.xlsx")
    assert rc == 2 and "written as .csv or .parquet" in text and not (tmp_path / "s.xlsx").exists()
    (pred / "scores.parquet").write_bytes(b"not parquet")
    rc, text = run_cli(capsys, "summary", pred, "--threshold", 0.5)
    assert rc == 2 and "scores.parquet: not a readable Parquet file" in text
    rc, text = run_cli(capsys, "summary", tmp_path)
    assert rc == 2 and "scores.parquet not found" in text
