"""Ensembles: averaged outputs, the ensemble directory, and predict / tune / export through it."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_audio

from birdsed.cli import main
from birdsed.config import FrontendConfig, ModelConfig
from birdsed.errors import ModelError
from birdsed.evaluate.tune import tune_model
from birdsed.infer.decide import Thresholds
from birdsed.infer.predict import run_predict
from birdsed.model.ensemble import Ensemble, average_outputs
from birdsed.model.modeldir import load_model_dir, save_ensemble, save_model_dir
from birdsed.model.sed import SEDModel

CLASSES = ["x", "y", "z"]


def _model(seed: int, classes=CLASSES, time_scale: float = 1.0, sample_rate_hz: int = 32000) -> SEDModel:
    torch.manual_seed(seed)
    return SEDModel(
        FrontendConfig(n_mels=32, sample_rate_hz=sample_rate_hz, fmax_hz=sample_rate_hz * 0.45),
        ModelConfig(backbone="mobilenetv3_small_100", pretrained=False, time_scale=time_scale),
        classes,
    ).eval()


def _dirs(tmp_path, *models, thresholds=None):
    return [save_model_dir(m, tmp_path / f"m{i}", thresholds[i] if thresholds else None) for i, m in enumerate(models)]


def test_average_outputs_aligns_segments_and_keeps_attention_normalised():
    a = {
        "clipwise": torch.full((2, 3), 0.2),
        "segmentwise": torch.rand(2, 3, 4),
        "norm_att": torch.softmax(torch.rand(2, 3, 4), -1),
    }
    b = {
        "clipwise": torch.full((2, 3), 0.6),
        "segmentwise": torch.rand(2, 3, 8),
        "norm_att": torch.softmax(torch.rand(2, 3, 8), -1),
    }
    out = average_outputs([a, b])
    assert out["segmentwise"].shape == (2, 3, 8) and out["norm_att"].shape == (2, 3, 8)
    torch.testing.assert_close(out["clipwise"], torch.full((2, 3), 0.4))
    torch.testing.assert_close(out["norm_att"].sum(-1), torch.ones(2, 3))
    assert average_outputs([a]) is a


def test_ensemble_forward_is_the_mean_of_its_members():
    m0, m1 = _model(0), _model(1, time_scale=2.0)  # another image scale: another segment count
    wave = torch.randn(2, 32000 * 5)
    with torch.inference_mode():
        o0, o1, ens = m0(wave), m1(wave), Ensemble([m0, m1])(wave)
    assert o0["segmentwise"].shape[-1] != o1["segmentwise"].shape[-1]
    torch.testing.assert_close(ens["clipwise"], (o0["clipwise"] + o1["clipwise"]) / 2)


def test_members_must_agree_on_classes_and_rate():
    with pytest.raises(ModelError, match="other classes"):
        Ensemble([_model(0), _model(1, classes=["x", "z", "y"])])
    assert Ensemble([_model(0), _model(1, sample_rate_hz=22050)]).sample_rate_hz == 32000  # the highest member rate


def test_pieces_resampled_for_a_member_at_another_rate_keep_their_windows():
    from birdsed.model.ensemble import at_rate
    from birdsed.model.windows import Piece

    t = np.arange(32000 * 7) / 32000
    audio = torch.from_numpy(np.sin(2 * np.pi * 440 * t).astype(np.float32))
    pieces = [Piece(0, 0, 2, 0, 32000 * 7), Piece(1, 0, 1, 0, 32000 * 3, short_len=32000 * 3)]
    a, new, w, h = at_rate(audio, pieces, 32000 * 5, 32000 * 2, 32000, 16000)
    assert (w, h) == (80000, 32000) and [q.n_samples for q in new] == [112000, 80000]
    assert new[1].offset == 112000 and new[1].short_len == 48000 and len(a) == 192000
    ref = np.sin(2 * np.pi * 440 * np.arange(16000 * 7) / 16000)
    assert np.abs(a[1000:100000].numpy() - ref[1000:100000]).max() < 1e-2


def test_an_ensemble_across_sample_rates_is_the_mean_of_its_members_own_predictions(tmp_path):
    audio = tmp_path / "in" / "a.wav"
    write_audio(audio, seconds=12.0, rate=44100)
    dirs = _dirs(tmp_path, _model(0), _model(1, sample_rate_hz=22050))
    ens = save_ensemble(dirs, tmp_path / "ens")

    def scores(model_dir, name):
        run_predict(model_dir, [str(audio)], tmp_path / name, quiet=True, workers=0)
        return (
            pd.read_parquet(tmp_path / name / "scores.parquet").sort_values(["output", "start_s"])[CLASSES].to_numpy()
        )

    a, b, both = scores(dirs[0], "a"), scores(dirs[1], "b"), scores(ens, "ens")
    assert both.shape == a.shape
    assert np.abs(both - (a + b) / 2).max() < 0.2 * np.abs(a - b).max()


def test_each_member_fits_a_short_recording_as_it_trained(tmp_path):
    """A member trained on looped short recordings sees a short clip looped, one trained on padded ones padded:
    the ensemble's row is the mean of what each member alone predicts."""
    looped = save_model_dir(_model(0), tmp_path / "loop", extra={"short_policy": "loop"})
    padded = save_model_dir(_model(1), tmp_path / "pad")  # saved without the key, as before birdsed wrote it: pad
    ens = save_ensemble([looped, padded], tmp_path / "ens")
    clip = str(write_audio(tmp_path / "short.wav", seconds=1.2, freq_hz=2500.0))
    rows = {}
    for name, d in (("loop", looped), ("pad", padded), ("ens", ens)):
        run_predict(d, [clip], tmp_path / f"pred_{name}", quiet=True, workers=0)
        s = pd.read_parquet(tmp_path / f"pred_{name}" / "scores.parquet")
        rows[name] = s[s["output"] == "clipwise"][CLASSES].to_numpy()
    np.testing.assert_allclose(rows["ens"], (rows["loop"] + rows["pad"]) / 2, atol=1e-5)
    run_predict(looped, [clip], tmp_path / "loop_as_pad", quiet=True, workers=0, short_policy="pad")
    s = pd.read_parquet(tmp_path / "loop_as_pad" / "scores.parquet")
    assert not np.allclose(s[s["output"] == "clipwise"][CLASSES].to_numpy(), rows["loop"], atol=1e-4)


