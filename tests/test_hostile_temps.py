"""Temporaries, locks and full disks (issue 40: 1, 9, 14, 17): birdsed removes only the temporaries it can prove
are its own (fsutil.temp_of), a run lock is never seen empty, and a failed write names the file being written.

Each test builds its folder in tmp_path; kill cases run `python -m birdsed` as a subprocess (test_hostile.kill_when).
docs/reliability.md has the table of what is tried here.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from conftest import FAST_SET, run_cli, tiny_model, write_audio
from test_hostile import kill_when, tiny_disk  # noqa: F401 - fixtures

from birdsed.fsutil import TEMP_DIR, TEMP_FILE, temp_name, temp_of

# A user's files and folders named like temporaries: none of them is birdsed's (none has its exact name pattern)
USER_FILES = {
    ".notes.tmp": b"my notes",
    ".vimrc.tmpl": b"set nu",
    ".x.tmp.bak": b"backup",
    ".scores.parquet.tmp": b"mine",
    ".x.tmp.i16": b"\x01\x02",
    ".cache.tmp/a.txt": b"cached",
    ".cache.tmp/deep/b.bin": b"\x00" * 10,
    ".model.tmp/weights.safetensors": b"my weights",
    # near misses of birdsed's own names: 7 hex digits, another suffix, a folder with a file's temporary name,
    # a file with a folder's temporary name
    ".scores.parquet.birdsed-0123abc.tmp.parquet": b"near",
    ".scores.parquet.birdsed-0123abcd.tmp.csv": b"other suffix",
    ".model.birdsed-0123abcd.tmp/weights.safetensors": b"a folder",
    ".notes.birdsed-0123abcd.tmpdir": b"a file",
}


def plant(folder: Path, outside: Path) -> None:
    """USER_FILES in `folder`, and a link named like a temporary folder to a user's folder elsewhere."""
    for name, data in USER_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "keep.txt").write_bytes(b"keep")
    (folder / ".link.birdsed-0123abcd.tmpdir").symlink_to(outside, target_is_directory=True)


def snapshot(folder: Path) -> dict[str, object]:
    """Every planted entry of `folder` (and whatever is under them): its bytes or link target, mode and mtime."""
    found: dict[str, object] = {}
    tops = {n.split("/")[0] for n in USER_FILES} | {".link.birdsed-0123abcd.tmpdir"}
    for top in sorted(tops):
        p = folder / top
        for q in [p, *(sorted(p.rglob("*")) if p.is_dir() and not p.is_symlink() else [])]:
            st = q.lstat()
            body = os.readlink(q) if q.is_symlink() else (q.read_bytes() if q.is_file() else "folder")
            found[str(q.relative_to(folder))] = (body, st.st_mode, st.st_mtime_ns)
    return found


def birdsed_temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*birdsed-*") if temp_of(p) is not None]


def test_the_temporary_name_patterns(tmp_path):
    """temp_name makes only names that temp_of recognises (a file's, a folder's); the user's never are."""
    f, d = temp_name(tmp_path / "scores.parquet"), temp_name(tmp_path / "model", folder=True)
    f.write_bytes(b"")
    d.mkdir()
    assert TEMP_FILE.fullmatch(f.name) and f.name.endswith(".tmp.parquet") and temp_of(f) == "scores.parquet"
    assert TEMP_DIR.fullmatch(d.name) and temp_of(d) == "model"
    plant(tmp_path / "user", tmp_path / "elsewhere")
    assert [p for p in (tmp_path / "user").rglob("*") if temp_of(p) is not None] == []


def _predict_argv(model, tmp_path: Path) -> list:
    for i in range(12):
        write_audio(tmp_path / "in" / f"r{i:02d}.wav", seconds=20.0, freq_hz=500 + 100 * i)
    return ["predict", "--model", model, tmp_path / "in", "--workers", 0, "--quiet", "--format", "raven"]


