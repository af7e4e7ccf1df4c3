"""birdsed tried as a hostile user would: bad audio, tampered model and run folders, planted pickles, tables that
point outside their folder, bad --set and model.json values, inconsistent truth, a full disk, kill -9.

Each test builds its own bad input in tmp_path and asserts the exit status (0 all done, 1 done with skipped items,
2 refused), the message naming the thing, no traceback (the CLI is called in-process: an exception would fail the
test) and no file left half-written. docs/reliability.md has the table of what is tried here.
"""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import FAST, FAST_SET, run_cli, write_audio

from birdsed.config import apply_overrides, load_config, save_config
from birdsed.train.embedcache import EmbeddingCache


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (str(self.marker), "w"))


def plant_pickle(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state_dict": {"w": _Payload(marker)}, "epoch": 0}))


def no_temp_files(folder) -> bool:
    return not [p for p in folder.rglob(".*.tmp*")]


# --- audio -----------------------------------------------------------------------------------------------------------


def test_bad_audio_in_a_batch_is_skipped_and_reported_with_what_is_wrong(model_dir, tmp_path, capsys):
    d = tmp_path / "in"
    write_audio(d / "good.wav", seconds=6.0)
    sf.write(
        str(d / "odd.wav"), np.random.default_rng(0).standard_normal((11025 * 7, 3)).astype(np.float32) * 0.1, 11025
    )
    (d / "random.mp3").write_bytes(os.urandom(5000))
    (d / "empty.wav").write_bytes(b"")
    (d / "folder.wav").mkdir()
    os.mkfifo(d / "pipe.wav")
    nan = np.zeros(32000 * 3, np.float32)
    nan[1000] = np.nan
    sf.write(str(d / "nan.wav"), nan, 32000, subtype="FLOAT")
    rc, text = run_cli(capsys, "predict", "--model", model_dir, d, "--out", tmp_path / "out", "--workers", 0, "--quiet")
    assert rc == 1, text
    errors = pd.read_csv(tmp_path / "out" / "errors.csv").set_index("file")["reason"]
    reasons = {os.path.basename(f): r for f, r in errors.items()}
    assert set(reasons) == {"random.mp3", "empty.wav", "folder.wav", "pipe.wav", "nan.wav"}
    assert "format is not recognised" in reasons["random.mp3"] and "possibly a pipe" not in reasons["random.mp3"]
    assert "empty" in reasons["empty.wav"] and "folder" in reasons["folder.wav"]
    assert "not a regular file" in reasons["pipe.wav"] and "NaN" in reasons["nan.wav"]
    assert set(pd.read_parquet(tmp_path / "out" / "scores.parquet")["file"].map(os.path.basename)) == {
        "good.wav",
        "odd.wav",
    }
    assert no_temp_files(tmp_path / "out")


# --- tampered model folders ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m["thresholds"]["global"].update(clipwise="abc"), "thresholds global\\['clipwise'\\] = 'abc'"),
        (lambda m: m["thresholds"]["global"].update(att=7), "must be a number in \\[0, 1\\]"),
        (lambda m: m["frontend"].update(sample_rate_hz=0), "frontend.sample_rate_hz = 0"),
        (lambda m: m["frontend"].update(hop_length=0), "frontend.hop_length = 0"),
        (lambda m: m["frontend"].update(n_mels="many"), "frontend.n_mels = 'many'"),
        (lambda m: m.update(short_policy="explode"), "short_policy 'explode'"),
        (lambda m: m["model"].update(backbone="nope"), "unknown backbone 'nope'"),
        (lambda m: m.update(classes=[]), "'classes' must be a non-empty list"),
        (lambda m: m.update(kind="rootkit"), "unknown model kind 'rootkit'"),
    ],
)
def test_a_tampered_model_json_is_refused_before_anything_is_predicted(model_dir, tmp_path, capsys, edit, message):
    m = tmp_path / "m"
    shutil.copytree(model_dir, m)
    meta = json.loads((m / "model.json").read_text())
    edit(meta)
    (m / "model.json").write_text(json.dumps(meta))
    audio = write_audio(tmp_path / "a.wav", seconds=6.0)
    rc, text = run_cli(capsys, "predict", "--model", m, audio, "--out", tmp_path / "out", "--workers", 0, "--quiet")
    assert rc == 2 and "error:" in text
    assert pytest.importorskip("re").search(message, text.replace("\n", "")), text
    assert not (tmp_path / "out" / "scores.parquet").exists()


