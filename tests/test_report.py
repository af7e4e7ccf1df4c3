import base64
import json
import math
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdsed.config import OUTPUT_KINDS
from birdsed.evaluate.report import build_report
from birdsed.infer.predict import run_predict


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.stack_ok = [], [], True

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])


@pytest.fixture(scope="module")
def report_page(synth_data, trained_run, tmp_path_factory):
    run, model_dir = trained_run
    tmp = tmp_path_factory.mktemp("report")
    run_predict(model_dir, [], tmp / "pred", test_csv=synth_data / "test.csv", quiet=True, workers=0)
    page = build_report(tmp / "pred", truth=synth_data / "test_labels.csv", run_dir=run, page_s=20.0)
    return page


def test_report_is_self_contained_with_valid_images(report_page):
    text = report_page.read_text()
    p = _Collect()
    p.feed(text)
    assert {"html", "h1", "table", "img", "svg", "figure"} <= set(p.tags)
    assert "<script" not in text and "<link" not in text and "url(" not in text  # nothing to fetch
    assert len(p.imgs) >= 2 + 2 * 2  # sweep + training + 2 recordings of 30 s in 20 s pages
    magic = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff"}
    for src in p.imgs:
        kind = src.removeprefix("data:image/").split(";", 1)[0]
        assert src.startswith(f"data:image/{kind};base64,") and kind in magic
        assert base64.b64decode(src.split(",", 1)[1]).startswith(magic[kind])
    assert "row-wise micro F1" in text and "Detections per class" in text and "Training" in text


def test_report_has_per_class_scores_at_the_threshold_used_and_the_decision_as_run_json_records_it(report_page):
    text = report_page.read_text()
    run = json.loads((report_page.parent / "run.json").read_text())["decision"]
    decision = text.split("id=decision>", 1)[1].split("</table>", 1)[0]
    assert f"<th>output</th><td>{run['output']}</td>" in decision
    assert f"<th>threshold</th><td>{run['threshold']:g}</td>" in decision and "decision record" in decision
    per_class = text.split("id=per-class>", 1)[1].split("</table>", 1)[0]
    assert "<th>precision</th><th>recall</th><th>F1</th>" in per_class
    assert f"Per class, at the threshold used ({run['output']} {run['threshold']:g})" in text
    assert per_class.count("<tr>") >= 1  # the synthetic species with truth


def recording_folder(folder: Path, seconds: float, scores: dict[str, list[float]], threshold: float = 0.5) -> Path:
    """A predict folder over one recording of noise: its scores per 5 s row (every output kind alike) and the rows
    at or over `threshold` as detections."""
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / "rec.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.05, int(32000 * seconds)).astype("float32"), 32000)
    n = math.ceil(seconds / 5)
    start = np.arange(n) * 5.0
    table = pd.DataFrame({"file": str(wav), "start_s": start, "end_s": np.minimum(start + 5, seconds)})
    for c, v in scores.items():
        table[c] = np.float32(v)
    parts = [table.assign(output=k) for k in OUTPUT_KINDS]
    pd.concat(parts)[["file", "start_s", "end_s", "output", *scores]].to_parquet(folder / "scores.parquet")
    long = table.melt(["file", "start_s", "end_s"], var_name="label", value_name="score")
    long[long["score"] >= threshold].to_csv(folder / "detections.csv", index=False)
    return folder


class _Page(HTMLParser):
    """The report's panels, detection links, curves and legend swatches, as parsed."""

    def __init__(self):
        super().__init__()
        self.panels, self.links, self.listen, self.curves, self.legend = [], [], [], [], {}
        self._legend_label = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure" and a.get("class") == "panel":
            self.panels.append((float(a["data-start-s"]), float(a["data-end-s"])))
        elif tag == "a" and a.get("class") == "det":
            self.links.append(a["href"])
        elif tag == "a" and a.get("class") == "listen":
            self.listen.append(a["href"])
        elif tag == "polyline":
            self.curves.append(a["stroke"])
        elif tag == "td" and a.get("class") == "sp":
            self._legend_label = a["data-label"]
        elif tag == "span" and self._legend_label is not None:
            self.legend[self._legend_label] = a["style"].split("background:", 1)[1]
            self._legend_label = None


def test_each_recording_is_drawn_whole_in_panels_with_khz_and_time_axes(tmp_path):
    pred = recording_folder(tmp_path / "pred", 130.0, {"a": [0.9] + [0.1] * 25})
    text = build_report(pred, page_s=60.0).read_text()
    page = _Page()
    page.feed(text)
    assert page.panels == [(0.0, 60.0), (60.0, 120.0), (120.0, 130.0)]  # all of it, in order, nothing in between
    assert "kHz" in text and ">16</text>" in text and "mel bin" not in text  # frequency in kHz, 0 to 16
    assert ">2:00</text>" in text and ">m:ss</text>" in text  # a recording of a minute or more: m:ss
    assert "overflow" not in text and "max-height" not in text  # no scroll box: a print shows every panel
    cut = _Page()
    cut.feed(text := build_report(pred, page_s=60.0, max_minutes=1.0).read_text())
    assert cut.panels == [(0.0, 60.0)] and "only its first 1 min drawn (--max-minutes)" in text  # said, not hidden
    short = recording_folder(tmp_path / "short", 12.0, {"a": [0.9, 0.1, 0.1]})
    assert ">10</text>" in build_report(short, page_s=60.0).read_text()  # under a minute: seconds


