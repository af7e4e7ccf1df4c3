"""Exported models as Detectors (detector.py): the ONNX file run by ONNX Runtime or compiled by OpenVINO for the CPU
(predict --backend onnx | openvino). No timm: predicting with an export never builds the PyTorch network."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from birdsed.errors import ModelError
from birdsed.model.kinds import ModelMeta, SedMeta
from birdsed.model.meta import read_model_meta
from birdsed.model.windows import SED_HOP_S, SED_WINDOW_S, Piece, piece_windows

ONNX_OUTPUTS = ("clipwise", "segmentwise", "norm_att", "framewise")

ONNX_NAME = "model.onnx"


class OnnxSED:
    """An exported SED model run by ONNX Runtime, as a Detector (detector.py): it takes the windows' waveforms."""

    window_s = SED_WINDOW_S
    hop_s = SED_HOP_S

    def __init__(self, model_dir: str | Path, threads: int | None = None, meta: ModelMeta | None = None):
        import onnxruntime as ort

        path = self._load(model_dir, meta)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def _load(self, model_dir: str | Path, meta: ModelMeta | None) -> Path:
        """The export's path; meta: the directory's model.json already read (else read here)."""
        path = Path(model_dir) / ONNX_NAME
        if not path.is_file():
            raise ModelError(f"{path} not found; write it with `birdsed export --model {model_dir} --onnx {path}`")
        meta = read_model_meta(model_dir) if meta is None else meta
        if not isinstance(meta, SedMeta):
            raise ModelError(f"{model_dir} is a {meta.kind} model; an ONNX export is of a single SED model")
        self.classes = meta.classes
        self.frontend_cfg = meta.frontend
        self.sample_rate_hz = self.frontend_cfg.sample_rate_hz
        self.short_policy = meta.short_policy
        return path

    def for_inference(self, device: torch.device) -> OnnxSED:
        return self  # ONNX Runtime's CPU provider

    def window_outputs(
        self, audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, short_policy: str | None
    ) -> dict[str, torch.Tensor]:
        policy = short_policy or self.short_policy
        return self(torch.cat([piece_windows(audio, q, window, hop, policy) for q in pieces]))

    def onnx_module(self) -> nn.Module:
        raise ModelError("this is an ONNX model already")

    def eval(self) -> OnnxSED:
        return self

    def __call__(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = self.sess.run(None, {"wave": wave.float().cpu().numpy()})
        return {k: torch.from_numpy(v) for k, v in zip(ONNX_OUTPUTS, outs)}


class OpenVinoSED(OnnxSED):
    """The exported ONNX model compiled by OpenVINO for the CPU (predict --backend openvino; pip install openvino):
    BirdCLEF 2023's 2nd place ran its CPU inference on it (about 40 % less time than ONNX Runtime, its paper)."""

    def __init__(self, model_dir: str | Path, threads: int | None = None, meta: ModelMeta | None = None):
        try:
            import openvino as ov
        except ImportError as e:
            raise ModelError("--backend openvino needs OpenVINO: pip install 'birdsed[openvino]'") from e
        path = self._load(model_dir, meta)
        # f32: on CPUs with AMX OpenVINO would run bf16 by default, and its scores would differ from torch's
        config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)

    def __call__(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        res = self.compiled(wave.float().cpu().numpy())
        return {k: torch.from_numpy(res[self.compiled.output(i)].copy()) for i, k in enumerate(ONNX_OUTPUTS)}
