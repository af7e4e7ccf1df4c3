"""Every command of the README's quick start runs, as written, on small real inputs (a synthetic data set standing
in for the user's files); only training gets a few steps instead of its epochs. The two set-up commands are CI's
(.ci/run runs the second; the demo's pipeline is test_pipeline.py's)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HAS_BIRDNET

README = Path(__file__).resolve().parents[1] / "README.md"
FAST_TRAIN = ["--set", "train.epochs=1", "--set", "train.max_steps=2", "--set", "train.batch_size=4"]


def quick_start_blocks() -> list[list[str]]:
    """The commands of each ```bash block under '## Quick start', comments dropped."""
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [[line.split("  #")[0].strip() for line in b.splitlines() if line.strip()] for b in blocks]


def run(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(cmd)
    assert argv[0] == "birdsed", cmd
    if argv[1] == "train":
        argv += FAST_TRAIN
    res = subprocess.run([sys.executable, "-m", "birdsed", *argv[1:]], cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f"`{cmd}` failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture
def user_folder(tmp_path, synth_data) -> Path:
    """What the quick start assumes the user has: recordings/, labelled my_data/, my_annotations/, a species list."""
    shutil.copytree(synth_data / "test_audio", tmp_path / "recordings")
    shutil.copytree(synth_data, tmp_path / "my_data", ignore=shutil.ignore_patterns("test_*"))
    shutil.copytree(synth_data / "test_raven", tmp_path / "my_annotations")
    (tmp_path / "my_species.txt").write_text("amerob\nNorthern Cardinal\nTurdus merula\n")
    return tmp_path


def test_the_quick_start_has_the_two_paths():
    blocks = quick_start_blocks()
    assert len(blocks) == 2 and all(blocks), blocks
    assert blocks[0][0].startswith("birdsed birdnet init") and blocks[1][0].startswith("birdsed train")


@pytest.mark.skipif(not HAS_BIRDNET, reason="the birdnet extra is not installed")
def test_the_birdnet_quick_start_runs_as_written(user_folder):
    for cmd in quick_start_blocks()[0]:
        run(cmd, user_folder)
    assert (user_folder / "preds" / "scores.parquet").is_file()
    assert list((user_folder / "preds" / "raven").glob("*.txt"))
    assert (user_folder / "preds" / "report.html").stat().st_size > 10_000


def test_the_own_model_quick_start_runs_as_written(user_folder):
    outs = [run(cmd, user_folder) for cmd in quick_start_blocks()[1]]
    assert (user_folder / "runs" / "mine" / "model" / "model.json").is_file()
    assert list((user_folder / "preds_mine" / "audacity").glob("*.txt"))
    printed = outs[-1].stdout + outs[-1].stderr
    found = re.search(r"outputs against truth \((\d+) rows\)", printed)  # evaluate scored rows it lined up
    assert found and int(found[1]) > 0, printed[-2000:]
    assert all(kind in printed for kind in ("segmentwise", "clipwise")), printed[-2000:]


def test_the_python_api_lines_run_as_written(user_folder, monkeypatch):
    text = README.read_text().split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)
    assert '["train.epochs=20"]' in code
    fast = '["train.epochs=1", "train.max_steps=2", "train.batch_size=4"]'  # speed only
    monkeypatch.chdir(user_folder)
    code = code.replace('["train.epochs=20"]', fast)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    macro_ap = float(out.stdout.strip().splitlines()[-1])
    assert 0.0 < macro_ap <= 1.0, out.stdout  # NaN (no truth lined up) fails too