def test_a_loaded_model_never_reads_its_pretrained_path(model_dir, tmp_path, capsys, monkeypatch):
    m = tmp_path / "m"
    shutil.copytree(model_dir, m)
    meta = json.loads((m / "model.json").read_text())
    meta["model"]["pretrained"] = str(tmp_path / "elsewhere.pth")  # would be read if it were honoured
    (m / "model.json").write_text(json.dumps(meta))
    import birdsed.model.sed

    monkeypatch.setattr(birdsed.model.sed, "_load_weight_file", lambda p: pytest.fail(f"read {p}"))
    audio = write_audio(tmp_path / "a.wav", seconds=6.0)
    rc, text = run_cli(capsys, "predict", "--model", m, audio, "--out", tmp_path / "out", "--workers", 0, "--quiet")
    assert rc == 0, text


def test_planted_pickles_never_run(model_dir, tmp_path, capsys, synth_data):
    marker = tmp_path / "pwned"
    # as the model's weights
    m = tmp_path / "m"
    shutil.copytree(model_dir, m)
    plant_pickle(m / "weights.safetensors", marker)
    audio = write_audio(tmp_path / "a.wav", seconds=6.0)
    rc, text = run_cli(capsys, "predict", "--model", m, audio, "--out", tmp_path / "out", "--workers", 0, "--quiet")
    assert rc == 2 and "weights.safetensors" in text
    # as the checkpoint --resume continues from: refused before anything in the run folder changes
    run = tmp_path / "run"
    plant_pickle(run / "checkpoints" / "last.ckpt", marker)
    (run / "metrics.csv").write_text("epoch,step,train_loss_step\n0,0,1.0\n")
    sets = [x for x in FAST_SET if x != "--set"]
    save_config(apply_overrides(load_config("small"), sets), run / "config.yaml")  # the run's own settings
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc, text = run_cli(
        capsys, "train", "--data", synth_data, "--config", "small", "--out", run, "--resume", "--quiet", *FAST_SET
    )
    assert rc == 2 and "last.ckpt" in text and "nothing was changed" in text
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # as a cached BirdNET embedding: computed afresh, never unpickled
    cached = tmp_path / "cache" / "x.npy"
    plant_pickle(cached, marker)
    assert EmbeddingCache(tmp_path / "cache", 5.0, 1.0, "loop").load(cached) is None
    assert not marker.exists()


# --- tables ----------------------------------------------------------------------------------------------------------


def test_table_paths_outside_the_audio_folder_are_refused_and_reported(tmp_path, capsys):
    data = tmp_path / "data"
    write_audio(data / "audio" / "ok.wav")
    outside = write_audio(tmp_path / "secret" / "x.wav")
    (data / "audio" / "link.wav").symlink_to(outside)
    rows = [("ok.wav", "a"), ("../../secret/x.wav", "a"), (str(outside), "b"), ("link.wav", "b")]
    pd.DataFrame(rows, columns=["filename", "labels"]).to_csv(data / "labels.csv", index=False)
    rc, text = run_cli(capsys, "prepare", data, "--out", tmp_path / "store", "--workers", 1)
    assert rc == 1, text
    report = pd.read_csv(tmp_path / "store" / "report.csv")
    assert len(report) == 3 and report["reason"].str.contains("outside the data set's audio folder").all()
    rc, text = run_cli(capsys, "prepare", data, "--out", tmp_path / "store2", "--workers", 1, "--allow-outside-paths")
    assert rc == 0, text


def test_one_path_per_recording(tmp_path, capsys):
    data = tmp_path / "data"
    write_audio(data / "audio" / "a.wav")
    pd.DataFrame({"filename": ["a.wav", "./a.wav"], "labels": ["x", "y"]}).to_csv(data / "labels.csv", index=False)
    rc, text = run_cli(capsys, "prepare", data, "--out", tmp_path / "store")
    assert rc == 2 and "recording listed twice: a.wav" in text


@pytest.mark.parametrize(
    "seconds,message",
    [
        ("-5", "-5.0 is not a whole positive multiple"),
        ("1e9", "1000000000.0"),
        ("inf", "inf"),
        ("nan", "nan"),
        ("7.3", "7.3"),
    ],
)
def test_test_csv_seconds_must_be_whole_rows(model_dir, tmp_path, capsys, seconds, message):
    write_audio(tmp_path / "test_audio" / "s1.wav", seconds=10.0)
    (tmp_path / "test.csv").write_text(f"site,row_id,seconds,audio_id\nsite_1,s1_5,5,s1\nsite_1,s1_x,{seconds},s1\n")
    rc, text = run_cli(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--test-csv",
        tmp_path / "test.csv",
        "--out",
        tmp_path / "out",
        "--quiet",
    )
    assert rc == 2 and "line 3" in text and message in text, text


