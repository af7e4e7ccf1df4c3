"""`train`, `self-train` and `pseudo-label` as a hostile user runs them: absurd values refused before anything is
written, counts of processes within the machine, Ctrl-C and SIGTERM that stop cleanly and keep what finished, and
kill -9 at any moment followed by --resume that ends with the uninterrupted run's weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import FAST, FAST_SET, run_cli, tiny_model

from birdsed.cli import main
from birdsed.cli.values import cores

REPO = Path(__file__).resolve().parents[1]


# --- values checked before anything is written --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "99999999999999999999"], "--seed: 99999999999999999999: must be <= 4294967295"),
        (["--devices", "abc"], "--devices: 'abc' is not a whole number (or 'auto')"),
        (["--devices", "0"], "--devices: 0: must be >= 1"),
        (["--epochs", "-3"], "--epochs: -3: must be >= 1"),
        (["--batch-size", "0"], "--batch-size: 0: must be >= 1"),
        (["--workers", "-1"], "--workers: -1: must be >= 0"),
        (["--max-steps", "nan"], "--max-steps: 'nan' is not a whole number"),
    ],
)
def test_train_numbers_are_refused_by_the_parser(synth_data, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(synth_data), "--config", "small", "--out", str(out), *args])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "nope"], "train.strategy = 'nope': valid: "),
        (["--set", "train.devices=abc"], "train.devices = 'abc': a whole number or auto"),
        (["--set", "train.seed=99999999999999999999"], "train.seed = 99999999999999999999: must be in [0, 4294967295]"),
        (["--set", "frontend.n_fft=1000000000"], "frontend.n_fft = 1000000000: must be in (0, 65536]"),
        (["--set", "frontend.n_fft=65536"], "frontend.n_fft = 65536: a window longer than a second"),
        (["--set", "frontend.n_mels=100000"], "frontend.n_mels = 100000: must be in (0, 1024]"),
        (["--set", "frontend.n_mels=1000"], "frontend.n_mels = 1000: more mel bands than the 513 FFT bins"),
        (["--set", "model.freq_scale=1e-9"], "model.freq_scale = 1e-09: must be in [0.05, 16]"),
        (["--set", "model.freq_scale=0.1"], "the backbone's input image would be 6 pixels in height"),
        (["--set", "model.time_scale=16"], "8016 pixels in width (501 frames of data.crop_s x model.time_scale 16)"),
        (["--devices", "1000", "--device", "cpu"], f"train.devices = 1000: this machine has {cores()} cores"),
    ],
)
def test_train_values_the_network_or_machine_cannot_take_are_refused_before_anything_is_written(
    synth_data, tmp_path, capsys, args, message
):
    out = tmp_path / "run"
    rc, text = run_cli(capsys, "train", "--data", synth_data, "--config", "small", "--out", out, *args)
    assert rc == 2, text
    assert text.startswith("error: ") and message in text.replace("\n", " "), text
    assert not out.exists()  # no config.yaml, no lock, no folder


def test_a_train_refused_after_preparing_says_what_its_folder_keeps(synth_data, tmp_path, capsys, caplog):
    """Every recording undecodable: refused after the store was prepared; the folder keeps the store (its
    report.csv says why each was left out) and says so, and holds nothing else (no config.yaml, no lock)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    for f in (data / "train_audio").rglob("*.*"):
        f.write_bytes(os.urandom(100))
    out = tmp_path / "run"
    rc, text = run_cli(capsys, "train", "--data", data, "--config", "small", "--out", out)
    assert rc == 2 and "error: " in text and "no usable recordings" in text, text
    assert f"{out} keeps what this run prepared (store): a train into the same --out reuses it" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["store"] and (out / "store" / "report.csv").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "nan"], "--temperature: 'nan': must be a finite number"),
        (["--power", "0"], "--power: 0: must be > 0"),
        (["--floor", "1"], "--floor: 1: must be < 1"),
        (["--top-k", "0"], "--top-k: 0: must be >= 1"),
        (["--window-s", "1e9"], "--window-s: 1e9: must be <= 60"),
        (["--hop-s", "inf"], "--hop-s: 'inf': must be a finite number"),
        (["--batch-size", "-5"], "--batch-size: -5: must be >= 1"),
        (["--workers", "-1"], "--workers: -1: must be >= 0"),
    ],
)
def test_pseudo_label_numbers_are_refused(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main(["pseudo-label", "--model", str(tmp_path / "m"), str(tmp_path), "--out", str(tmp_path / "pl"), *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "pl").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rounds", "0"], "--rounds: 0: must be >= 1"),
        (["--workers", "100000"], "--workers: 100000: must be <= "),
        (["--temperature", "inf"], "--temperature: 'inf': must be a finite number"),
    ],
)
def test_self_train_numbers_are_refused(tmp_path, capsys, args, message):
    argv = ["self-train", "--data", str(tmp_path), "--unlabelled", str(tmp_path), "--out", str(tmp_path / "st")]
    with pytest.raises(SystemExit) as e:
        main([*argv, *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "st").exists()


def test_a_process_started_for_another_device_dies_with_its_parent(tmp_path):
    """What Lightning starts for devices 1..N-1 (LOCAL_RANK > 0) is killed by Linux when the launching process dies:
    a killed `train --devices N` leaves no training process behind."""
    pid_file = tmp_path / "child.pid"
    child = textwrap.dedent(
        f"""
        import os, time
        from birdsed.device import die_with_parent
        die_with_parent()
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
        """
    )
    parent = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {child!r}], env={{**os.environ, "LOCAL_RANK": "1"}})
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent])
    t0 = time.time()
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.time() - t0 < 60, "the child never started"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.time()
    while _alive(pid) and time.time() - t0 < 10:
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# --- the library's work stays in the library -----------------------------------------------------------------------