def test_a_recording_not_found_from_here_is_said_on_the_console_too(tmp_path, caplog):
    """A report built from another folder than predict's (relative paths): the page said why, the console nothing."""
    pred = recording_folder(tmp_path / "pred", 12.0, {"a": [0.9, 0.1, 0.1]})
    (pred / "rec.wav").unlink()
    text = build_report(pred, page_s=60.0).read_text()
    assert (
        "rec.wav: file not found" in text and "report: not drawn: " in caplog.text and "file not found" in caplog.text
    )


def test_every_detected_species_has_a_lane_a_curve_a_link_to_its_card_and_its_own_colour(tmp_path):
    from birdsed.evaluate.palette import PALETTE, home_slot
    from birdsed.review.links import card_url

    species = ["woothr", "amecro", "amerob", "blujay", "houspa", "eurbla", "sonthr"]  # more than the 5 drawn before
    scores = {c: [0.9 if i == k % 3 else 0.1 for i in range(4)] for k, c in enumerate(species)}
    pred = recording_folder(tmp_path / "pred", 20.0, scores)
    text = build_report(pred, review_port=9123).read_text()
    page = _Page()
    page.feed(text)
    det = pd.read_csv(pred / "detections.csv")
    assert set(page.legend) == set(species) and len(set(page.legend.values())) == len(species)  # all named, apart
    assert sorted(page.curves) == sorted(page.legend.values())  # one score curve each, in its legend colour
    assert sorted(page.links) == sorted(
        card_url(r.label, r.file, r.start_s, "http://127.0.0.1:9123/") for r in det.itertuples()
    )  # every detection opens its card on the review server
    assert "birdsed review" in text and "--port 9123" in text  # and the page says how to start it
    wav = det["file"][0]  # any 5 s row can be listened to: the spectrogram links each to its top class's card
    top = [max(species, key=lambda c: scores[c][i]) for i in range(4)]  # the first of equal ones, as argmax
    assert page.listen == [card_url(top[i], wav, 5.0 * i, "http://127.0.0.1:9123/") for i in range(4)]
    again = build_report(recording_folder(tmp_path / "other", 20.0, {"woothr": scores["woothr"]})).read_text()
    other = _Page()
    other.feed(again)
    assert other.legend["woothr"] == page.legend["woothr"] == PALETTE[home_slot("woothr")]  # the same in every report


def test_colours_are_stable_across_processes_and_distinct_within_a_report():
    from birdsed.evaluate.palette import PALETTE, class_colours, home_slot

    names = [f"sp{i}" for i in range(12)]
    code = "from birdsed.evaluate.palette import class_colours as c; print(c([f'sp{i}' for i in range(12)]))"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True
        ).stdout
        for seed in ("1", "2")
    }
    assert runs == {f"{class_colours(names)}\n"}  # not Python's salted hash
    a, b = next((x, y) for x in names for y in names if x < y and home_slot(x) == home_slot(y))
    colours = class_colours([a, b])
    assert colours[a] == PALETTE[home_slot(a)] and colours[b] != colours[a]  # a collision: the first keeps its home
    assert class_colours([a, b], first=[b])[b] == PALETTE[home_slot(b)]  # detected species are placed first
    assert len(set(class_colours([f"x{i}" for i in range(len(PALETTE))]).values())) == len(PALETTE)


def test_activity_by_hour_and_date_when_the_scores_carry_start_times(tmp_path):
    from test_summary import make_pred

    times = {
        "a.wav": pd.date_range("2024-06-01 05:00", periods=4, freq="5s"),
        "b.wav": pd.date_range("2024-06-02 18:59:55", periods=4, freq="5s"),
    }
    pred = make_pred(tmp_path, extra={f: {"time": t} for f, t in times.items()})
    text = build_report(pred).read_text()
    by_hour = text.split("id=by-hour>", 1)[1].split("</table>", 1)[0]
    by_day = text.split("id=by-day>", 1)[1].split("</table>", 1)[0]
    # woothr (threshold 0.5): a.wav 05:00:00 and 05:00:10, b.wav 19:00:10; mycall (0.9): a.wav 05:00:00, b.wav 19:00:00
    rows = {r.split("</th>", 1)[0].rsplit(">", 1)[-1]: r for r in by_hour.split("<tr")[1:]}
    cells = lambda row: [c.split(">", 1)[1] for c in row.split("<td")[1:]]  # noqa: E731
    assert cells(rows["woothr"])[5] == "2</td>" and cells(rows["woothr"])[19] == "1</td>"
    assert cells(rows["all species"])[5] == "3</td>" and cells(rows["all species"])[19] == "2</td>"
    assert "<th>2024-06-01</th><th>2024-06-02</th>" in by_day
    from test_summary import _recordings

    listed = make_pred(tmp_path / "listed")  # what predict writes: each recording's start in recordings.csv
    _recordings(listed, [("a.wav", "north", 43.6, 3.9, "Europe/Paris", "2026-06-01T05:59:50+02:00", 20.0)])
    text = build_report(listed).read_text()
    by_hour = text.split("id=by-hour>", 1)[1].split("</table>", 1)[0]
    assert "<th>05</th><th>06</th>" in by_hour and "<th>unknown</th>" in by_hour  # b.wav has no start: unknown
    plain = build_report(make_pred(tmp_path / "plain")).read_text()
    assert "Activity" not in plain  # no start times: no activity section


def test_report_needs_predictions(tmp_path):
    from birdsed.errors import BirdsedError

    with pytest.raises(BirdsedError, match="no scores.parquet"):
        build_report(tmp_path)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report_page, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium not installed (apt-get install chromium)")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            report_page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a page with pictures, not a blank one
