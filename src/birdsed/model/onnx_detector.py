"""Exported models as Detectors (detector.py): the ONNX file run by ONNX Runtime or compiled by OpenVINO for the CPU
(predict --backend onnx | openvino). No timm: predicting with an export never builds the PyTorch network.

What a kind exports is declared by its Detector's `onnx_export()` (`OnnxExport`): an SED network takes any number
of 5 s windows at 32 kHz a call; a head on BirdNET (frozen, fine-tuned or linear, through the torch port) exactly one
window of its own length at 48 kHz, since the port's graph computes its shapes from its input and the trace fixes
them. The reader takes the batch, the window and the output names from the file itself."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from birdsed.errors import ModelError
from birdsed.model.kinds import HeadMeta, LinearMeta, ModelMeta, SedMeta
from birdsed.model.meta import read_model_meta
from birdsed.model.windows import SED_HOP_S, SED_WINDOW_S, Piece, piece_windows

log = logging.getLogger(__name__)

ONNX_OUTPUTS = ("clipwise", "segmentwise", "norm_att", "framewise")

ONNX_NAME = "model.onnx"

WEIGHTS_KEY = "birdsed_weights_sha256"  # in the export's metadata: the sha256 of the weights file it was made from


def check_export_is_current(stamped: str | None, path: Path, model_dir: str | Path) -> None:
    """Refuse an export made from other weights than the directory's (the model trained again into the same folder
    since: its scores would be the old model's), naming it; `stamped`: the file's WEIGHTS_KEY. An export without the
    stamp (birdsed before it) is run with a warning."""
    from birdsed.model.meta import weights_sha256

    if stamped is None:
        log.warning(
            "%s does not say which weights it was exported from: if the model was trained again since, export it again",
            path,
        )
    elif stamped != weights_sha256(model_dir):
        raise ModelError(
            f"{path} was exported from other weights than {Path(model_dir) / 'weights.safetensors'} (the model was "
            f"trained again since?): export it again with `birdsed export --model {model_dir} --onnx {path}`"
        )


@dataclass
class OnnxExport:
    """What `export --onnx` traces: `module` maps "wave" (batch, n_samples) at sample_rate_hz to an output dict, of
    which `outputs` are written, in that order; batch None: any number of windows a call (a dynamic axis), else
    exactly `batch`; `tracing()` switches the module to its exportable operators while it is traced; `metadata`
    goes into the file (e.g. the licence its weights carry)."""

    module: nn.Module
    sample_rate_hz: int
    n_samples: int
    outputs: tuple[str, ...]
    batch: int | None = None
    tracing: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    metadata: dict[str, str] = field(default_factory=dict)


class OnnxSED:
    """An exported model (an SED network, or a head on BirdNET) run by ONNX Runtime, as a Detector (detector.py): it
    takes the windows' waveforms."""

    window_s = SED_WINDOW_S
    hop_s = SED_HOP_S

    def __init__(self, model_dir: str | Path, threads: int | None = None, meta: ModelMeta | None = None):
        import onnxruntime as ort

        path = self._load(model_dir, meta)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        check_export_is_current(self.sess.get_modelmeta().custom_metadata_map.get(WEIGHTS_KEY), path, model_dir)
        wave = self.sess.get_inputs()[0]
        self.names = [o.name for o in self.sess.get_outputs()]
        # (batch, samples) as exported: ints where the trace fixed them (a head on BirdNET: 1 window a call)
        self.batch, self.n_samples = (d if isinstance(d, int) else None for d in wave.shape)

    def _load(self, model_dir: str | Path, meta: ModelMeta | None, heads: bool = True) -> Path:
        """The export's path; meta: the directory's model.json already read (else read here); heads: the exports of
        heads on BirdNET are run too."""
        path = Path(model_dir) / ONNX_NAME
        if not path.is_file():
            raise ModelError(f"{path} not found; write it with `birdsed export --model {model_dir} --onnx {path}`")
        meta = read_model_meta(model_dir) if meta is None else meta
        if isinstance(meta, SedMeta):
            self.sample_rate_hz = meta.frontend.sample_rate_hz
        elif isinstance(meta, HeadMeta) and heads:  # a head on BirdNET (frozen, fine-tuned, linear): 48 kHz
            from birdsed.model.birdnet import SAMPLE_RATE_HZ

            self.sample_rate_hz, self.window_s = SAMPLE_RATE_HZ, meta.embedding.window_s
            self.hop_s = meta.hop_s if isinstance(meta, LinearMeta) else SED_HOP_S  # as the torch model's
        else:
            raise ModelError(
                f"{model_dir} is a {meta.kind} model; this backend runs the exports of "
                + ("single SED models or heads on BirdNET" if heads else "single SED models")
            )
        self.classes = meta.classes
        self.short_policy = meta.short_policy
        return path

    runtime = "ONNX Runtime"

    def for_inference(self, device: torch.device) -> OnnxSED:
        return self  # ONNX Runtime's CPU provider

    def float32_runtime(self, device: torch.device) -> str | None:
        """The export's own runtime, on the CPU, in float32 (the export's graph is float32)."""
        return self.runtime

    def window_outputs(
        self, audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, short_policy: str | None
    ) -> dict[str, torch.Tensor]:
        policy = short_policy or self.short_policy
        return self(torch.cat([piece_windows(audio, q, window, hop, policy) for q in pieces]))

    def onnx_export(self) -> OnnxExport:
        raise ModelError("this is an ONNX model already")

    def eval(self) -> OnnxSED:
        return self

    def __call__(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """(W, n_samples) -> the file's outputs by name; an export that takes a fixed batch runs in calls of that
        many windows, the last padded."""
        x = wave.float().cpu().numpy()
        if self.n_samples is not None and x.shape[1] != self.n_samples:
            raise ModelError(
                f"this ONNX export takes windows of {self.n_samples / self.sample_rate_hz:g} s, not "
                f"{x.shape[1] / self.sample_rate_hz:g} s (the model's own window): predict without --window-s"
            )
        names, fixed = self.names, self.batch
        if fixed is None or fixed == len(x):
            return {k: torch.from_numpy(v) for k, v in zip(names, self.sess.run(None, {"wave": x}))}
        parts = []
        for i in range(0, max(len(x), 1), fixed):  # no windows: one call of padding, sliced to none
            chunk = x[i : i + fixed]
            padded = np.concatenate([chunk, np.zeros((fixed - len(chunk), x.shape[1]), np.float32)])
            parts.append([v[: len(chunk)] for v in self.sess.run(None, {"wave": padded})])
        return {k: torch.from_numpy(np.concatenate([p[j] for p in parts])) for j, k in enumerate(names)}


class OpenVinoSED(OnnxSED):
    """The exported ONNX model compiled by OpenVINO for the CPU (predict --backend openvino; pip install openvino):
    BirdCLEF 2023's 2nd place ran its CPU inference on it (about 40 % less time than ONNX Runtime, its paper)."""

    runtime = "OpenVINO"

    def __init__(self, model_dir: str | Path, threads: int | None = None, meta: ModelMeta | None = None):
        try:
            import openvino as ov
        except ImportError as e:
            raise ModelError("--backend openvino needs OpenVINO: pip install 'birdsed[openvino]'") from e
        path = self._load(model_dir, meta, heads=False)
        import onnx  # its metadata: OpenVINO does not show it (0.7 s to import: the onnx backend reads ORT's instead)

        stamps = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        check_export_is_current(stamps.get(WEIGHTS_KEY), path, model_dir)
        # f32: on CPUs with AMX OpenVINO would run bf16 by default, and its scores would differ from torch's
        config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)

    def __call__(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        res = self.compiled(wave.float().cpu().numpy())
        return {k: torch.from_numpy(res[self.compiled.output(i)].copy()) for i, k in enumerate(ONNX_OUTPUTS)}