def test_test_csv_row_ids_unique_and_audio_ids_inside(model_dir, tmp_path, capsys):
    write_audio(tmp_path / "test_audio" / "s1.wav", seconds=10.0)
    (tmp_path / "test.csv").write_text("site,row_id,seconds,audio_id\nsite_1,r,5,s1\nsite_1,r,10,s1\n")
    rc, text = run_cli(
        capsys, "predict", "--model", model_dir, "--test-csv", tmp_path / "test.csv", "--out", tmp_path / "o"
    )
    assert rc == 2 and "'r' listed twice" in text
    write_audio(tmp_path / "elsewhere" / "x.wav", seconds=10.0)
    (tmp_path / "test.csv").write_text("site,row_id,seconds,audio_id\nsite_1,a,5,s1\nsite_1,b,5,../elsewhere/x\n")
    rc, text = run_cli(
        capsys,
        "predict",
        "--model",
        model_dir,
        "--test-csv",
        tmp_path / "test.csv",
        "--out",
        tmp_path / "o2",
        "--quiet",
    )
    assert rc == 1, text  # the escaping row is never opened: reported, its row nocall
    assert "refused, never opened" in pd.read_csv(tmp_path / "o2" / "errors.csv")["reason"].iloc[0]
    assert set(pd.read_parquet(tmp_path / "o2" / "scores.parquet")["file"].map(os.path.basename)) == {"s1.wav"}
    assert len(pd.read_csv(tmp_path / "o2" / "submission.csv")) == 2


# --- configuration ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lr=abc", "train.lr = 'abc': expected a finite number"),
        ("train.epochs=abc", "train.epochs = 'abc'"),
        ("train.lr=-5", "train.lr = -5.0: must be in (0, inf)"),
        ("train.epochs=0", "train.epochs = 0"),
        ("model.backbone=nope", "model.backbone 'nope': valid:"),
        ("frontend.sample_rate_hz=16000", "Nyquist"),
        ("frontend.fmax_hz=20000", "Nyquist"),
        ("data.val_fraction=2", "data.val_fraction = 2.0"),
        ("augment.mixup_p=1.5", "augment.mixup_p = 1.5"),
        ("train.device=tpu", "train.device = 'tpu'"),
        ("augment.noise_snr_db=[30,3]", "low above high"),
        ("train.nonsense=1", "unknown key"),
        ("model.birdnet_prior=true", "needs model.backbone birdnet"),
        ("data.balance=maybe", "expected true or false"),
    ],
)
def test_a_bad_set_value_is_refused_before_anything_is_written(synth_data, tmp_path, capsys, override, message):
    rc, text = run_cli(
        capsys,
        "train",
        "--data",
        synth_data,
        "--config",
        "small",
        "--out",
        tmp_path / "run",
        "--set",
        override,
        "--quiet",
    )
    assert rc == 2 and message in text.replace("\n", ""), text
    assert not (tmp_path / "run").exists()


def test_numbers_yaml_leaves_as_text_are_numbers():
    cfg = apply_overrides(load_config("small"), ["train.lr=1e-3", "train.epochs=4.0", "train.devices=2"])
    assert (
        cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float) and cfg.train.epochs == 4 and cfg.train.devices == 2
    )


# --- evaluate's accounting -------------------------------------------------------------------------------------------


def test_evaluate_says_what_it_did_not_use_and_strict_refuses(tmp_path, capsys):
    truth, pred = tmp_path / "truth.csv", tmp_path / "pred.csv"
    truth.write_text("row_id,birds\na,nocall\nb,nocall\n")
    pred.write_text("row_id,birds\na,nocall\nb,nocall\n")
    rc, text = run_cli(capsys, "evaluate", "--pred", pred, "--truth", truth)
    assert rc == 0 and "the truth has no positive at all" in text
    rc, text = run_cli(capsys, "evaluate", "--pred", pred, "--truth", truth, "--strict")
    assert rc == 2 and "--strict" in text
    truth.write_text("row_id,birds\na,x\nb,nocall\n")
    pred.write_text("row_id,birds\na,x\nz1,y\nz2,y\n")
    rc, text = run_cli(capsys, "evaluate", "--pred", pred, "--truth", truth, "--json")
    unused = json.loads(text)["unused"]
    assert unused["pred_rows_without_truth"] == ["z1", "z2"] and unused["truth_rows_without_pred"] == ["b"]
    assert unused["pred_classes_unknown"] == ["y"]
    truth.write_text("row_id,birds\n")
    rc, text = run_cli(capsys, "evaluate", "--pred", pred, "--truth", truth)
    assert rc == 2 and "the truth has no rows" in text
    truth.write_text("row_id,birds\nq,x\n")
    rc, text = run_cli(capsys, "evaluate", "--pred", pred, "--truth", truth)
    assert rc == 2 and "share no row" in text


