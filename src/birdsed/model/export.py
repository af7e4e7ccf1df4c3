"""Exports: ONNX (the model with its log-mel front end), run by ONNX Runtime or OpenVINO (the Kaggle data-set
folder: kaggle/api.py)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from birdsed.errors import ModelError
from birdsed.fsutil import atomic_path
from birdsed.model.modeldir import load_model_dir
from birdsed.model.onnx_detector import ONNX_OUTPUTS
from birdsed.model.sed import SEDModel

log = logging.getLogger(__name__)


class OutputsAsTuple(nn.Module):
    """The output dict as a tuple, in ONNX_OUTPUTS order (ONNX graphs return positional outputs)."""

    def __init__(self, model: SEDModel):
        super().__init__()
        self.model = model

    def forward(self, wave: torch.Tensor):
        out = self.model(wave)
        return tuple(out[k] for k in ONNX_OUTPUTS)


def export_onnx(
    model_dir: str | Path,
    out: str | Path,
    window_s: float = 5.0,
    check_audio: str | Path | None = None,
    atol: float = 1e-3,
) -> dict[str, float]:
    """Write the model as ONNX (input "wave": a batch of 32 kHz waveforms, outputs by name) and check it
    against PyTorch on random input and, when given, on a real recording. Returns the max abs differences."""
    model = load_model_dir(model_dir)[0].onnx_module()  # a ModelError for kinds with no ONNX graph
    model.frontend.conv_stft = True  # torch.stft has no ONNX export in the TorchScript exporter
    n = int(round(window_s * model.frontend_cfg.sample_rate_hz))
    example = torch.randn(2, n) * 0.1
    out = Path(out)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the wrapper must be in eval mode too: the exporter restores the wrapper's mode on every submodule afterwards
        torch.onnx.export(
            OutputsAsTuple(model).eval(),
            (example,),
            str(tmp),
            input_names=["wave"],
            output_names=list(ONNX_OUTPUTS),
            dynamic_axes={"wave": {0: "batch"}, **{k: {0: "batch"} for k in ONNX_OUTPUTS}},
            opset_version=17,
            dynamo=False,
        )
        inputs = {"random": np.random.default_rng(0).standard_normal((3, n)).astype(np.float32) * 0.1}
        if check_audio:
            from birdsed.audio.decode import load_audio

            x = load_audio(check_audio)[:n]
            inputs["audio"] = np.pad(x, (0, n - len(x)))[None]
        diffs = compare_onnx(model, str(tmp), inputs)
        if max(diffs.values()) > atol:
            raise ModelError(f"ONNX export differs from PyTorch by {max(diffs.values()):.2e} (> {atol}); not written")
    model.frontend.conv_stft = False
    return diffs


def compare_onnx(model: SEDModel, onnx_path: str, inputs: dict[str, np.ndarray]) -> dict[str, float]:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    diffs = {}
    model.frontend.conv_stft = False  # compare with the ordinary torch.stft path
    model.eval()
    with torch.no_grad():
        for name, x in inputs.items():
            ref = model(torch.from_numpy(x))
            got = dict(zip(ONNX_OUTPUTS, sess.run(None, {"wave": x})))
            for k in ONNX_OUTPUTS:
                diffs[f"{name}/{k}"] = float(np.abs(got[k] - ref[k].numpy()).max())
    return diffs
