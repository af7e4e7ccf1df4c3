"""`predict` tried as a hostile user would (issue #40): absurd values, shards whose inputs change, recordings changed
after they were scored, odd and long file names, the same recording twice, spreadsheet formulas in names.

Each test asserts the exit status (0 all done, 1 done with skipped items, 2 refused), the message naming the thing and
that no other recording's outputs are lost. docs/reliability.md has the table of what is tried here.
"""

import pytest
import torch
from conftest import write_audio

from birdsed.cli import main
from birdsed.config import FrontendConfig, ModelConfig
from birdsed.model.modeldir import save_model_dir
from birdsed.model.sed import SEDModel


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    m = SEDModel(FrontendConfig(n_mels=32), ModelConfig(backbone="mobilenetv3_small_100"), ["x", "y"]).eval()
    return save_model_dir(m, tmp_path_factory.mktemp("model") / "m")


def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


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