def test_evaluate_scores_refuses_what_is_not_a_scores_table(tmp_path, capsys):
    truth = tmp_path / "truth.csv"
    truth.write_text("row_id,birds\na,x\n")
    (tmp_path / "test.csv").write_text("site,row_id,seconds,audio_id\nsite_1,a,5,f\n")
    rc, text = run_cli(capsys, "evaluate", "--scores", truth, "--truth", truth)
    assert rc == 2 and "not a Parquet scores table" in text
    other = tmp_path / "scores.parquet"
    pd.DataFrame(
        {"file": ["/else/g.wav"], "start_s": [0.0], "end_s": [5.0], "output": ["clipwise"], "x": [0.9]}
    ).to_parquet(other)
    rc, text = run_cli(capsys, "evaluate", "--scores", other, "--truth", truth)
    assert rc == 2 and "share no row" in text


# --- a full disk -----------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_is_one_clear_error(model_dir, tmp_path, capsys, tiny_disk):
    files = [write_audio(tmp_path / "in" / f"r{i}.wav", seconds=30.0) for i in range(40)]
    (tiny_disk / "filler").write_bytes(bytes(60 * 1024))
    rc, text = run_cli(
        capsys, "predict", "--model", model_dir, *files, "--out", tiny_disk / "out", "--workers", 0, "--quiet"
    )
    assert rc == 2 and "the disk is full" in text and "Traceback" not in text, text
    assert no_temp_files(tiny_disk)


# --- kill -9 and the same command again -------------------------------------------------------------------------------


