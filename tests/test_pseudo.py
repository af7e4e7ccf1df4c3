"""Soft labels of unlabelled recordings: the transform, the table's round trip and schema, refusals, the verb."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAST, tiny_model, write_audio

from birdsed.cli import main
from birdsed.errors import ConfigError
from birdsed.train.pseudo import SoftLabelOptions, read_soft_labels, soft_label_table, soft_labels, write_soft_labels


def test_the_transform_in_its_order():
    p = np.array([[0.9, 0.5, 0.1, 0.02]])
    assert np.allclose(soft_labels(p, SoftLabelOptions()), p)
    assert np.allclose(soft_labels(p, SoftLabelOptions(power=2)), p**2)
    sharp = soft_labels(p, SoftLabelOptions(temperature=0.5))
    logit = np.log(p / (1 - p))
    assert np.allclose(sharp, 1 / (1 + np.exp(-logit / 0.5)), atol=1e-6) and sharp[0, 1] == pytest.approx(0.5)
    assert np.allclose(soft_labels(p, SoftLabelOptions(floor=0.2)), [[0.9, 0.5, 0.0, 0.0]])
    assert np.allclose(soft_labels(p, SoftLabelOptions(top_k=2)), [[0.9, 0.5, 0.0, 0.0]])
    assert np.allclose(soft_labels(p, SoftLabelOptions(power=2, floor=0.2)), [[0.81, 0.25, 0.0, 0.0]])  # power first


@pytest.mark.parametrize(
    "opts,match",
    [
        (SoftLabelOptions(output="best"), "valid"),
        (SoftLabelOptions(power=0), "power"),
        (SoftLabelOptions(floor=1), "floor"),
        (SoftLabelOptions(top_k=0), "top_k"),
    ],
)
def test_bad_options_are_refused(opts, match):
    with pytest.raises(ConfigError, match=match):
        opts.check()


def scores_of(files, classes):
    rows = [
        {"file": f, "start_s": s, "end_s": s + 5.0, "output": o, **{c: 0.1 * (i + 1) for i, c in enumerate(classes)}}
        for f in files
        for s in (5.0, 0.0)
        for o in ("clipwise", "att", "segmentwise")
    ]
    return pd.DataFrame(rows)


def test_the_table_round_trips_with_its_metadata(tmp_path):
    files = [str(write_audio(tmp_path / "a.wav")), str(write_audio(tmp_path / "b.wav"))]
    table = soft_label_table(scores_of(files, ["x", "y"]), ["x", "y"], SoftLabelOptions(power=2))
    assert list(table.columns) == ["file", "start_s", "end_s", "x", "y"] and len(table) == 4
    assert list(table["start_s"]) == [0.0, 5.0, 0.0, 5.0] and np.allclose(table["y"], 0.04)
    write_soft_labels(
        table, tmp_path / "pl" / "pseudo_labels.parquet", {"classes": ["x", "y"], "transform": {"power": 2}}
    )
    back = read_soft_labels(tmp_path / "pl", ["x", "y"])
    pd.testing.assert_frame_equal(back.table, table)
    assert back.meta["transform"] == {"power": 2} and back.missing_files == []
    assert list(pd.read_parquet(tmp_path / "pl" / "pseudo_labels.parquet").columns) == list(table.columns)


def test_other_classes_are_refused_naming_them_and_missing_files_reported(tmp_path):
    files = [str(write_audio(tmp_path / "a.wav")), str(tmp_path / "gone.wav")]
    table = soft_label_table(scores_of(files, ["x", "y"]), ["x", "y"], SoftLabelOptions())
    write_soft_labels(table, tmp_path / "pl.parquet", {})
    with pytest.raises(ConfigError, match=r"only in the table \['y'\], only in training \['z'\]"):
        read_soft_labels(tmp_path / "pl.parquet", ["x", "z"])
    back = read_soft_labels(tmp_path / "pl.parquet", ["x", "y"])
    assert back.missing_files == [files[1]] and set(back.table["file"]) == {files[0]}
    bad = table.assign(x=2.0)
    write_soft_labels(bad, tmp_path / "bad.parquet", {})
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        read_soft_labels(tmp_path / "bad.parquet")
    (tmp_path / "text.parquet").write_text("file,start_s\n")
    with pytest.raises(ConfigError, match="not a readable pseudo-label table"):
        read_soft_labels(tmp_path / "text.parquet")


def test_the_verb_writes_soft_labels_of_any_model(tmp_path, capsys):
    model = tiny_model(tmp_path / "m", ["x", "y"])
    write_audio(tmp_path / "in" / "a.wav", seconds=12.0)
    write_audio(tmp_path / "in" / "b.wav", seconds=7.0, freq_hz=3000)
    argv = [
        "pseudo-label",
        "--model",
        str(model),
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "pl"),
        "--workers",
        "0",
        "--quiet",
        "--output",
        "att",
        "--top-k",
        "1",
    ]
    assert main(argv) == 0
    pl = read_soft_labels(tmp_path / "pl", ["x", "y"])
    assert pl.meta["transform"]["output"] == "att" and len(pl.meta["model_sha256"]) == 64
    assert (pl.table[["x", "y"]].gt(0).sum(axis=1) <= 1).all() and len(pl.table) >= 4
    scores = pd.read_parquet(tmp_path / "pl" / "scores.parquet")
    att = scores[scores["output"] == "att"].sort_values(["file", "start_s"])
    assert np.allclose(att[["x", "y"]].max(axis=1), pl.table[["x", "y"]].max(axis=1))
    assert main(argv) == 0  # a re-run resumes (every recording done before)


def test_pseudo_windows_join_the_crops_with_their_soft_targets_and_weight(tmp_path):
    from birdsed.data.dataset import CropDataset
    from birdsed.data.manifest import read_dataset
    from birdsed.data.sampling import Item
    from birdsed.data.store import AudioStore, prepare
    from birdsed.train.pseudo import load_pool

    data = tmp_path / "data"
    write_audio(data / "audio" / "a.wav", seconds=6.0)
    pd.DataFrame({"filename": ["a.wav"], "labels": ["x"]}).to_csv(data / "labels.csv", index=False)
    prepare(read_dataset(data), tmp_path / "store", workers=1, quiet=True)
    soundscape = str(write_audio(tmp_path / "u" / "s.wav", seconds=12.0, freq_hz=4000))
    table = pd.DataFrame(
        {"file": [soundscape] * 2, "start_s": [0.0, 5.0], "end_s": [5.0, 10.0], "x": [0.0, 0.2], "y": [0.9, 0.0]}
    ).astype({"x": "float32", "y": "float32"})
    write_soft_labels(table, tmp_path / "pl.parquet", {})
    pool = load_pool([str(tmp_path / "pl.parquet")], ["x", "y"], tmp_path / "pool_store", workers=1)
    assert len(pool) == 2
    with pytest.raises(ConfigError, match="differ from the training classes"):
        load_pool([str(tmp_path / "pl.parquet")], ["x", "z"], tmp_path / "pool2", workers=1)
    store = AudioStore(tmp_path / "store")
    tgt = {"a.wav": np.array([1.0, 0.0], np.float32)}
    ds = CropDataset(store, [Item("a.wav", 0.0, 6.0)], tgt, 5.0, seed=0, pool=pool, n_pseudo=2, pseudo_weight=0.3)
    assert len(ds) == 3
    pseudo = [ds[(i, 0)] for i in (1, 2)]
    assert {tuple(round(float(v), 3) for v in y) for _, y, _ in pseudo} == {(0.0, 0.9), (0.2, 0.0)}
    assert all(float(w) == pytest.approx(0.3) and x.shape == (160000,) for x, _, w in pseudo)
    mixed = CropDataset(store, [Item("a.wav", 0.0, 6.0)], tgt, 5.0, seed=0, pool=pool, mix_p=1.0)
    x, y, w = mixed[(0, 0)]
    plain_x, _, _ = CropDataset(store, [Item("a.wav", 0.0, 6.0)], tgt, 5.0, seed=0)[(0, 0)]
    assert float(w) == 1.0 and y[0] == 1.0 and y[1] in (0.0, pytest.approx(0.9))
    assert not torch.equal(x, plain_x)  # the soundscape is in the background


def test_weighted_bce_weights_each_example():
    from birdsed.train.loss import bce

    p, y = torch.tensor([[0.9, 0.1], [0.2, 0.7]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(bce(p, y, torch.ones(2)), bce(p, y))
    only_first = bce(p, y, torch.tensor([2.0, 0.0]))
    assert torch.allclose(only_first, bce(p[:1], y[:1]))


def test_train_with_pseudo_labels_end_to_end(synth_data, trained_run, tmp_path, capsys):
    _, teacher = trained_run
    fast = [*FAST, "train.epochs=2", "train.max_steps=3", "train.batch_size=8"]
    assert (
        main(
            [
                "pseudo-label",
                "--model",
                str(teacher),
                str(synth_data / "test_audio"),
                "--out",
                str(tmp_path / "pl"),
                "--workers",
                "0",
                "--quiet",
                "--power",
                "2",
            ]
        )
        == 0
    )
    argv = [
        "train",
        "--data",
        str(synth_data),
        "--config",
        "small",
        "--out",
        str(tmp_path / "student"),
        "--quiet",
        "--pseudo",
        str(tmp_path / "pl"),
        "--set",
        "augment.pseudo_mix_p=0.5",
        "--set",
        "data.pseudo_weight=0.5",
    ]
    assert main([*argv, *[x for kv in fast for x in ("--set", kv)]]) == 0
    import yaml

    saved = yaml.safe_load((tmp_path / "student" / "config.yaml").read_text())
    assert (
        saved["data"]["pseudo"] == [str((tmp_path / "pl").resolve())]
        and (tmp_path / "student" / "pseudo_store").is_dir()
    )
    assert (tmp_path / "student" / "model" / "weights.safetensors").is_file()


def test_self_train_rounds_and_resume(synth_data, tmp_path, capsys):
    fast = [*FAST, "train.epochs=2", "train.max_steps=2", "train.batch_size=8"]
    argv = [
        "self-train",
        "--data",
        str(synth_data),
        "--unlabelled",
        str(synth_data / "test_audio"),
        "--rounds",
        "1",
        "--config",
        "small",
        "--out",
        str(tmp_path / "st"),
        "--workers",
        "0",
        "--quiet",
        "--power",
        "2",
        *[x for kv in fast for x in ("--set", kv)],
    ]
    assert main(argv) == 0
    rounds = pd.read_csv(tmp_path / "st" / "rounds.csv")
    assert list(rounds["round"]) == [0, 1] and rounds["pseudo_windows"].iloc[1] > 0
    assert (tmp_path / "st" / "round0" / "pl" / "pseudo_labels.parquet").is_file()
    before = (tmp_path / "st" / "round1" / "model" / "weights.safetensors").stat().st_mtime_ns
    assert main(argv) == 0  # a re-run finds every round done
    assert (tmp_path / "st" / "round1" / "model" / "weights.safetensors").stat().st_mtime_ns == before


def test_train_with_a_teacher_distils_its_soft_labels(synth_data, tmp_path, capsys, caplog):
    """...of the training and unlabelled recordings alone: the validation split's are left out of the pool (were
    trained on: the student was validated on audio it had learnt from)."""
    import logging

    from birdsed.data.manifest import clean_id, read_dataset
    from birdsed.train.pseudo import load_pool

    classes = read_dataset(synth_data).classes
    teacher = tiny_model(tmp_path / "teacher", classes)
    fast = [*FAST, "train.epochs=1", "train.max_steps=2", "train.batch_size=8"]
    argv = [
        "train",
        "--data",
        str(synth_data),
        "--config",
        "small",
        "--out",
        str(tmp_path / "student"),
        "--quiet",
        "--teacher",
        str(teacher),
        "--unlabelled",
        str(synth_data / "test_audio"),
        *[x for kv in fast for x in ("--set", kv)],
    ]
    with caplog.at_level(logging.INFO, logger="birdsed.train.pseudo"):
        assert main(argv) == 0
    pl = read_soft_labels(tmp_path / "student" / "teacher_pl", classes)
    m = read_dataset(synth_data)
    assert pl.table["file"].nunique() == len(m) + len(list((synth_data / "test_audio").iterdir()))
    held = list(m.table["path"][:2])
    pool = load_pool([str(tmp_path / "student" / "teacher_pl")], classes, tmp_path / "ps", 0, held)
    assert len(pool) == len(pl.table) - int(pl.table["file"].isin(held).sum()) > 0
    assert not {r for r, _, _ in pool.rows} & {clean_id(p) for p in held}
    assert "validation recording(s) left out" in caplog.text
    assert (tmp_path / "student" / "model" / "model.json").is_file()


def test_teacher_labels_read_the_data_set_as_training_does(synth_data, tmp_path):
    """A labels.csv naming files outside its folder (as benchmarks' fold subsets do) needs allow_outside, as train."""
    from conftest import tiny_model

    from birdsed.data.manifest import read_dataset
    from birdsed.errors import ConfigError
    from birdsed.train.pseudo import teacher_labels

    m = read_dataset(synth_data)
    sub = tmp_path / "subset"
    sub.mkdir()
    pd.DataFrame(
        {"filename": m.table["path"][:3], "labels": [" ".join(x) for x in m.table["primary_labels"][:3]]}
    ).to_csv(sub / "labels.csv", index=False)
    teacher = tiny_model(tmp_path / "teacher", m.classes)
    with pytest.raises(ConfigError, match="no training recording"):
        teacher_labels(teacher, sub, tmp_path / "pl0", quiet=True, workers=0)
    pl = teacher_labels(teacher, sub, tmp_path / "pl", quiet=True, workers=0, allow_outside=True)
    assert read_soft_labels(pl, m.classes).table["file"].nunique() == 3
