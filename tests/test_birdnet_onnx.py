"""ONNX exports of the heads on BirdNET (frozen and fine-tuned): the port's RFFT as ONNX's DFT of the real part, one
5 s window a call, the licence in the file, and `predict --backend onnx` scoring as torch does. Tests that run
BirdNET skip without the optional extra (birdsed[birdnet])."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import needs_birdnet

from birdsed.config import apply_overrides, load_config


def test_the_real_part_of_an_fft_exports_as_onnx_dft(tmp_path):
    import onnxruntime as ort

    from birdsed.model.birdnet_torch import RealRFFT

    class Net(torch.nn.Module):
        def forward(self, x):
            return RealRFFT.apply(x, 64)

    x = torch.randn(2, 5, 1, 64)
    torch.onnx.export(Net(), (x,), str(tmp_path / "f.onnx"), input_names=["x"], opset_version=17, dynamo=False)
    got = ort.InferenceSession(str(tmp_path / "f.onnx")).run(None, {"x": x.numpy()})[0]
    want = torch.fft.rfft2(x.double(), s=(1, 64)).real.numpy()
    assert got.shape == (2, 5, 1, 33) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, atol=1e-9)


def scores(model_dir, audio, out, backend):
    from birdsed.infer.predict import run_predict

    run_predict(model_dir, [str(audio)], out, quiet=True, workers=0, backend=backend)
    s = pd.read_parquet(out / "scores.parquet").sort_values(["output", "start_s"])
    return s, s.drop(columns=["file", "start_s", "end_s", "output"], errors="ignore").select_dtypes("number")


@needs_birdnet
@pytest.mark.parametrize("fine_tuned", [False, True], ids=["frozen", "fine-tuned"])
def test_a_head_on_birdnet_exports_to_onnx_and_predicts_as_torch_does(synth_data, tmp_path, fine_tuned):
    import onnxruntime as ort

    from birdsed.model.export import export_onnx
    from birdsed.train.run import train

    over = ["train.epochs=2", "train.batch_size=4", f"data.embedding_cache={tmp_path / 'cache'}"]
    if fine_tuned:  # BirdNET's last layers trained on a cached trunk
        over += ["model.freeze_backbone=false", "train.backbone_cache=true", "train.backbone_train_from=0.9"]
    model_dir = train(synth_data, apply_overrides(load_config("birdnet"), over), tmp_path / "run", quiet=True)
    audio = sorted((synth_data / "test_audio").iterdir())[0]
    diffs = export_onnx(model_dir, model_dir / "model.onnx", check_audio=audio)
    assert max(diffs.values()) < 1e-3 and "audio/clipwise" in diffs
    sess = ort.InferenceSession(str(model_dir / "model.onnx"))
    assert [i.shape for i in sess.get_inputs()] == [[1, 240_000]]  # one 5 s window at 48 kHz a call
    assert "CC BY-NC-SA 4.0" in sess.get_modelmeta().custom_metadata_map["license"]
    rows_t, torch_s = scores(model_dir, audio, tmp_path / "pred_torch", "torch")
    rows_o, onnx_s = scores(model_dir, audio, tmp_path / "pred_onnx", "onnx")
    assert len(rows_t) > 3 and list(rows_o["start_s"]) == list(rows_t["start_s"])  # several windows, one a call
    np.testing.assert_allclose(onnx_s.to_numpy(), torch_s.to_numpy(), atol=1e-4)


@needs_birdnet
def test_an_fft_whose_imaginary_part_is_read_would_not_be_exported(port):
    g = port.net.graph
    ffts = [op for op in g.ops if op.kind == "RFFT2D"]
    assert len(ffts) == 2 and all(port.net.real_part_only(op) for op in ffts)  # BirdNET keeps the real part alone
    squeeze = next(op for op in g.ops if ffts[0].outputs[0] in op.inputs)
    cast = next(op for op in g.ops if squeeze.outputs[0] in op.inputs)
    assert (squeeze.kind, cast.kind) == ("SQUEEZE", "CAST")
    was, g.dtypes[cast.outputs[0]] = g.dtypes[cast.outputs[0]], "complex64"  # as if the graph went on complex
    try:
        assert not port.net.real_part_only(ffts[0])
    finally:
        g.dtypes[cast.outputs[0]] = was


@needs_birdnet
def test_a_linear_head_exports_and_its_export_predicts_at_its_own_hop(synth_data, tmp_path):
    from birdsed.errors import ModelError
    from birdsed.model.export import export_onnx
    from birdsed.model.linearhead import LinearHead, save_linear_dir
    from birdsed.model.onnx_detector import OnnxSED, OpenVinoSED

    head = LinearHead(2)
    with torch.no_grad():
        head.weight.normal_(std=0.05)
    model_dir = save_linear_dir(["a", "b"], head, tmp_path / "m", hop_s=1.5)
    export_onnx(model_dir, model_dir / "model.onnx")
    audio = sorted((synth_data / "test_audio").iterdir())[0]
    rows_t, torch_s = scores(model_dir, audio, tmp_path / "pred_torch", "torch")
    rows_o, onnx_s = scores(model_dir, audio, tmp_path / "pred_onnx", "onnx")
    assert list(rows_o["start_s"]) == list(rows_t["start_s"])  # 3 s windows every 1.5 s, as the model says
    np.testing.assert_allclose(onnx_s.to_numpy(), torch_s.to_numpy(), atol=1e-4)
    with pytest.raises(ModelError, match="takes windows of 3 s, not 5 s"):
        OnnxSED(model_dir)(torch.zeros(1, 240_000))
    with pytest.raises(ModelError, match="runs the exports of single SED models"):
        OpenVinoSED(model_dir)