def kill_when(argv, ready, timeout_s=120.0, poll_s=0.05) -> None:
    """Start `python -m birdsed ARGV`, kill -9 it as soon as ready() holds (checked every poll_s; or it ends by
    itself)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "birdsed", *map(str, argv)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    t0 = time.time()
    while proc.poll() is None and not ready() and time.time() - t0 < timeout_s:
        time.sleep(poll_s)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_of_predict_then_the_same_command(model_dir, tmp_path, capsys):
    files = [write_audio(tmp_path / "in" / f"r{i:02d}.wav", seconds=20.0, freq_hz=500 + 100 * i) for i in range(12)]
    argv = ["predict", "--model", model_dir, tmp_path / "in", "--workers", 0, "--quiet"]
    kill_when(
        [*argv, "--out", tmp_path / "killed"], lambda: len(list((tmp_path / "killed" / "parts").glob("*.parquet"))) >= 2
    )
    assert run_cli(capsys, *argv, "--out", tmp_path / "killed")[0] == 0
    assert run_cli(capsys, *argv, "--out", tmp_path / "whole")[0] == 0
    a, b = (
        pd.read_parquet(tmp_path / d / "scores.parquet")
        .sort_values(["file", "output", "start_s"])
        .reset_index(drop=True)
        for d in ("killed", "whole")
    )
    assert len(a) == len(files) * 3 * 4 or len(a) > 0
    pd.testing.assert_frame_equal(a, b)
    assert no_temp_files(tmp_path / "killed") and not (tmp_path / "killed" / ".lock").exists()


def test_kill_9_of_prepare_then_the_same_command(tmp_path, capsys):
    data = tmp_path / "data"
    for i in range(16):
        write_audio(data / "audio" / f"r{i:02d}.flac", seconds=30.0, rate=44100, freq_hz=300 + 50 * i)
    pd.DataFrame({"filename": [f"r{i:02d}.flac" for i in range(16)], "labels": ["a"] * 16}).to_csv(
        data / "labels.csv", index=False
    )
    kill_when(
        ["prepare", data, "--out", tmp_path / "killed", "--workers", 1],
        lambda: len(list((tmp_path / "killed" / "audio").glob("*.json"))) >= 2,
    )
    assert run_cli(capsys, "prepare", data, "--out", tmp_path / "killed", "--workers", 1)[0] == 0
    assert run_cli(capsys, "prepare", data, "--out", tmp_path / "whole", "--workers", 1)[0] == 0
    from birdsed.data.store import AudioStore

    a, b = AudioStore(tmp_path / "killed"), AudioStore(tmp_path / "whole")
    assert sorted(a.index.index) == sorted(b.index.index)
    for rid in b.index.index:
        np.testing.assert_array_equal(a.read(rid), b.read(rid))
    assert no_temp_files(tmp_path / "killed")


@pytest.mark.parametrize(
    "more",
    [["train.epochs=5"], ["data.val_fraction=0", "train.max_steps=14", "train.epochs=6"]],
    ids=["validated", "no-validation-max-steps"],
)
def test_kill_9_of_train_then_resume_gives_the_uninterrupted_model(synth_data, tmp_path, capsys, more):
    """With a loader worker, as the presets train: its first pass is drawn before Lightning sets the epoch (the
    resumed epoch had epoch 0's crops); without validation and with max_steps, Lightning went on with the finished
    epoch (train/checkpoint.close_epoch)."""
    from safetensors.torch import load_file

    from birdsed.train.run import train

    fast = [*FAST, "train.workers=1", *more]
    whole = train(synth_data, apply_overrides(load_config("small"), fast), tmp_path / "whole", quiet=True)
    run = tmp_path / "killed"
    argv = ["train", "--data", synth_data, "--config", "small", "--out", run, "--quiet"]
    argv += [x for kv in fast for x in ("--set", kv)]
    kill_when(argv, lambda: (run / "checkpoints" / "last.ckpt").is_file())
    if (run / "model" / "model.json").is_file():
        pytest.skip("training finished before it could be killed")
    rc, text = run_cli(capsys, *argv, "--resume")
    assert rc == 0, text
    a, b = load_file(str(whole / "weights.safetensors")), load_file(str(run / "model" / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads((m / "model.json").read_text())["train"]["steps"] for m in (whole, run / "model")]
    assert steps[0] == steps[1]
    epochs = pd.read_csv(run / "metrics.csv")["epoch"].dropna()
    assert sorted(set(epochs)) == sorted(set(pd.read_csv(tmp_path / "whole" / "metrics.csv")["epoch"].dropna()))
    whole_rows = pd.read_csv(tmp_path / "whole" / "metrics.csv")
    assert len(pd.read_csv(run / "metrics.csv")) == len(whole_rows)


@pytest.mark.parametrize("more", [[], ["data.val_fraction=0"]], ids=["validated", "no-validation"])
def test_every_epoch_row_is_on_disk_before_its_checkpoint(synth_data, tmp_path, monkeypatch, more):
    """A kill right after last.ckpt loses nothing of metrics.csv: Lightning wrote the epoch's mean training loss
    after the checkpoint, and a resumed run missed that row (CI, kill -9 test, 8 rows against 9)."""
    from birdsed.train import checkpoint
    from birdsed.train.run import train

    run, seen = tmp_path / "run", []
    write = checkpoint.AtomicCheckpointIO.save_checkpoint

    def spy(self, ckpt, path, storage_options=None):
        if str(path).endswith("last.ckpt"):
            rows = pd.read_csv(run / "metrics.csv")
            seen.append((ckpt["epoch"], set(rows.dropna(subset=["train_loss_epoch"])["epoch"])))
        write(self, ckpt, path, storage_options)

    monkeypatch.setattr(checkpoint.AtomicCheckpointIO, "save_checkpoint", spy)
    train(synth_data, apply_overrides(load_config("small"), [*FAST, *more]), run, quiet=True)
    assert [e for e, _ in seen] == [0, 1, 2]
    assert all(epoch in logged for epoch, logged in seen), seen


def test_kill_9_of_self_train_then_the_same_command(synth_data, tmp_path, capsys):
    """Killed while its first student trains (the teacher and its pseudo-labels done): the same command keeps the
    finished round, resumes the student and writes every round."""
    run = tmp_path / "st"
    argv = [
        "self-train",
        "--data",
        synth_data,
        "--unlabelled",
        synth_data / "test_audio",
        "--rounds",
        "1",
        "--config",
        "small",
        "--out",
        run,
        "--workers",
        "0",
        "--quiet",
        *FAST_SET,
    ]
    kill_when(argv, lambda: (run / "round1" / "checkpoints" / "last.ckpt").is_file())
    if (run / "rounds.csv").is_file():
        pytest.skip("self-training finished before it could be killed")
    assert (run / "round0" / "pl" / "pseudo_labels.parquet").is_file()
    teacher = (run / "round0" / "model" / "weights.safetensors").stat().st_mtime_ns
    rc, text = run_cli(capsys, *argv)
    assert rc == 0, text
    assert list(pd.read_csv(run / "rounds.csv")["round"]) == [0, 1]
    assert (run / "round0" / "model" / "weights.safetensors").stat().st_mtime_ns == teacher  # not trained again
    assert (run / "round1" / "model" / "model.json").is_file() and no_temp_files(run)


def test_a_killed_runs_half_written_files_go_and_a_live_run_keeps_its_folder(synth_data, tmp_path, capsys):
    """What kill -9 leaves mid-write (a metrics.csv temporary, a half-copied model folder) is removed by the next
    train into that folder; while a live run holds the folder, a second one is refused and touches nothing."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    planted = [
        run / ".metrics.csv.birdsed-0badc0de.tmp.csv",
        run / "checkpoints" / ".last.ckpt.birdsed-0badc0de.tmp.ckpt",
    ]
    for p in planted:
        p.write_text("half")
    (run / ".model.birdsed-0badc0de.tmpdir").mkdir()
    (run / ".model.birdsed-0badc0de.tmpdir" / "weights.safetensors").write_bytes(b"half")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    argv = ["train", "--data", synth_data, "--config", "small", "--out", run, "--quiet", *FAST_SET]
    try:
        (run / ".lock").write_text(str(holder.pid))
        rc, text = run_cli(capsys, *argv)
        assert rc == 2 and f"pid {holder.pid}" in text, text
        assert all(p.is_file() for p in planted)  # a live run's files are never taken
    finally:
        holder.kill()
        holder.wait()
    rc, text = run_cli(capsys, *argv)
    assert rc == 0, text
    assert (run / "model" / "model.json").is_file() and no_temp_files(run) and not (run / ".lock").exists()


