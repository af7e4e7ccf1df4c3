"""A hostile re-try of what was fixed for issue 40, and fixes for what still failed.

Each test builds its bad input in tmp_path; docs/reliability.md has the table of what is tried here.
"""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import FAST_SET, run_cli, write_audio
from test_hostile_temps import _dataset, _predict_argv

from birdsed.fsutil import temp_name

# A user's files with birdsed's exact temporary pattern, of names birdsed never writes in the folder: a name that
# only looks like birdsed's proves nothing, and they stay
LOOKALIKES = {
    ".x.birdsed-12345678.tmp": b"a user's file",
    ".notes.birdsed-deadbeef.tmp.txt": b"my notes",
    ".photo.birdsed-0badf00d.tmp.jpg": b"\xff\xd8",
    ".cache.birdsed-0badf00d.tmpdir/a.txt": b"cached",
    ".cache.birdsed-0badf00d.tmpdir/deep/b.bin": b"\x00" * 10,
}


def plant_lookalikes(folder: Path) -> dict[str, object]:
    """LOOKALIKES in `folder`; returns their snapshot."""
    for name, data in LOOKALIKES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return _snapshot(folder)


def _snapshot(folder: Path) -> dict[str, object]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else "folder", p.stat().st_mtime_ns)
        for top in {n.split("/")[0] for n in LOOKALIKES}
        for p in [folder / top, *sorted((folder / top).rglob("*"))]
    }


def test_predict_keeps_a_users_files_of_birdseds_own_pattern(model_dir, tmp_path, capsys):  # noqa: F811
    """`predict --out OUT` where OUT holds `.x.birdsed-12345678.tmp` (and a folder `.cache.birdsed-0badf00d.tmpdir`):
    they stay (they were deleted); a killed run's temporary of a file predict writes there still goes."""
    out = tmp_path / "out"
    folders = [out, out / "parts", out / "raven"]
    before = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        before.append(plant_lookalikes(folder))
    stale = [temp_name(out / "scores.parquet"), temp_name(out / "run.json"), temp_name(out / ".lock")]
    for p in stale:
        p.write_bytes(b"half")
    rc, text = run_cli(capsys, *_predict_argv(model_dir, tmp_path), "--out", out)
    assert rc == 0, text
    assert [_snapshot(f) for f in folders] == before
    assert not any(p.exists() for p in stale)


def test_prepare_keeps_a_users_files_of_birdseds_own_pattern(tmp_path, capsys):
    data, out = _dataset(tmp_path), tmp_path / "store"
    out.mkdir()
    before = plant_lookalikes(out)
    stale = temp_name(out / "index.parquet")
    stale.write_bytes(b"half")
    rc, text = run_cli(capsys, "prepare", data, "--out", out, "--workers", 1)
    assert rc == 0, text
    assert _snapshot(out) == before and not stale.exists()


def test_train_keeps_a_users_files_of_birdseds_own_pattern(synth_data, tmp_path, capsys):
    run = tmp_path / "run"
    folders = [run, run / "checkpoints"]
    before = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        before.append(plant_lookalikes(folder))
    stale = [temp_name(run / "checkpoints" / "last.ckpt"), temp_name(run / "config.yaml")]
    for p in stale:
        p.write_bytes(b"half")
    rc, text = run_cli(capsys, "train", "--data", synth_data, "--config", "small", "--out", run, "--quiet", *FAST_SET)
    assert rc == 0, text
    assert [_snapshot(f) for f in folders] == before
    assert not any(p.exists() for p in stale)


# --- model.json and data sets: values of the wrong type, names that split a table's row ------------------------------


def _tampered_model(source: Path, tmp_path: Path, **changes) -> Path:
    m = tmp_path / "m"
    shutil.copytree(source, m)
    meta = json.loads((m / "model.json").read_text())
    (m / "model.json").write_text(json.dumps({**meta, **changes}))
    return m


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": [1]}, "unknown model kind [1]"),  # was: TypeError unhashable type: 'list'
        ({"kind": {"a": 1}}, "unknown model kind {'a': 1}"),
        ({"kind": 0}, "unknown model kind 0"),  # was: read as an SED model
        ({"thresholds": 0}, "thresholds must be a mapping"),  # was: the reference thresholds, silently
        ({"thresholds": []}, "thresholds must be a mapping"),
        ({"thresholds": {"globl": {"clipwise": 0.9}}}, "thresholds must be a mapping"),  # was: a typo, ignored
        ({"classes": ["a\tb", "c", "d"]}, "hold a tab, line break"),  # was: Raven and Audacity rows split
        ({"classes": ["a", "c\nd", "e"]}, "hold a tab, line break"),
    ],
)
def test_a_model_json_value_of_the_wrong_type_is_one_error_line(model_dir, tmp_path, capsys, changes, message):  # noqa: F811
    m = _tampered_model(model_dir, tmp_path, **changes)
    write_audio(tmp_path / "a.wav", seconds=5.0)
    out = tmp_path / "out"
    rc, text = run_cli(capsys, "predict", "--model", m, tmp_path / "a.wav", "--out", out, "--format", "raven")
    assert rc == 2 and "error:" in text and message in text and str(m / "model.json") in text, text
    assert "Traceback" not in text and not (out / "scores.parquet").exists()


