import json

import pytest
import torch

from birdsed.config import FrontendConfig, ModelConfig
from birdsed.errors import ModelError
from birdsed.infer.decide import Thresholds
from birdsed.model.meta import update_thresholds
from birdsed.model.modeldir import load_model_dir, save_model_dir
from birdsed.model.sed import SEDModel


def _model():
    torch.manual_seed(0)
    return SEDModel(FrontendConfig(n_mels=32), ModelConfig(backbone="mobilenetv3_small_100"), ["x", "y"]).eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    m = _model()
    save_model_dir(m, tmp_path / "model", Thresholds(per_class={"att": {"x": 0.3}}))
    back, thr, meta = load_model_dir(tmp_path / "model")
    wave = torch.randn(2, 32000)
    with torch.no_grad():
        a, b = m(wave), back(wave)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert thr.vector("att", ["x", "y"]).tolist() == pytest.approx([0.3, 0.15])
    assert meta["classes"] == ["x", "y"] and meta["birdsed_version"]
    update_thresholds(tmp_path / "model", Thresholds({"segmentwise": 0.5, "att": 0.1, "clipwise": 0.2}), "att")
    _, thr2, meta2 = load_model_dir(tmp_path / "model")
    assert thr2.global_["segmentwise"] == 0.5 and meta2["default_output"] == "att"


def test_bad_model_dirs(tmp_path):
    with pytest.raises(ModelError, match="not a model directory"):
        load_model_dir(tmp_path)
    save_model_dir(_model(), tmp_path / "m")
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="not a readable safetensors"):
        load_model_dir(tmp_path / "m")
    save_model_dir(_model(), tmp_path / "m2")
    meta = json.loads((tmp_path / "m2" / "model.json").read_text())
    meta["classes"] = ["x", "y", "z"]
    (tmp_path / "m2" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not fit"):
        load_model_dir(tmp_path / "m2")
    (tmp_path / "m2" / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model_dir(tmp_path / "m2")


def test_pretrained_model_round_trip(tmp_path):
    m = SEDModel(
        FrontendConfig(n_mels=32), ModelConfig(backbone="tf_efficientnet_lite0", pretrained=True), ["x"]
    ).eval()
    save_model_dir(m, tmp_path / "m")
    back, _, meta = load_model_dir(tmp_path / "m")
    assert back.in_chans == 3 and meta["model"]["pretrained"] is False
    wave = torch.randn(1, 32000)
    with torch.no_grad():
        torch.testing.assert_close(m(wave)["clipwise"], back(wave)["clipwise"])


def test_model_json_has_one_reader_and_it_is_typed(model_dir):
    """Every reader goes through read_model_meta (a kind's typed metadata; `.raw` is what is written back): the old
    dict helpers are gone."""
    import birdsed.model.meta as meta
    import birdsed.model.modeldir as modeldir

    old = {"read_meta", "read_both", "default_output_of", "thresholds_of", "kind_of"}
    assert not old & (set(vars(meta)) | set(vars(modeldir)))
    typed = meta.read_model_meta(model_dir)
    assert typed.kind == "sed" and typed.classes == ["x", "y"] and typed.default_output == "segmentwise"
    assert typed.raw == json.loads((model_dir / "model.json").read_text())