def test_decoder_notes_stay_off_the_console(model_dir, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.mp3").write_bytes(np.random.default_rng(1).bytes(5000))
    write_audio(tmp_path / "in" / "good.wav", seconds=6.0)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "birdsed",
            "predict",
            "--model",
            str(model_dir),
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "out"),
            "--workers",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "errors.csv" in res.stdout + res.stderr
    assert "Audio-MPEG" not in res.stderr and "Note:" not in res.stderr, res.stderr


def test_model_files_have_the_usual_permissions(model_dir):
    modes = {p.name: p.stat().st_mode & 0o777 for p in model_dir.iterdir()}
    assert modes["weights.safetensors"] == modes["model.json"], modes


def test_a_tampered_ensemble_is_bounded(model_dir, tmp_path, capsys):
    from birdsed.model.modeldir import save_ensemble

    ens = save_ensemble([model_dir, model_dir], tmp_path / "ens")
    meta = json.loads((ens / "model.json").read_text())
    audio = write_audio(tmp_path / "a.wav", seconds=6.0)

    def predict_with(edit) -> str:
        m = tmp_path / f"e{len(list(tmp_path.iterdir()))}"
        shutil.copytree(ens, m)
        edit(m)
        rc, text = run_cli(capsys, "predict", "--model", m, audio, "--out", m / "out", "--workers", 0, "--quiet")
        assert rc == 2 and not (m / "out" / "scores.parquet").exists()
        return text

    def nest(m):
        shutil.copytree(ens, m / "members" / "2")
        # the weights fit (model.json is checked whole before any member loads)
        three = {**meta, "ensemble": [*meta["ensemble"], "members/2"], "weights": [1 / 3] * 3}
        (m / "model.json").write_text(json.dumps(three))

    assert "an ensemble inside an ensemble" in predict_with(nest)
    many = lambda m: (m / "model.json").write_text(
        json.dumps({**meta, "ensemble": [f"members/{i}" for i in range(65)]})
    )
    assert "65 ensemble members; at most 64" in predict_with(many)
    twice = lambda m: (m / "model.json").write_text(json.dumps({**meta, "ensemble": ["members/0", "members/0"]}))
    assert "listed twice" in predict_with(twice)
    away = lambda m: (m / "model.json").write_text(json.dumps({**meta, "ensemble": ["members/0", "../../m"]}))
    assert "outside the ensemble folder" in predict_with(away)