def test_ensemble_dir_round_trip_and_thresholds(tmp_path):
    thr = [
        Thresholds({"segmentwise": 0.2, "att": 0.2, "clipwise": 0.2}, {"att": {"x": 0.6}}),
        Thresholds({"segmentwise": 0.4, "att": 0.4, "clipwise": 0.4}),
    ]
    dirs = _dirs(tmp_path, _model(0), _model(1), thresholds=thr)
    ens_dir = save_ensemble(dirs, tmp_path / "ens")
    assert sorted(p.name for p in ens_dir.iterdir()) == ["members", "model.json"]
    model, t, meta = load_model_dir(ens_dir)
    assert isinstance(model, Ensemble) and len(model.members) == 2 and model.classes == CLASSES
    assert t.vector("att", CLASSES).tolist() == pytest.approx([0.5, 0.3, 0.3])  # (0.6 + 0.4) / 2, then (0.2 + 0.4) / 2
    assert meta["model"]["members"] == 2
    # the ensemble folder is whole on its own: the sources may go
    for d in dirs:
        for f in d.iterdir():
            f.unlink()
    wave = torch.randn(1, 32000 * 5)
    with torch.inference_mode():
        assert load_model_dir(ens_dir)[0](wave)["clipwise"].shape == (1, 3)


