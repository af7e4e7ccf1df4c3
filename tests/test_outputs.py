"""predict's combined outputs (outputs.py, writers.py): one writer per format, chosen by name; the files are those
birdsed wrote before the writers were split, with the columns added since appended (names and places, issue #36) and
recordings.csv (golden copies in tests/data/combined_outputs/: what `combined_outputs`
below returned when run on the code of before)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from birdsed.data.store import recording_key
from birdsed.decisions import Thresholds
from birdsed.infer.outputs import DecisionOptions, OutputSpec, write_combined
from birdsed.infer.writers import WRITERS

GOLDEN = Path(__file__).parent / "data" / "combined_outputs"
CLASSES = ["amecro", "blujay", "norcar"]
# recordings: two of one stem in two folders (label files named by key), one with nothing above the thresholds,
# one whose name a spreadsheet would read as a formula; seconds of audio each
RECORDINGS = {"rec.wav": 17.0, "b/rec.wav": 10.0, "quiet.wav": 5.0, "=x.wav": 12.5}
VARIANTS = {  # name: (formats, how the submission is asked for)
    "cornell": (("csv", "raven", "audacity"), "test_csv"),
    "birdclef": (("csv", "kaggle", "raven", "audacity"), "sample_submission"),
}


def _parts(audio: Path, parts: Path) -> list[tuple[str, Path]]:
    """One part per recording, with fixed scores (every output kind, as infer/grid.rows_table writes them)."""
    rng = np.random.default_rng(0)
    pairs = []
    for k, (name, seconds) in enumerate(RECORDINGS.items()):
        f = str((audio / name).resolve())  # as test.csv's audio is found (kaggle.cornell.read_kaggle_test)
        n = int(np.ceil(seconds / 5.0))
        frames = []
        for kind in ("clipwise", "segmentwise", "att"):
            starts = np.arange(n) * 5.0
            scores = rng.random((n, len(CLASSES)), dtype=np.float32) * (0.1 if name == "quiet.wav" else 1.0)
            df = pd.DataFrame(scores, columns=CLASSES)
            df.insert(0, "file", f)
            df.insert(1, "start_s", starts)
            df.insert(2, "end_s", np.minimum(starts + 5.0, seconds))
            df.insert(3, "output", kind)
            frames.append(df)
        path = parts / f"r{k}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
        pairs.append((f, path))
    return pairs


def combined_outputs(tmp_path: Path, variant: str) -> dict[str, bytes]:
    """write_combined over fixed parts with every format of `variant`: {file relative to OUT: bytes}, the paths of
    tmp_path written as {TMP}, recording keys as {KEY} (scores.parquet as its table in CSV, scores.parquet.csv: the
    file's own bytes hold pyarrow's version)."""
    formats, submission = VARIANTS[variant]
    audio, out = tmp_path / "audio", tmp_path / "out"
    for name in RECORDINGS:
        (audio / name).parent.mkdir(parents=True, exist_ok=True)
        (audio / name).write_bytes(b"")
    if submission == "test_csv":
        rows = [("1", "a_rec_5", "5", "rec"), ("1", "q_5", "5", "quiet"), ("3", "x_all", "", "=x")]
        test = pd.DataFrame(rows, columns=["site", "row_id", "seconds", "audio_id"])
        test.to_csv(tmp_path / "test.csv", index=False)
        kw = {"test_csv": str(tmp_path / "test.csv"), "audio_dir": str(audio)}
    else:
        pd.DataFrame(columns=["row_id", "norcar", "amecro", "unknown1"]).to_csv(tmp_path / "sample.csv", index=False)
        kw = {"sample_submission": str(tmp_path / "sample.csv")}
    parts = _parts(audio, tmp_path / "parts")
    spec = OutputSpec(formats, DecisionOptions(max_birds=2, neighbour_smoothing="max"), **kw)
    thresholds = Thresholds({"segmentwise": 0.5}, {"segmentwise": {"norcar": 0.7}})
    write_combined(out, parts, CLASSES, thresholds, "segmentwise", spec)
    keys = {recording_key(f): f"{{KEY}}{Path(f).parent.name}" for f, _ in parts}  # label files named by a path's hash
    found = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            data = pq.read_table(p).to_pandas().to_csv().encode() if p.suffix == ".parquet" else p.read_bytes()
            rel = p.relative_to(out).as_posix() + (".csv" if p.suffix == ".parquet" else "")
            for key, placeholder in keys.items():
                rel = rel.replace(key, placeholder)
            found[rel] = data.replace(str(tmp_path.resolve()).encode(), b"{TMP}")
    return found


def golden(variant: str) -> dict[str, bytes]:
    root = GOLDEN / variant
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_format_writes_the_bytes_it_wrote_before_the_writers(variant, tmp_path):
    assert combined_outputs(tmp_path, variant) == golden(variant)


def _write(tmp_path: Path, formats: tuple[str, ...]) -> list[str]:
    """write_combined over the fixed parts with `formats` and no Kaggle input: the files of OUT, relative."""
    audio, out = tmp_path / "audio", tmp_path / "out"
    for name in RECORDINGS:
        (audio / name).parent.mkdir(parents=True, exist_ok=True)
        (audio / name).write_bytes(b"")
    spec = OutputSpec(formats, DecisionOptions(threshold=0.5))
    write_combined(out, _parts(audio, tmp_path / "parts"), CLASSES, Thresholds(), "segmentwise", spec)
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def test_format_names_exactly_what_is_written(tmp_path):
    """scores.parquet and recordings.csv always, then only what --format names: raven alone writes no
    detections.csv."""
    files = _write(tmp_path, ("raven",))
    assert [f for f in files if not f.startswith("raven/")] == ["recordings.csv", "scores.parquet"]
    assert len([f for f in files if f.startswith("raven/")]) == len(RECORDINGS)


def test_kaggle_names_the_submission_of_the_kaggle_input_given():
    assert OutputSpec(("csv",)).writers() == ["scores", "recordings", "csv"]
    assert OutputSpec(("csv", "csv", "raven")).writers() == ["scores", "recordings", "csv", "raven"]
    assert OutputSpec(("csv",), test_csv="test.csv").writers() == ["scores", "recordings", "csv", "cornell"]
    assert OutputSpec(("kaggle",), sample_submission="s.csv").writers() == ["scores", "recordings", "birdclef"]
    assert set(OutputSpec(("csv", "kaggle", "raven", "audacity"), test_csv="t").writers()) <= set(WRITERS)


def test_a_writer_failing_leaves_no_combined_output_half_written(tmp_path, monkeypatch):
    """One writer raising mid-run: every writer's files are discarded (no scores.parquet, no temporaries)."""
    from birdsed.fsutil import temp_of

    def fail(self, block):
        raise OSError("disk full")

    monkeypatch.setattr(WRITERS["audacity"], "add", fail)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path, ("csv", "audacity"))
    left = [p.name for p in (tmp_path / "out").rglob("*")]
    assert "scores.parquet" not in left and "detections.csv" not in left
    assert not [n for n in left if temp_of(tmp_path / "out" / n) is not None]


def test_format_kaggle_without_a_kaggle_input_is_refused(tmp_path, capsys):
    """--format kaggle with plain recordings: exit 2, one error line naming the inputs it needs, nothing written."""
    from birdsed.cli import main

    argv = ["predict", "--model", str(tmp_path / "m"), str(tmp_path), "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*argv, "--format", "csv", "kaggle"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "--format kaggle" in err and "--test-csv" in err
    assert not (tmp_path / "out").exists()