def test_train_with_a_teacher_checks_the_config_once(synth_data, tmp_path, capsys, monkeypatch):
    """`train --teacher`: the CLI parses and calls train(), which checks the config once, then distils."""
    from birdsed.config import Config
    from birdsed.data.manifest import read_dataset

    checks = []
    check = Config.check
    monkeypatch.setattr(Config, "check", lambda self: (checks.append(1), check(self))[1])
    teacher = tiny_model(tmp_path / "teacher", read_dataset(synth_data).classes)
    fast = ["train.epochs=1", "train.max_steps=1", "train.batch_size=8", *FAST[2:]]
    argv = ["train", "--data", synth_data, "--config", "small", "--out", tmp_path / "student", "--quiet"]
    rc, text = run_cli(capsys, *argv, "--teacher", teacher, *[x for kv in fast for x in ("--set", kv)])
    assert rc == 0, text
    assert len(checks) == 1
    assert (tmp_path / "student" / "teacher_pl" / "pseudo_labels.parquet").is_file()


# --- Ctrl-C and SIGTERM ----------------------------------------------------------------------------------------------


def start(argv: list) -> subprocess.Popen:
    """`python -m birdsed ARGV` in a process group of its own (a terminal's Ctrl-C and `kill -TERM -PGID` reach
    the whole group: the loader's workers too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "birdsed", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )


def signal_when(proc: subprocess.Popen, sig: int, ready, timeout_s: float = 180.0) -> tuple[int, str]:
    """Send `sig` to proc's process group once ready() holds; its exit status and output."""
    t0 = time.time()
    while proc.poll() is None and not ready() and time.time() - t0 < timeout_s:
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_train_says_so_keeps_its_epoch_and_resumes(synth_data, tmp_path, capsys, sig, status):
    run = tmp_path / "run"
    argv = ["train", "--data", synth_data, "--config", "small", "--out", run, "--quiet", *FAST_SET, "--workers", "1"]
    rc, out = signal_when(start(argv), sig, lambda: (run / "checkpoints" / "last.ckpt").is_file())
    if (run / "model" / "model.json").is_file():
        pytest.skip("training finished before it could be stopped")
    assert rc == status, out
    assert "Traceback" not in out and "DataLoader" not in out, out
    assert f"stopped by {signal.Signals(sig).name}. The last finished epoch is kept" in out.replace("\n", " ")
    assert "The same command with --resume continues." in out.replace("\n", " ")
    rc, text = run_cli(capsys, *argv, "--resume")
    assert rc == 0, text


def test_a_stop_sent_to_the_main_process_alone_ends_the_workers_that_ignore_it(tmp_path):
    """kill -INT PID (not the group) of a train: its loader's workers ignore SIGINT and SIGTERM (quiet_worker), and
    Python's exit waited for ever on them (its SIGTERM to daemonic children is ignored too): found hanging with no
    CPU by a hostile try. A stopped verb now kills its workers (cli.end_workers) and exits 130."""
    script = textwrap.dedent(
        """
        import argparse, multiprocessing, signal, sys, time
        from birdsed import cli

        def quiet():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(600)

        def verb(a):
            multiprocessing.Process(target=quiet, daemon=True).start()
            time.sleep(0.5)
            raise KeyboardInterrupt

        parser = argparse.ArgumentParser()
        parser.add_argument("-v", dest="verbose", action="store_true")
        parser.set_defaults(func=verb)
        cli.build_parser = lambda: parser
        sys.exit(cli.main([]))
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 130 and "stopped by SIGINT." in res.stdout + res.stderr, res.stderr
    assert "Traceback" not in res.stderr, res.stderr


def test_a_train_stopped_while_writing_its_model_says_what_is_kept(synth_data, tmp_path, capsys, monkeypatch):
    """Ctrl-C after the last epoch, while the model folder is written (outside Lightning's fit): the note said
    only "--resume continues", not what was kept (found by a review of the kill tests' windows)."""
    from birdsed.train import run as train_run

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_run, "save_model_dir", stopped)
    run = tmp_path / "run"
    argv = ["train", "--data", synth_data, "--config", "small", "--out", run, "--quiet", *FAST_SET]
    rc, out = run_cli(capsys, *argv)
    assert rc == 130, out
    said = " ".join(out.split())
    assert f"The last finished epoch is kept ({run / 'checkpoints' / 'last.ckpt'})." in said, out
    assert said.count("The last finished epoch is kept") == 1 and "--resume continues" in said, out


def test_a_stopped_self_train_says_so(synth_data, tmp_path):
    run = tmp_path / "st"
    argv = ["self-train", "--data", synth_data, "--unlabelled", synth_data / "test_audio", "--rounds", "1"]
    argv += ["--config", "small", "--out", run, "--workers", "0", "--quiet", *FAST_SET]
    rc, out = signal_when(start(argv), signal.SIGINT, lambda: (run / "round0" / "checkpoints" / "last.ckpt").is_file())
    if (run / "rounds.csv").is_file():
        pytest.skip("self-training finished before it could be stopped")
    assert rc == 130, out
    assert "Traceback" not in out
    assert "stopped by SIGINT." in out and "The same command continues" in out.replace("\n", " ")


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path):
    """benchmarks/bench_resume.py with three kills (random moments and checkpoint writes): every resumed run ends
    with the uninterrupted run's weights, byte for byte."""
    import json

    out = tmp_path / "resume.json"
    argv = [sys.executable, str(REPO / "benchmarks" / "bench_resume.py"), "--kills", "3", "--kills-per-trial", "3"]
    done = subprocess.run([*argv, "--work", str(tmp_path / "w"), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["kills"] >= 3 and result["all_identical"]