def test_predict_leaves_user_files_named_like_temporaries_as_they_were(model_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    folders = [out, out / "parts", out / "raven"]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        plant(folder, tmp_path / "elsewhere" / folder.name)
    before = [snapshot(f) for f in folders]
    rc, text = run_cli(capsys, *_predict_argv(model_dir, tmp_path), "--out", out)
    assert rc == 0, text
    assert [snapshot(f) for f in folders] == before
    assert (tmp_path / "elsewhere" / "out" / "keep.txt").read_bytes() == b"keep"


def test_a_killed_predicts_own_temporaries_go_and_the_users_stay(model_dir, tmp_path, capsys):  # noqa: F811
    """kill -9 mid-run, then the same command: what the killed run left (its own names: planted too, as a kill
    mid-write leaves them, in the folders and in raven/, where the combined outputs are written last) goes; the
    user's files stay byte for byte; the Raven tables are those of an uninterrupted run."""
    out = tmp_path / "out"
    argv = _predict_argv(model_dir, tmp_path)
    for folder in (out, out / "parts", out / "raven"):
        folder.mkdir(parents=True, exist_ok=True)
        plant(folder, tmp_path / "elsewhere" / folder.name)
    before = [snapshot(f) for f in (out, out / "parts", out / "raven")]
    kill_when([*argv, "--out", out], lambda: len(list((out / "parts").glob("*.parquet"))) >= 2)
    killed = [
        temp_name(out / "scores.parquet"),
        temp_name(out / "parts" / "r03.parquet"),
        temp_name(out / "raven" / "r00.Table.1.selections.txt"),
        temp_name(out / "raven" / "r11.Table.1.selections.txt"),
    ]
    for p in killed:
        p.write_bytes(b"half")
    rc, text = run_cli(capsys, *argv, "--out", out)
    assert rc == 0, text
    assert not birdsed_temps(out) and not any(p.exists() for p in killed)
    assert [snapshot(f) for f in (out, out / "parts", out / "raven")] == before
    assert not (out / ".lock").exists()
    assert run_cli(capsys, *argv, "--out", tmp_path / "whole")[0] == 0
    raven = sorted(p.name for p in (tmp_path / "whole" / "raven").iterdir())
    assert sorted(p.name for p in (out / "raven").iterdir() if not p.name.startswith(".")) == raven
    for name in raven:
        assert (out / "raven" / name).read_bytes() == (tmp_path / "whole" / "raven" / name).read_bytes()


def _dataset(tmp_path: Path, n: int = 4) -> Path:
    data = tmp_path / "data"
    for i in range(n):
        write_audio(data / "audio" / f"r{i:02d}.flac", seconds=5.0, rate=44100, freq_hz=300 + 50 * i)
    pd.DataFrame({"filename": [f"r{i:02d}.flac" for i in range(n)], "labels": ["a"] * n}).to_csv(
        data / "labels.csv", index=False
    )
    return data


def test_prepare_leaves_user_files_named_like_temporaries_as_they_were(tmp_path, capsys):
    data, out = _dataset(tmp_path), tmp_path / "store"
    folders = [out, out / "audio"]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        plant(folder, tmp_path / "elsewhere" / folder.name)
    before = [snapshot(f) for f in folders]
    stale = temp_name(out / "audio" / "r00.i16")  # what a killed prepare left: its own name
    stale.write_bytes(b"half")
    rc, text = run_cli(capsys, "prepare", data, "--out", out, "--workers", 1)
    assert rc == 0, text
    assert [snapshot(f) for f in folders] == before and not stale.exists()


def test_train_and_self_train_leave_user_files_named_like_temporaries_as_they_were(synth_data, tmp_path, capsys):
    run, st = tmp_path / "run", tmp_path / "st"
    folders = [run, run / "checkpoints", st]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        plant(folder, tmp_path / "elsewhere" / folder.name)
    before = [snapshot(f) for f in folders]
    stale = temp_name(run / "checkpoints" / "last.ckpt")
    stale.write_bytes(b"half")
    rc, text = run_cli(capsys, "train", "--data", synth_data, "--config", "small", "--out", run, "--quiet", *FAST_SET)
    assert rc == 0, text
    argv = ["self-train", "--data", synth_data, "--unlabelled", synth_data / "test_audio", "--rounds", "1"]
    rc, text = run_cli(capsys, *argv, "--config", "small", "--out", st, "--workers", 0, "--quiet", *FAST_SET)
    assert rc == 0, text
    assert [snapshot(f) for f in folders] == before and not stale.exists()
    assert not birdsed_temps(run) and not birdsed_temps(st)


# --- the run lock ----------------------------------------------------------------------------------------------------


def test_an_empty_young_lock_is_held_and_an_old_one_broken(model_dir, tmp_path, capsys):  # noqa: F811
    """An empty lock is a run between creating it and writing its pid (an older birdsed) or a planted one: while
    young it is held (exit 2, nothing written), when old it is a dead run's and taken."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").touch()
    argv = _predict_argv(model_dir, tmp_path)
    rc, text = run_cli(capsys, *argv, "--out", out)
    assert rc == 2 and "is being taken by another birdsed run" in text and str(out / ".lock") in text, text
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    old = time.time() - 3600
    os.utime(out / ".lock", (old, old))
    rc, text = run_cli(capsys, *argv, "--out", out)
    assert rc == 0, text
    assert not (out / ".lock").exists()


_RACE = """
import os, pathlib, sys, time
from birdsed.errors import RunLocked
from birdsed.fsutil import run_lock
folder, go, marks, others = sys.argv[1], float(sys.argv[2]), pathlib.Path(sys.argv[3]), int(sys.argv[4])
while time.time() < go:
    pass
try:
    with run_lock(folder):
        print("took", flush=True)
        deadline = time.time() + 60  # held until every other process was refused (a late one would take it)
        while len(list(marks.iterdir())) < others and time.time() < deadline:
            time.sleep(0.05)
except RunLocked:
    print("refused", flush=True)
    (marks / str(os.getpid())).touch()
"""


def test_the_lock_is_taken_once_by_racing_processes(tmp_path):
    """Eight processes try to take one folder's lock at the same instant: exactly one takes it."""
    go, marks = time.time() + 3.0, tmp_path.parent / f"{tmp_path.name}-refused"
    marks.mkdir()
    argv = [sys.executable, "-c", _RACE, str(tmp_path), str(go), str(marks), "7"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(8)]
    said = [p.communicate(timeout=90)[0].strip() for p in procs]
    assert sorted(said) == ["refused"] * 7 + ["took"], said
    assert not (tmp_path / ".lock").exists() and not birdsed_temps(tmp_path)


# --- a full disk -----------------------------------------------------------------------------------------------------


def _full(tiny_disk: Path) -> None:  # noqa: F811
    (tiny_disk / "filler").write_bytes(bytes(60 * 1024))


def test_a_full_disk_in_synth_names_the_file_and_leaves_no_data_set(tiny_disk, capsys):  # noqa: F811
    _full(tiny_disk)
    out = tiny_disk / "data"
    rc, text = run_cli(capsys, "synth", out, "--species", 2, "--clips-per-species", 2, "--soundscapes", 1)
    assert rc == 2 and "the disk is full" in text and f"{out}{os.sep}" in text and "Traceback" not in text, text
    assert ".tmpdir" not in text and not out.exists()
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_a_full_disk_in_train_names_the_checkpoint(synth_data, tmp_path, tiny_disk, capsys):  # noqa: F811
    """A prepared store elsewhere: the run starts (config.yaml, metrics) and fails at its first checkpoint."""
    store = tmp_path / "store"
    assert run_cli(capsys, "prepare", synth_data, "--out", store, "--workers", 1)[0] in (0, 1)
    _full(tiny_disk)
    run = tiny_disk / "run"
    argv = ["train", "--data", store, "--config", "small", "--out", run, "--quiet", *FAST_SET]
    rc, text = run_cli(capsys, *argv)
    assert rc == 2 and "the disk is full" in text and "Traceback" not in text, text
    assert f"{run / 'checkpoints'}{os.sep}" in text and ".ckpt" in text, text
    assert ".birdsed-" not in text and not birdsed_temps(tiny_disk) and not (run / ".lock").exists()


def test_a_full_disk_in_prepare_names_the_file(tmp_path, tiny_disk, capsys):  # noqa: F811
    _full(tiny_disk)
    data, out = _dataset(tmp_path, n=2), tiny_disk / "store"
    rc, text = run_cli(capsys, "prepare", data, "--out", out, "--workers", 1)
    assert rc == 2 and "the disk is full" in text and f"{out}{os.sep}" in text and "a file" not in text, text
    assert ".birdsed-" not in text and not birdsed_temps(tiny_disk)


def test_a_full_disk_in_report_export_and_ensemble_names_the_file(model_dir, tmp_path, tiny_disk, capsys):  # noqa: F811
    pred = tmp_path / "pred"
    assert run_cli(capsys, *_predict_argv(model_dir, tmp_path), "--out", pred)[0] == 0
    other = tiny_model(tmp_path / "m2", ["x", "y"])
    _full(tiny_disk)
    cases = [
        (["report", pred, "--out", tiny_disk / "report.html"], tiny_disk / "report.html"),
        (["export", "--model", model_dir, "--onnx", tiny_disk / "m.onnx"], tiny_disk / "m.onnx"),
        (
            ["ensemble", model_dir, other, "--out", tiny_disk / "ens"],
            tiny_disk / "ens",
        ),
    ]
    for argv, written in cases:
        rc, text = run_cli(capsys, *argv)
        assert rc == 2 and "the disk is full" in text and str(written) in text, (argv, text)
        assert "a file" not in text and ".birdsed-" not in text and str(model_dir) not in text, (argv, text)
        assert not birdsed_temps(tiny_disk) and not written.exists()


def test_synth_builds_its_data_set_aside_and_a_killed_ones_folder_goes(tmp_path, capsys):
    """synth writes the whole data set in a temporary folder beside OUT and moves it in: a killed synth's folder
    (its own name) goes with the next one; the user's files in OUT and beside it stay."""
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_bytes(b"mine")
    plant(tmp_path, tmp_path / "elsewhere")
    before = snapshot(tmp_path)
    killed = temp_name(out, folder=True)
    (killed / "train_audio").mkdir(parents=True)
    rc, text = run_cli(capsys, "synth", out, "--species", 2, "--clips-per-species", 1, "--soundscapes", 1)
    assert rc == 0, text
    assert not killed.exists() and (out / "notes.txt").read_bytes() == b"mine" and (out / "test_labels.csv").is_file()
    assert snapshot(tmp_path) == before and not birdsed_temps(tmp_path)


def test_a_takers_words_swept_by_the_lock_holder_are_written_again(tmp_path, monkeypatch):
    """The lock's winner sweeps the takers' temporaries (remove_stale_temps cannot tell a killed taker's from a live
    one's): a taker whose words went before its link writes them again, never fails on the missing file."""
    from birdsed import fsutil

    real, swept = os.link, []

    def link(src, dst):
        if not swept:
            swept.append(fsutil.remove_stale_temps(tmp_path, [".lock"]))  # the winner's sweep, between write and link
        return real(src, dst)

    monkeypatch.setattr(fsutil.os, "link", link)
    assert fsutil.create_text_once(tmp_path / ".lock", "host 1")
    assert swept == [1] and (tmp_path / ".lock").read_text() == "host 1" and not birdsed_temps(tmp_path)
    assert not fsutil.create_text_once(tmp_path / ".lock", "host 2")  # taken: left as it is
    assert (tmp_path / ".lock").read_text() == "host 1"
