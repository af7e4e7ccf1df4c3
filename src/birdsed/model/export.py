"""Exports: ONNX (the model with its front end: an SED network's log-mel, BirdNET's own spectrogram for a head on
BirdNET; what each kind exports is its Detector's `onnx_export()`), run by ONNX Runtime or OpenVINO (the Kaggle
data-set folder: kaggle/api.py)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from birdsed.errors import ModelError
from birdsed.fsutil import atomic_path
from birdsed.model.meta import weights_sha256
from birdsed.model.modeldir import load_model_dir
from birdsed.model.onnx_detector import WEIGHTS_KEY

log = logging.getLogger(__name__)


class OutputsAsTuple(nn.Module):
    """The output dict as a tuple, in `names` order (ONNX graphs return positional outputs)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, wave: torch.Tensor):
        out = self.model(wave)
        return tuple(out[k] for k in self.names)


def export_onnx(
    model_dir: str | Path,
    out: str | Path,
    check_audio: str | Path | None = None,
    atol: float = 1e-3,
) -> dict[str, float]:
    """Write the model as ONNX (input "wave": waveforms of one window at the model's rate, as many a call as its
    export takes; outputs by name) and check it against PyTorch on random input and, when given, on a real
    recording. Returns the max abs differences. Nothing is written when they exceed `atol`. The file's metadata
    holds the sha256 of the weights it was made from (WEIGHTS_KEY), which predict checks."""
    spec = load_model_dir(model_dir)[0].onnx_export()  # a ModelError for kinds with no ONNX graph
    n, names = spec.n_samples, spec.outputs
    example = torch.randn(spec.batch or 2, n) * 0.1
    out = Path(out)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with spec.tracing(), torch.no_grad():
            # the wrapper must be in eval mode too: the exporter restores the wrapper's mode on every submodule
            torch.onnx.export(
                OutputsAsTuple(spec.module, names).eval(),
                (example,),
                str(tmp),
                input_names=["wave"],
                output_names=list(names),
                dynamic_axes=None if spec.batch else {"wave": {0: "batch"}, **{k: {0: "batch"} for k in names}},
                opset_version=17,
                dynamo=False,
            )
        write_metadata(tmp, {**spec.metadata, WEIGHTS_KEY: weights_sha256(model_dir)})
        inputs = {"random": np.random.default_rng(0).standard_normal((spec.batch or 3, n)).astype(np.float32) * 0.1}
        if check_audio:
            from birdsed.audio.decode import load_audio

            x = load_audio(check_audio, spec.sample_rate_hz)[:n]
            inputs["audio"] = np.repeat(np.pad(x, (0, n - len(x)))[None], spec.batch or 1, axis=0)
        diffs = compare_onnx(spec.module, names, str(tmp), inputs)
        if max(diffs.values()) > atol:
            raise ModelError(f"ONNX export differs from PyTorch by {max(diffs.values()):.2e} (> {atol}); not written")
    return diffs


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Add key/value pairs to an ONNX file's metadata (what ONNX Runtime shows as custom_metadata_map)."""
    import onnx

    model = onnx.load(str(path))
    for k, v in metadata.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))


def compare_onnx(
    module: nn.Module, names: tuple[str, ...], onnx_path: str, inputs: dict[str, np.ndarray]
) -> dict[str, float]:
    """The max abs difference of each output between ONNX Runtime and the module (as run, not as traced)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    diffs = {}
    module.eval()
    with torch.no_grad():
        for name, x in inputs.items():
            ref = module(torch.from_numpy(x))
            got = dict(zip(names, sess.run(None, {"wave": x})))
            for k in names:
                diffs[f"{name}/{k}"] = float(np.abs(got[k] - ref[k].float().numpy()).max())
    return diffs