def test_save_ensemble_refuses_bad_input_and_leaves_nothing(tmp_path):
    dirs = _dirs(tmp_path, _model(0), _model(1))
    with pytest.raises(ModelError, match="at least two"):
        save_ensemble(dirs[:1], tmp_path / "e1")
    (tmp_path / "m1" / "weights.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(ModelError, match="not a readable safetensors"):
        save_ensemble(dirs, tmp_path / "e2")
    assert not (tmp_path / "e2").exists() and not list(tmp_path.glob(".e2*"))
    save_model_dir(_model(1, classes=["x", "y"]), dirs[1])
    with pytest.raises(ModelError, match=r"member 1 has other classes .* \(member 0: .*m0, member 1: .*m1\)"):
        save_ensemble(dirs, tmp_path / "e2")
    save_model_dir(_model(1), dirs[1])
    ens = save_ensemble(dirs, tmp_path / "e3")
    with pytest.raises(ModelError, match="exists"):
        save_ensemble(dirs, ens)
    with pytest.raises(ModelError, match="is an ensemble already"):
        save_ensemble([ens, dirs[0]], tmp_path / "e4")
    meta = json.loads((ens / "model.json").read_text())
    (ens / "model.json").write_text(json.dumps({**meta, "ensemble": ["../m0"]}))
    with pytest.raises(ModelError, match="outside the ensemble folder"):
        load_model_dir(ens)


def test_an_ensemble_keeps_its_members_species_names(tmp_path):
    from birdsed.model.names import class_names

    dirs = _dirs(tmp_path, _model(0), _model(1))
    for d, names in zip(dirs, (["Buteo buteo", "Common Buzzard"], ["Pica pica", "Eurasian Magpie"])):
        meta = json.loads((d / "model.json").read_text())
        (d / "model.json").write_text(json.dumps({**meta, "aliases": {"x": names, "y": names}}))
    meta = json.loads((save_ensemble(dirs, tmp_path / "ens") / "model.json").read_text())
    assert meta["aliases"] == {"x": ["Buteo buteo", "Common Buzzard"], "y": ["Buteo buteo", "Common Buzzard"]}
    named = class_names(CLASSES, meta)
    assert named.of("x").scientific == "Buteo buteo" and named.of("z").scientific == ""


def test_predict_through_an_ensemble(tmp_path):
    audio = tmp_path / "in" / "a.wav"
    write_audio(audio, seconds=12.0)
    m0 = _model(0)
    dirs = _dirs(tmp_path, m0, m0, _model(1, time_scale=2.0))
    assert main(["ensemble", str(dirs[0]), str(dirs[1]), "--out", str(tmp_path / "same")]) == 0
    assert main(["ensemble", *map(str, dirs), "--out", str(tmp_path / "mixed")]) == 0

    def scores(model_dir, name):
        run_predict(model_dir, [str(audio)], tmp_path / name, quiet=True, workers=0)
        return (
            pd.read_parquet(tmp_path / name / "scores.parquet").sort_values(["output", "start_s"])[CLASSES].to_numpy()
        )

    one = scores(dirs[0], "one")
    np.testing.assert_allclose(scores(tmp_path / "same", "same"), one, atol=1e-5)  # an ensemble of a model with itself
    mixed = scores(tmp_path / "mixed", "mixed")
    assert mixed.shape == one.shape and not np.allclose(mixed, one, atol=1e-4)
    with pytest.raises(Exception, match="another model"):
        run_predict(tmp_path / "same", [str(audio)], tmp_path / "mixed", quiet=True, workers=0)
    with pytest.raises(Exception, match="ensemble model; the onnx backend runs the exports of sed"):
        run_predict(tmp_path / "same", [str(audio)], tmp_path / "onnx", quiet=True, workers=0, backend="onnx")


def test_tune_and_export_an_ensemble(tmp_path):
    data = tmp_path / "data"
    for i, lab in enumerate(["x", "y", "x z", "y"]):
        write_audio(data / f"c{i}.wav", seconds=3.0)
    pd.DataFrame({"filename": [f"c{i}.wav" for i in range(4)], "labels": ["x", "y", "x z", "y"]}).to_csv(
        data / "labels.csv", index=False
    )
    ens = save_ensemble(_dirs(tmp_path, _model(0), _model(1)), tmp_path / "ens")
    before = json.loads((ens / "model.json").read_text())["thresholds"]
    tune_model(ens, data=data)
    after = json.loads((ens / "model.json").read_text())
    assert after["thresholds"] != before and after["ensemble"] == ["members/0", "members/1"]
    with pytest.raises(ModelError, match="an ensemble has no single ONNX graph"):
        from birdsed.model.export import export_onnx

        export_onnx(ens, tmp_path / "e.onnx")
    assert main(["export", "--model", str(ens), "--kaggle-dataset", str(tmp_path / "k"), "--dataset", "me/ens"]) == 0
    model, _, _ = load_model_dir(tmp_path / "k")
    assert isinstance(model, Ensemble) and len(model.members) == 2
