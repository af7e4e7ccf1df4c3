"""A hostile user's model folders, prepared stores and ensembles (issue #40: 7, 11, 15, 19, 21): each refused with
one `error:` line naming the file, the key and the value, before anything is written; never a traceback."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import birdnet_meta, run_cli, tiny_model, write_audio

from birdsed.data.manifest import read_dataset
from birdsed.data.store import AudioStore, prepare
from birdsed.errors import ManifestError, ModelError, StoreError
from birdsed.model.ensemble import check_weights
from birdsed.model.meta import read_model_meta
from birdsed.model.modeldir import save_ensemble


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "m", ["a", "b"])


def tampered(model_dir, tmp_path, edit) -> object:
    m = tmp_path / "m"
    shutil.copytree(model_dir, m)
    meta = json.loads((m / "model.json").read_text())
    edit(meta)
    (m / "model.json").write_text(json.dumps(meta))
    return m


# --- 15: tampered model.json -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m["frontend"].update(n_fft=1e18), "frontend.n_fft = 1000000000000000000"),
        (lambda m: m["frontend"].update(sample_rate_hz=1e12), "frontend.sample_rate_hz = 1000000000000"),
        (lambda m: m["model"].update(freq_scale=1e-9), "model.freq_scale = 1e-09"),
        (lambda m: m["model"].update(time_scale=float("inf")), "model.time_scale"),
        (lambda m: m.update(classes=["a", "a"]), "listed twice"),
    ],
)
def test_absurd_numbers_in_model_json_are_refused_naming_key_and_value(model_dir, tmp_path, capsys, edit, message):
    m = tampered(model_dir, tmp_path, edit)
    audio = write_audio(tmp_path / "a.wav", seconds=6.0)
    rc, text = run_cli(capsys, "predict", "--model", m, audio, "--out", tmp_path / "out", "--workers", 0, "--quiet")
    assert rc == 2 and "error:" in text and "Traceback" not in text
    assert message in text.replace("\n", ""), text
    assert not (tmp_path / "out" / "scores.parquet").exists()


def test_a_model_json_of_100000_nested_brackets_is_a_model_error(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelError, match="nested too deeply"):
        read_model_meta(tmp_path / "m")
    deep = {"kind": "sed", "classes": ["a"], "x": [[[[[[[[[[1]]]]]]]]]]}
    (tmp_path / "m" / "model.json").write_text(json.dumps(deep))
    with pytest.raises(ModelError, match="nested deeper"):
        read_model_meta(tmp_path / "m")


@pytest.mark.parametrize(
    "meta,message",
    [
        (birdnet_meta(hop_s=float("inf")), "birdnet.hop_s = inf"),
        (birdnet_meta(hop_s=1e-6), "birdnet.hop_s = 1e-06"),
        ({**birdnet_meta(), "birdnet": [1, 2]}, "birdnet = [1, 2]: must be a JSON object"),
        (birdnet_meta(n_labels=True), "birdnet.n_labels = True"),
    ],
)
def test_a_tampered_birdnet_model_json_is_a_model_error(tmp_path, meta, message):
    (tmp_path / "model.json").write_text(json.dumps(meta))  # json writes inf as Infinity, which json reads back
    with pytest.raises(ModelError, match="model.json") as e:
        read_model_meta(tmp_path)
    assert message in str(e.value)


# --- 7: reserved, duplicate or empty class names ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["file", "start_s", "end_s", "output", ""])
def test_a_class_named_like_an_output_column_is_refused_by_data_set_and_model(tmp_path, name):
    root = tmp_path / "ds"
    write_audio(root / "audio" / "x.wav", seconds=1.0)
    (root / "labels.csv").write_text(f"filename,labels\nx.wav,a {name}\n")
    if name:  # labels.csv splits its labels on spaces: an empty one cannot be written there
        with pytest.raises(ManifestError, match=f"\\['{name}'\\] are reserved"):
            read_dataset(root)
    m = tmp_path / "m"
    m.mkdir()
    (m / "model.json").write_text(json.dumps({"kind": "sed", "classes": ["a", name], "frontend": {}, "model": {}}))
    with pytest.raises(ModelError, match="reserved" if name else "empty class name"):
        read_model_meta(m)


# --- 11: a damaged prepared store ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    for i in range(2):
        write_audio(root / "audio" / f"x{i}.wav", seconds=1.0, freq_hz=500.0 + 300 * i)
    (root / "labels.csv").write_text("filename,labels\nx0.wav,a\nx1.wav,b\n")
    out = root.parent / (root.name + "-store")
    prepare(read_dataset(root), out, workers=1, quiet=True)
    return out


def _damage_json(text):
    return lambda s: (s / "store.json").write_text(text)


def _edit_json(**over):
    def edit(s):
        meta = json.loads((s / "store.json").read_text())
        meta.update(over)
        for k in [k for k, v in over.items() if v is None]:
            del meta[k]
        (s / "store.json").write_text(json.dumps(meta))

    return edit


@pytest.mark.parametrize(
    "damage,message",
    [
        (_damage_json("{not json"), "store.json: not valid JSON"),
        (_damage_json("[1, 2]"), "store.json: not a JSON object"),
        (_edit_json(sample_rate_hz=0), "sample_rate_hz 0"),
        (_edit_json(sample_rate_hz="fast"), "sample_rate_hz 'fast'"),
        (_edit_json(source=None), "'source' missing"),
        (lambda s: (s / "index.parquet").write_bytes(b"junk"), "index.parquet: not a readable table"),
        (lambda s: pd.DataFrame({"x": [1]}).to_parquet(s / "index.parquet"), "index.parquet: missing column"),
        (lambda s: (s / "manifest.parquet").write_bytes(b"junk"), "manifest.parquet: not a readable table"),
    ],
)
def test_a_damaged_store_is_refused_before_train_creates_anything(store, tmp_path, capsys, damage, message):
    s = tmp_path / "store"
    shutil.copytree(store, s)
    damage(s)
    with pytest.raises(StoreError):
        AudioStore(s).manifest()
    run = tmp_path / "run"
    rc, text = run_cli(capsys, "train", "--data", s, "--config", "small", "--out", run, "--epochs", 1)
    assert rc == 2 and "error:" in text and "Traceback" not in text
    assert message in text.replace("\n", ""), text
    assert not run.exists()


# --- 19: ensemble weights --------------------------------------------------------------------------------------------


def test_huge_ensemble_weights_normalise_and_bad_ones_are_refused():
    assert check_weights([1e308, 1e308], 2) == [0.5, 0.5]
    for bad in ([0.0, 1.0], [-1.0, 2.0], [float("nan"), 1.0], [float("inf"), 1.0]):
        with pytest.raises(ModelError, match="finite and > 0"):
            check_weights(bad, 2)


def test_ensemble_weights_of_1e308_are_refused_at_the_cli_and_normalise_in_the_library(model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # argparse refuses the value
        run_cli(capsys, "ensemble", model_dir, model_dir, "--out", tmp_path / "e", "--weights", "1e308", "1e308")
    text = capsys.readouterr().err
    assert e.value.code == 2 and "--weights" in text and not (tmp_path / "e").exists(), text
    ens = save_ensemble([model_dir, model_dir], tmp_path / "ens", weights=[1e308, 1e308])  # the sum overflows
    assert json.loads((ens / "model.json").read_text())["weights"] == [0.5, 0.5]
    meta = json.loads((ens / "model.json").read_text())
    meta["weights"] = [0.0, 0.0]
    (ens / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="'weights'"):
        read_model_meta(ens)


# --- 21: links leaving the model folder ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.json", "weights.safetensors"])
def test_a_file_of_a_model_folder_linking_outside_it_is_refused(model_dir, tmp_path, capsys, name):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    m = tmp_path / "m"
    shutil.copytree(model_dir, m)
    shutil.move(m / name, outside / name)
    (m / name).symlink_to(outside / name)
    audio = write_audio(tmp_path / "a.wav", seconds=6.0)
    rc, text = run_cli(capsys, "predict", "--model", m, audio, "--out", tmp_path / "out", "--workers", 0, "--quiet")
    assert rc == 2 and "outside the model folder" in text.replace("\n", "") and name in text, text
    # a link inside the folder is the folder's own file
    shutil.move(outside / name, m / f"real-{name}")
    (m / name).unlink()
    (m / name).symlink_to(m / f"real-{name}")
    rc, text = run_cli(capsys, "predict", "--model", m, audio, "--out", tmp_path / "out2", "--workers", 0, "--quiet")
    assert rc == 0, text
