"""Job-array shards and streamed outputs (shard.py, outputs.py): N shards side by side into one --out give the
outputs one run gives."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from conftest import tiny_model

from birdsed.errors import BirdsedError, ConfigError
from birdsed.infer.merge import merge
from birdsed.infer.predict import run_predict
from birdsed.infer.shard import parse_shard, shard_files


def test_shards_cover_every_file_once_deterministically_and_balance_sizes(tmp_path):
    sizes = [5, 90, 40, 40, 10, 70, 1, 33]
    files = []
    for k, n in enumerate(sizes):
        f = tmp_path / f"f{k}.wav"
        f.write_bytes(b"x" * n)
        files.append(str(f))
    shards = [shard_files(files, i, 3) for i in (1, 2, 3)]
    assert sorted(f for s in shards for f in s) == sorted(files)
    assert shards == [shard_files(list(reversed(files)), i, 3) for i in (1, 2, 3)]  # input order does not matter
    loads = [sum(len(open(f, "rb").read()) for f in s) for s in shards]
    assert max(loads) - min(loads) <= max(sizes)  # LPT: within one file of each other
    assert shard_files(files, 1, 1) == sorted(files)


@pytest.mark.parametrize("text", ["0/4", "5/4", "a/b", "3", "1/0"])
def test_a_bad_shard_is_refused(text):
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)


def model_dir(tmp_path, classes):
    return tiny_model(tmp_path / "m", classes)


def test_shards_side_by_side_merge_into_the_outputs_of_one_run(synth_data, tmp_path):
    from birdsed.data.manifest import read_dataset

    m = model_dir(tmp_path, read_dataset(synth_data).classes)
    audio = sorted(str(p) for p in (synth_data / "test_audio").iterdir())
    (tmp_path / "in").mkdir()
    inputs = []
    for k, a in enumerate(audio * 2):  # four recordings (copies under other names)
        dst = tmp_path / "in" / f"r{k}.mp3"
        dst.write_bytes(open(a, "rb").read())
        inputs.append(str(dst))
    one = run_predict(m, inputs, tmp_path / "one", formats=("csv", "raven"), quiet=True, workers=0)
    assert one.merged
    shared = tmp_path / "shared"
    cmd = [
        sys.executable,
        "-m",
        "birdsed",
        "predict",
        "--model",
        str(m),
        *inputs,
        "--out",
        str(shared),
        "--workers",
        "0",
        "--quiet",
        "--format",
        "csv",
        "raven",
        "--shard",
    ]
    jobs = [
        subprocess.Popen([*cmd, f"{i}/3"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in (1, 2, 3)
    ]
    outs = [j.communicate(timeout=600)[0] for j in jobs]
    assert [j.returncode for j in jobs] == [0, 0, 0], outs
    a, b = pd.read_parquet(tmp_path / "one" / "scores.parquet"), pd.read_parquet(shared / "scores.parquet")
    pd.testing.assert_frame_equal(
        a.sort_values(["file", "output", "start_s"]).reset_index(drop=True),
        b.sort_values(["file", "output", "start_s"]).reset_index(drop=True),
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "one" / "detections.csv"), pd.read_csv(shared / "detections.csv")
    )
    assert sorted(p.name for p in (shared / "raven").iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "raven").iterdir()
    )
    assert sorted(p.name for p in (shared / "shards").iterdir()) == [
        "1-of-3.json",
        "2-of-3.json",
        "3-of-3.json",
        "partition-3.json",
    ]
    assert not list(shared.glob(".lock*"))
    # merge again by hand: the same files; a missing shard is refused, naming it
    assert merge(shared) == (4, 0)
    (shared / "shards" / "2-of-3.json").unlink()
    with pytest.raises(BirdsedError, match=r"shard\(s\) \[2\] of 3 have not finished"):
        merge(shared)


def test_a_shard_does_not_merge_while_others_are_missing(synth_data, tmp_path):
    from birdsed.data.manifest import read_dataset

    m = model_dir(tmp_path, read_dataset(synth_data).classes)
    audio = sorted(str(p) for p in (synth_data / "test_audio").iterdir())
    s = run_predict(m, audio, tmp_path / "out", quiet=True, workers=0, shard="1/2")
    assert not s.merged and not (tmp_path / "out" / "scores.parquet").exists()
    s = run_predict(m, audio, tmp_path / "out", quiet=True, workers=0, shard="2/2")
    assert s.merged and len(pd.read_parquet(tmp_path / "out" / "scores.parquet")["file"].unique()) == len(audio)


def test_scores_are_written_in_row_groups_of_whole_recordings(synth_data, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from birdsed.data.manifest import read_dataset
    from birdsed.infer import parts

    m = model_dir(tmp_path, read_dataset(synth_data).classes)
    audio = sorted(str(p) for p in (synth_data / "test_audio").iterdir())
    run_predict(m, audio, tmp_path / "out", quiet=True, workers=0)
    assert pq.ParquetFile(tmp_path / "out" / "scores.parquet").metadata.num_row_groups == 1  # a few small recordings
    monkeypatch.setattr(parts, "ROW_GROUP_ROWS", 1)
    run_predict(m, audio, tmp_path / "out2", quiet=True, workers=0)
    f = pq.ParquetFile(tmp_path / "out2" / "scores.parquet")
    assert f.metadata.num_row_groups == len(audio)  # never a recording split
    assert [len(f.read_row_group(i).column("file").unique()) for i in range(len(audio))] == [1] * len(audio)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "scores.parquet"), f.read().to_pandas())


def test_the_combined_outputs_do_not_depend_on_how_the_parts_are_batched(synth_data, tmp_path, monkeypatch):
    """write_combined decides many recordings at once (parts.blocks); one recording a block gives the same files."""
    from birdsed.data.manifest import read_dataset
    from birdsed.infer import parts

    m = model_dir(tmp_path, read_dataset(synth_data).classes)
    from birdsed.infer.outputs import DecisionOptions

    decision = DecisionOptions(threshold=0.0, max_birds=1)  # a detection in every row: files with something in them
    kw = dict(test_csv=synth_data / "test.csv", formats=("csv", "raven", "audacity"), decision=decision, quiet=True)
    run_predict(m, [], tmp_path / "whole", workers=0, **kw)
    monkeypatch.setattr(parts, "DECIDE_CELLS", 1)  # every recording a block alone
    run_predict(m, [], tmp_path / "one", workers=0, **kw)
    whole = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*") if p.is_file())
    assert [p for p in whole if p.parts[0] == "raven"] and pd.read_csv(tmp_path / "whole" / "detections.csv").size
    for rel in whole:
        if rel.parts[0] != "parts" and rel.suffix != ".json":
            assert (tmp_path / "whole" / rel).read_bytes() == (tmp_path / "one" / rel).read_bytes(), rel


def test_without_the_cluster_extra_cluster_names_the_pip_command(synth_data, tmp_path):
    """dask.distributed made unimportable (as where birdsed[cluster] is not installed): exit 2, the pip command, and
    no output folder half made."""
    from birdsed.data.manifest import read_dataset

    m = model_dir(tmp_path, read_dataset(synth_data).classes)
    audio = sorted(str(p) for p in (synth_data / "test_audio").iterdir())[:1]
    argv = ["predict", "--model", str(m), *audio, "--out", str(tmp_path / "out"), "--cluster", "local:2", "--quiet"]
    code = f"import sys; sys.modules['distributed'] = None; from birdsed.cli import main; sys.exit(main({argv!r}))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    said = res.stdout + res.stderr
    assert res.returncode == 2, said[-2000:]
    assert "pip install 'birdsed[cluster]'" in said
    assert not (tmp_path / "out" / "scores.parquet").exists()