def test_a_class_name_with_a_control_character_is_refused_by_a_data_set(tmp_path, capsys):
    root = tmp_path / "ds"
    write_audio(root / "audio" / "x.wav", seconds=1.0)
    (root / "labels.csv").write_text('filename,labels\nx.wav,"a\x07b c"\n')
    rc, text = run_cli(capsys, "prepare", root, "--out", tmp_path / "store")
    assert rc == 2 and "error:" in text and "['a\\x07b'] hold a tab, line break" in text, text
    assert not (tmp_path / "store").exists()


# --- a prepared store whose samples are damaged ----------------------------------------------------------------------


def test_a_truncated_store_recording_is_refused_before_train_and_prepare_mends_it(tmp_path, capsys):
    """A store's .i16 truncated (or a key leading out of audio/): `train` exits 2 naming the file before the run
    folder exists (was: a DataLoader worker's traceback, config.yaml and hparams.yaml written); `prepare` into the
    store decodes it again (was: kept as "already done")."""
    data, store = _dataset(tmp_path), tmp_path / "store"
    assert run_cli(capsys, "prepare", data, "--out", store, "--workers", 1)[0] == 0
    i16 = sorted((store / "audio").glob("*.i16"))[0]
    whole = i16.read_bytes()
    i16.write_bytes(whole[:1000])
    run = tmp_path / "run"
    rc, text = run_cli(capsys, "train", "--data", store, "--config", "small", "--out", run, *FAST_SET)
    assert rc == 2 and f"error: {i16}: missing or of the wrong size" in text and "Traceback" not in text, text
    assert not run.exists()
    rc, text = run_cli(capsys, "prepare", data, "--out", store, "--workers", 1)
    assert rc == 0 and "prepared 1 recording(s), 3 already done" in text, text
    assert i16.read_bytes() == whole
    index = pd.read_parquet(store / "index.parquet")
    index.loc[0, "key"] = "../../elsewhere"
    index.to_parquet(store / "index.parquet", index=False)
    rc, text = run_cli(capsys, "train", "--data", store, "--config", "small", "--out", run, *FAST_SET)
    assert rc == 2 and "index.parquet: damaged ids, keys" in text and not run.exists(), text


def test_a_birdsed_error_raised_in_a_dataloader_worker_is_one_line():
    """torch wraps a worker's exception ("Caught StoreError in DataLoader worker process 0." and its traceback):
    the CLI prints the error's own words alone."""
    from torch._utils import ExceptionWrapper

    from birdsed.cli import error_message
    from birdsed.errors import StoreError

    try:
        raise StoreError("S/audio/k.i16: missing or of the wrong size")
    except StoreError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(StoreError) as caught:
        wrapped.reraise()
    assert "Original Traceback" in str(caught.value)
    assert error_message(caught.value) == "S/audio/k.i16: missing or of the wrong size"


# --- report over a damaged predict folder ----------------------------------------------------------------------------

DAMAGED_PRED = [  # (file, its bytes, what the error line says); each was a traceback (exit 1)
    ("run.json", b"junk", "run.json: not a predict folder's run.json (JSONDecodeError"),
    ("run.json", b"[1, 2]", "run.json: not a predict folder's run.json (TypeError"),
    ("run.json", b'{"model": 5}', "run.json: 'model' = 5: not a folder name"),
    ("scores.parquet", b"junk", "scores.parquet: not a Parquet scores table from predict"),
    ("detections.csv", b"junk\n", "detections.csv: not a detections table of predict: no column(s)"),
    ("detections.csv", b"\xff\xfe\x00", "detections.csv: not a detections table of predict (UnicodeDecodeError)"),
]


def test_report_of_a_damaged_predict_folder_is_one_error_line(model_dir, tmp_path, capsys):  # noqa: F811
    write_audio(tmp_path / "a.wav", seconds=5.0)
    pred = tmp_path / "pred"
    assert run_cli(capsys, "predict", "--model", model_dir, tmp_path / "a.wav", "--out", pred)[0] == 0
    for name, data, message in DAMAGED_PRED:
        damaged = tmp_path / f"damaged-{name}-{len(data)}"
        shutil.copytree(pred, damaged)
        (damaged / name).write_bytes(data)
        rc, text = run_cli(capsys, "report", damaged)
        assert rc == 2 and f"error: {damaged / name}" in text and message in text, text
        assert "Traceback" not in text and not (damaged / "report.html").exists()
