"""Convert TensorFlow.js graph models (model.json + .bin shards) to ONNX with numpy and `onnx` only.

Why: a few useful face models (HSE FaceRes age/gender/descriptor, the oarriaga expression net) are only
published in tfjs format inside the `@vladmandic/human` npm package. Converting them once to ONNX lets
facelens run them with onnxruntime like every other model, without TensorFlow or node.

Scope: exactly the ops those two graphs use, plus their obvious fused variants. Anything else raises
`TfjsConversionError` naming the op(s), so a new model fails loudly at conversion time instead of
producing a silently wrong graph.

Layout: the ONNX model keeps the tfjs NHWC input and output layout, so callers feed the tensor they
would feed tfjs. Inside the graph, convolutions and pools run in NCHW; each tensor is transposed only
when a consumer needs the other layout, and per-channel constants are reshaped instead of transposed
at run time.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facelens.errors import FacelensError

__all__ = [
    "SUPPORTED_OPS",
    "TfjsConversionError",
    "TfjsGraph",
    "TfjsNode",
    "convert_tfjs_to_onnx",
    "load_tfjs_graph",
]

OPSET = 17
IR_VERSION = 8  # opset 17's IR version: readable by every onnxruntime facelens supports

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)

_BINARY = {"Add": "Add", "AddV2": "Add", "BiasAdd": "Add", "Sub": "Sub", "Mul": "Mul",
           "Minimum": "Min", "Maximum": "Max"}
_UNARY = {"Relu", "Relu6", "Sigmoid", "Identity"}
_CONV = {"Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"}
_POOL = {"MaxPool": "MaxPool", "AvgPool": "AveragePool"}
_FUSED_ACTIVATIONS = {"Relu", "Relu6", "PRelu"}
# fused_ops spellings differ (TF grappler writes 'Relu', tfjs's prelu fusing 'Prelu'); tfjs lower-cases them
_FUSED_CANONICAL = {"biasadd": "BiasAdd", "relu": "Relu", "relu6": "Relu6", "prelu": "PRelu"}
SUPPORTED_OPS: frozenset[str] = frozenset(
    {"Placeholder", "Const", "Softmax", "Mean", "MatMul", "_FusedMatMul", *_BINARY, *_UNARY, *_CONV, *_POOL}
)

# bytes per element of a stored (possibly quantized) weight, and its numpy reading type
_STORED = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "bool": np.dtype("u1"),
           "uint8": np.dtype("u1"), "uint16": np.dtype("<u2"), "float16": np.dtype("<f2")}


class TfjsConversionError(FacelensError, ValueError):
    """A tfjs model cannot be read or converted: unsupported op, attribute, dtype or broken manifest."""


@dataclass(frozen=True)
class TfjsNode:
    """One node of `modelTopology.node`, with attributes decoded to plain Python values."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any]


@dataclass
class TfjsGraph:
    """A parsed graph model: nodes by name, float32/int32 weights, and the signature's inputs/outputs.

    `inputs` maps placeholder name to its shape (-1 for unknown dims); `outputs` maps the signature's
    output key to the tensor it names (both may carry a ':0' suffix, as tfjs writes them).
    """

    path: Path
    nodes: dict[str, TfjsNode]
    weights: dict[str, np.ndarray]
    weight_dtypes: dict[str, str]
    inputs: dict[str, tuple[int, ...]]
    outputs: dict[str, str]
    metadata: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- loading


def _decode_attr(value: dict[str, Any]) -> Any:
    """A TF AttrValue as tfjs writes it in JSON (`s` base64, `i` as strings) to a Python value."""
    if "list" in value:
        lst = value["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        if "s" in lst:
            return [base64.b64decode(v).decode("utf-8") for v in lst["s"]]
        if "b" in lst:
            return [bool(v) for v in lst["b"]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode("utf-8")
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "shape" in value:
        dims = value["shape"].get("dim", [])
        return tuple(int(d.get("size", -1)) for d in dims)
    return value


def _signature_shape(spec: dict[str, Any]) -> tuple[int, ...]:
    dims = spec.get("tensorShape", {}).get("dim", [])
    return tuple(int(d.get("size", -1)) for d in dims)


def _dequantize(raw: bytes, entry: dict[str, Any]) -> np.ndarray:
    """One weight's bytes to float32/int32, exactly as tfjs-core's decodeWeights does.

    uint8/uint16: q*scale+min computed in float64 (JS numbers) then stored as float32, or rounded for
    int32; float16: IEEE half widened to float32.
    """
    dtype = entry["dtype"]
    shape = tuple(int(s) for s in entry["shape"])
    quant = entry.get("quantization")
    if quant is None:
        if dtype not in ("float32", "int32", "bool"):
            raise TfjsConversionError(f"weight {entry['name']!r}: unsupported dtype {dtype!r}")
        arr = np.frombuffer(raw, dtype=_STORED[dtype])
        arr = arr.astype(np.bool_) if dtype == "bool" else arr.astype(_STORED[dtype].newbyteorder("="))
        return arr.reshape(shape)
    qdtype = quant.get("dtype")
    if qdtype not in ("uint8", "uint16", "float16"):
        raise TfjsConversionError(f"weight {entry['name']!r}: unknown quantization dtype {qdtype!r}")
    q = np.frombuffer(raw, dtype=_STORED[qdtype])
    if qdtype == "float16":
        if dtype != "float32":
            raise TfjsConversionError(f"weight {entry['name']!r}: float16 quantization of {dtype} is invalid")
        return q.astype(np.float32).reshape(shape)
    if "scale" not in quant or "min" not in quant:
        raise TfjsConversionError(f"weight {entry['name']!r}: {qdtype} quantization without scale/min")
    real = q.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
    if dtype == "float32":
        return real.astype(np.float32).reshape(shape)
    if dtype == "int32":
        return np.floor(real + 0.5).astype(np.int32).reshape(shape)  # JS Math.round: half up
    raise TfjsConversionError(f"weight {entry['name']!r}: {qdtype} quantization of {dtype} is invalid")


def _load_weights(model_json: Path, manifest: list[dict[str, Any]]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each manifest group's shards are concatenated; its weights follow one another in that buffer."""
    weights: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for group in manifest:
        chunks = []
        for rel in group["paths"]:
            shard = model_json.parent / rel
            if not shard.is_file():
                raise TfjsConversionError(f"weight shard missing: {shard}")
            chunks.append(shard.read_bytes())
        buf = b"".join(chunks)
        offset = 0
        for entry in group["weights"]:
            stored = entry.get("quantization", {}).get("dtype", entry["dtype"])
            if stored not in _STORED:
                raise TfjsConversionError(f"weight {entry['name']!r}: unsupported dtype {stored!r}")
            count = int(np.prod([int(s) for s in entry["shape"]], dtype=np.int64))
            nbytes = count * _STORED[stored].itemsize
            if offset + nbytes > len(buf):
                raise TfjsConversionError(f"weight {entry['name']!r} runs past the end of {group['paths']}")
            weights[entry["name"]] = _dequantize(buf[offset:offset + nbytes], entry)
            dtypes[entry["name"]] = entry["dtype"] if stored == entry["dtype"] else f"{entry['dtype']}<-{stored}"
            offset += nbytes
        if offset != len(buf):
            raise TfjsConversionError(f"weight shards {group['paths']}: {len(buf) - offset} unread bytes")
    return weights, dtypes


def load_tfjs_graph(model_json: Path) -> TfjsGraph:
    """Parse model.json and its shards into nodes plus dequantized weights (no op validation here)."""
    model_json = Path(model_json)
    try:
        doc = json.loads(model_json.read_text())
    except (OSError, ValueError) as exc:
        raise TfjsConversionError(f"cannot read tfjs model {model_json}: {exc}") from exc
    if doc.get("format") not in (None, "graph-model"):
        raise TfjsConversionError(f"{model_json}: format {doc.get('format')!r} is not a tfjs graph model")
    topo = doc.get("modelTopology") or {}
    if topo.get("library", {}).get("function"):
        raise TfjsConversionError(f"{model_json}: graphs with function libraries (control flow) are not supported")
    nodes: dict[str, TfjsNode] = {}
    for raw in topo.get("node", []):
        attrs = {k: _decode_attr(v) for k, v in raw.get("attr", {}).items()}
        inputs = tuple(i for i in raw.get("input", []) if not i.startswith("^"))  # drop control deps
        nodes[raw["name"]] = TfjsNode(raw["name"], raw["op"], inputs, attrs)
    weights, dtypes = _load_weights(model_json, doc.get("weightsManifest", []))

    signature = doc.get("signature") or doc.get("userDefinedMetadata", {}).get("signature") or {}
    inputs: dict[str, tuple[int, ...]] = {}
    for node in nodes.values():
        if node.op == "Placeholder":
            shape = node.attrs.get("shape")
            inputs[node.name] = tuple(shape) if isinstance(shape, tuple) else ()
    for spec in signature.get("inputs", {}).values():  # the signature may know a shape the node lacks
        name = _clean(spec.get("name", ""))
        if name in inputs and not inputs[name]:
            inputs[name] = _signature_shape(spec)
    outputs = {key: spec.get("name", key) for key, spec in signature.get("outputs", {}).items()}
    if not outputs:  # no signature: every node nobody consumes is an output
        used = {_clean(i) for n in nodes.values() for i in n.inputs}
        outputs = {n.name: n.name for n in nodes.values() if n.name not in used and n.op not in ("Const",)}
    metadata = {k: str(doc[k]) for k in ("format", "generatedBy", "convertedBy") if k in doc}
    return TfjsGraph(model_json, nodes, weights, dtypes, inputs, outputs, metadata)


def _clean(ref: str) -> str:
    """'node:0' -> 'node'. Other output indices are not produced by any supported op."""
    name, _, idx = ref.partition(":")
    if idx not in ("", "0"):
        raise TfjsConversionError(f"tensor {ref!r}: only the first output of a node is supported")
    return name


# ------------------------------------------------------------------------------------------ conversion


Shape = tuple[int | None, ...]


@dataclass
class _Value:
    """A converted tfjs tensor: its logical (tfjs, NHWC) shape and the ONNX names holding it per layout."""

    shape: Shape
    nhwc: str | None = None  # ONNX name in tfjs layout
    nchw: str | None = None  # ONNX name transposed to NCHW (rank 4 only)


class _Converter:
    """Walks the tfjs graph in topological order, emitting ONNX nodes and initializers."""

    def __init__(self, graph: TfjsGraph) -> None:
        self.g = graph
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.values: dict[str, _Value] = {}
        self.used_names: set[str] = set()
        self.scalars: dict[float, str] = {}
        self.const_nchw: dict[str, str] = {}  # Const name -> initializer reshaped for NCHW broadcasting

    # -- naming and emission

    def name(self, base: str) -> str:
        candidate, i = base, 1
        while candidate in self.used_names:
            candidate = f"{base}_{i}"
            i += 1
        self.used_names.add(candidate)
        return candidate

    def emit(self, op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def rename(self, old: str, new: str) -> None:
        """Rename an ONNX tensor wherever it is produced or consumed."""
        for node in self.nodes:
            for seq in (node.input, node.output):
                for i, name in enumerate(seq):
                    if name == old:
                        seq[i] = new
            if node.name == old:
                node.name = new
        for val in self.values.values():  # Identity aliases share ONNX names
            if val.nhwc == old:
                val.nhwc = new
            if val.nchw == old:
                val.nchw = new

    def scalar(self, value: float) -> str:
        """One shared float32 scalar initializer per value (Clip bounds)."""
        if value not in self.scalars:
            self.scalars[value] = self.init(f"scalar_{value:g}", np.float32(value))
        return self.scalars[value]

    def init(self, base: str, array: np.ndarray) -> str:
        name = self.name(base)
        self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    # -- tensors

    def const(self, ref: str) -> np.ndarray | None:
        node = self.g.nodes.get(_clean(ref))
        if node is None or node.op != "Const":
            return None
        if node.name not in self.g.weights:
            raise TfjsConversionError(f"Const {node.name!r} has no entry in weightsManifest")
        return self.g.weights[node.name]

    def need_const(self, ref: str, what: str) -> np.ndarray:
        arr = self.const(ref)
        if arr is None:
            raise TfjsConversionError(f"{what}: input {ref!r} must be a constant weight")
        return arr

    def value(self, ref: str) -> _Value:
        name = _clean(ref)
        if name not in self.values:
            arr = self.const(name)
            if arr is None:
                raise TfjsConversionError(f"tensor {ref!r} is used before it is defined")
            self.values[name] = _Value(arr.shape, nhwc=self.init(name, arr))
        return self.values[name]

    def as_nhwc(self, ref: str) -> str:
        v = self.value(ref)
        if v.nhwc is None:
            assert v.nchw is not None
            v.nhwc = self.emit("Transpose", [v.nchw], self.name(f"{_clean(ref)}__nhwc"), perm=list(NCHW_TO_NHWC))
        return v.nhwc

    def as_nchw(self, ref: str) -> str:
        v = self.value(ref)
        if len(v.shape) != 4:
            raise TfjsConversionError(f"tensor {ref!r} has rank {len(v.shape)}; this op needs a 4-D NHWC tensor")
        if v.nchw is None:
            assert v.nhwc is not None
            v.nchw = self.emit("Transpose", [v.nhwc], self.name(f"{_clean(ref)}__nchw"), perm=list(NHWC_TO_NCHW))
        return v.nchw

    # -- helpers for attributes

    @staticmethod
    def check_nhwc(node: TfjsNode) -> None:
        fmt = node.attrs.get("data_format", "NHWC")
        if fmt != "NHWC":
            raise TfjsConversionError(f"{node.op} {node.name!r}: data_format {fmt!r} is not supported (NHWC only)")

    @staticmethod
    def hw(node: TfjsNode, key: str) -> tuple[int, int]:
        vals = node.attrs.get(key) or [1, 1, 1, 1]
        if len(vals) != 4 or vals[0] != 1 or vals[3] != 1:
            raise TfjsConversionError(f"{node.op} {node.name!r}: {key}={vals} on batch/channel dims")
        return int(vals[1]), int(vals[2])

    def pads(self, node: TfjsNode, in_hw: tuple[int | None, int | None], kernel: tuple[int, int],
             strides: tuple[int, int], dilations: tuple[int, int]) -> tuple[list[int], tuple[int | None, ...]]:
        """ONNX pads [top, left, bottom, right] reproducing tfjs SAME/VALID/EXPLICIT, and the output H, W."""
        padding = node.attrs.get("padding", "VALID")
        begin, end, out = [], [], []
        for axis in range(2):
            size, k, s, d = in_hw[axis], kernel[axis], strides[axis], dilations[axis]
            eff = (k - 1) * d + 1
            if padding == "VALID":
                lo = hi = 0
            elif padding == "SAME":
                if size is None:
                    raise TfjsConversionError(f"{node.op} {node.name!r}: SAME padding needs a static input size")
                total = max((-(-size // s) - 1) * s + eff - size, 0)
                lo, hi = total // 2, total - total // 2  # TF puts the odd pixel at the end
            elif padding == "EXPLICIT":
                explicit = node.attrs.get("explicit_paddings") or []
                if len(explicit) != 8:
                    raise TfjsConversionError(f"{node.op} {node.name!r}: explicit_paddings={explicit}")
                lo, hi = int(explicit[2 + 2 * axis]), int(explicit[3 + 2 * axis])
            else:
                raise TfjsConversionError(f"{node.op} {node.name!r}: padding {padding!r} is not supported")
            begin.append(lo)
            end.append(hi)
            out.append(None if size is None else (size + lo + hi - eff) // s + 1)
        return begin + end, tuple(out)

    def activation(self, node: TfjsNode, kind: str, x: str, out: str, layout: str) -> str:
        """A fused activation after a conv/matmul; `layout` says how per-channel PRelu alphas must look."""
        if kind == "Relu":
            return self.emit("Relu", [x], out)
        if kind == "Relu6":
            return self.emit("Clip", [x, self.scalar(0.0), self.scalar(6.0)], out)
        if kind == "PRelu":
            if len(node.inputs) < 4:
                raise TfjsConversionError(f"{node.op} {node.name!r}: PRelu without its alpha input")
            alpha = self.need_const(node.inputs[3], f"{node.op} {node.name!r}").astype(np.float32)
            if layout == "nchw" and alpha.ndim >= 1:
                alpha = _const_to_nchw(alpha)
            return self.emit("PRelu", [x, self.init(f"{node.name}/alpha", alpha)], out)
        raise TfjsConversionError(f"{node.op} {node.name!r}: fused activation {kind!r} is not supported")

    def fused(self, node: TfjsNode) -> tuple[bool, str | None]:
        """(has bias, activation) from `fused_ops` of _FusedConv2D / FusedDepthwiseConv2dNative / _FusedMatMul."""
        ops = [_FUSED_CANONICAL.get(o.lower(), o) for o in node.attrs.get("fused_ops") or []]
        if node.op in ("Conv2D", "DepthwiseConv2dNative", "MatMul"):
            return False, None
        bias = bool(ops) and ops[0] == "BiasAdd"
        rest = ops[1:] if bias else ops
        if len(rest) > 1 or (rest and rest[0] not in _FUSED_ACTIVATIONS) or (not bias and rest):
            raise TfjsConversionError(f"{node.op} {node.name!r}: fused_ops {ops} are not supported "
                                      f"(BiasAdd followed by one of {sorted(_FUSED_ACTIVATIONS)})")
        return bias, (rest[0] if rest else None)

    # -- ops

    def convert_node(self, node: TfjsNode) -> None:
        op = node.op
        if op == "Placeholder":
            if node.attrs.get("dtype", "DT_FLOAT") != "DT_FLOAT":
                raise TfjsConversionError(f"input {node.name!r}: dtype {node.attrs['dtype']} (float32 only)")
            shape = tuple(None if d < 0 else d for d in self.g.inputs.get(node.name, ()))
            if not shape:
                raise TfjsConversionError(f"input {node.name!r} has no shape in model.json")
            self.values[node.name] = _Value(shape, nhwc=node.name)
        elif op == "Const":
            pass  # materialised on first use, in whatever form the consumer needs
        elif op == "Identity":
            src = self.value(node.inputs[0])
            self.values[node.name] = _Value(src.shape, src.nhwc, src.nchw)
        elif op in _CONV:
            self.conv(node)
        elif op in _POOL:
            self.pool(node)
        elif op in _BINARY:
            self.binary(node)
        elif op in ("Relu", "Relu6", "Sigmoid"):
            src = self.value(node.inputs[0])
            layout = "nchw" if src.nchw is not None else "nhwc"
            x = self.as_nchw(node.inputs[0]) if layout == "nchw" else self.as_nhwc(node.inputs[0])
            out = self.name(node.name)
            if op == "Sigmoid":
                self.emit("Sigmoid", [x], out)
            else:
                self.activation(node, op, x, out, layout)
            self.values[node.name] = _Value(src.shape, **{layout: out})
        elif op == "Softmax":
            src = self.value(node.inputs[0])
            out = self.emit("Softmax", [self.as_nhwc(node.inputs[0])], self.name(node.name), axis=-1)
            self.values[node.name] = _Value(src.shape, nhwc=out)
        elif op == "Mean":
            self.mean(node)
        elif op in ("MatMul", "_FusedMatMul"):
            self.matmul(node)
        else:  # pragma: no cover - filtered before conversion starts
            raise TfjsConversionError(f"unsupported tfjs op {op!r}")

    def conv(self, node: TfjsNode) -> None:
        self.check_nhwc(node)
        src = self.value(node.inputs[0])
        if len(src.shape) != 4:
            raise TfjsConversionError(f"{node.op} {node.name!r}: input rank {len(src.shape)}, expected 4")
        kernel = self.need_const(node.inputs[1], f"{node.op} {node.name!r}").astype(np.float32)
        kh, kw, cin, cmul = kernel.shape
        depthwise = "Depthwise" in node.op
        if depthwise:  # [kh, kw, C, M] -> [C*M, 1, kh, kw]; TF output channel c*M+m is ONNX group c, member m
            weight = kernel.reshape(kh, kw, cin * cmul).transpose(2, 0, 1)[:, None, :, :]
            group, cout = cin, cin * cmul
        else:  # [kh, kw, Cin, Cout] -> [Cout, Cin, kh, kw]
            weight = kernel.transpose(3, 2, 0, 1)
            group, cout = 1, cmul
        if src.shape[3] is not None and src.shape[3] != cin:
            raise TfjsConversionError(f"{node.op} {node.name!r}: {src.shape[3]} input channels, filter expects {cin}")
        strides, dilations = self.hw(node, "strides"), self.hw(node, "dilations")
        pads, out_hw = self.pads(node, (src.shape[1], src.shape[2]), (kh, kw), strides, dilations)
        has_bias, act = self.fused(node)
        inputs = [self.as_nchw(node.inputs[0]), self.init(f"{node.name}/weight", weight)]
        if has_bias:
            bias = self.need_const(node.inputs[2], f"{node.op} {node.name!r}").astype(np.float32).reshape(-1)
            if bias.size != cout:
                raise TfjsConversionError(f"{node.op} {node.name!r}: bias has {bias.size} values for {cout} channels")
            inputs.append(self.init(f"{node.name}/bias", bias))
        out = self.name(node.name) if act is None else self.name(f"{node.name}/conv")
        self.emit("Conv", inputs, out, kernel_shape=[kh, kw], strides=list(strides), dilations=list(dilations),
                  pads=pads, group=group)
        if act is not None:
            out = self.activation(node, act, out, self.name(node.name), "nchw")
        self.values[node.name] = _Value((src.shape[0], *out_hw, cout), nchw=out)

    def pool(self, node: TfjsNode) -> None:
        self.check_nhwc(node)
        src = self.value(node.inputs[0])
        kernel, strides = self.hw(node, "ksize"), self.hw(node, "strides")
        pads, out_hw = self.pads(node, (src.shape[1], src.shape[2]), kernel, strides, (1, 1))
        attrs: dict[str, Any] = {"kernel_shape": list(kernel), "strides": list(strides), "pads": pads}
        if node.op == "AvgPool":
            attrs["count_include_pad"] = 0  # TF averages over the valid pixels only
        out = self.emit(_POOL[node.op], [self.as_nchw(node.inputs[0])], self.name(node.name), **attrs)
        self.values[node.name] = _Value((src.shape[0], *out_hw, src.shape[3]), nchw=out)

    def binary(self, node: TfjsNode) -> None:
        """Elementwise op with numpy broadcasting; runs in NCHW when every runtime input is 4-D and one
        of them already is NCHW, rewriting constant operands to match instead of transposing."""
        if len(node.inputs) != 2:
            raise TfjsConversionError(f"{node.op} {node.name!r}: expected 2 inputs, got {len(node.inputs)}")
        consts = [self.const(i) for i in node.inputs]
        shapes = [c.shape if c is not None else self.value(i).shape for c, i in zip(consts, node.inputs, strict=True)]
        out_shape = _broadcast(shapes, node)
        runtime = [i for c, i in zip(consts, node.inputs, strict=True) if c is None]
        nchw = (len(out_shape) == 4 and bool(runtime) and all(len(self.value(i).shape) == 4 for i in runtime)
                and any(self.value(i).nchw is not None for i in runtime)
                and all(c.ndim <= 4 for c in consts if c is not None))
        if node.op == "BiasAdd":
            self.check_nhwc(node)
        names = []
        for c, ref in zip(consts, node.inputs, strict=True):
            if c is None:
                names.append(self.as_nchw(ref) if nchw else self.as_nhwc(ref))
            elif nchw and c.ndim >= 1:
                key = _clean(ref)
                if key not in self.const_nchw:
                    self.const_nchw[key] = self.init(f"{key}__nchw", _const_to_nchw(c))
                names.append(self.const_nchw[key])
            else:
                names.append(self.as_nhwc(ref))  # the Const's initializer, created once
        out = self.emit(_BINARY[node.op], names, self.name(node.name))
        self.values[node.name] = _Value(out_shape, **{"nchw" if nchw else "nhwc": out})

    def mean(self, node: TfjsNode) -> None:
        src = self.value(node.inputs[0])
        rank = len(src.shape)
        axes = sorted({int(a) % rank for a in np.atleast_1d(self.need_const(node.inputs[1], f"Mean {node.name!r}"))})
        keep = bool(node.attrs.get("keep_dims", False))
        kept = [d for d in range(rank) if d not in axes]
        out_shape = tuple(1 if d in axes else src.shape[d] for d in range(rank)) if keep else tuple(
            src.shape[d] for d in kept)
        # in NCHW the remaining dims must come out in the same order as in NHWC (e.g. H, W reduced)
        order = [d for d in NHWC_TO_NCHW if d not in axes]
        use_nchw = rank == 4 and src.nchw is not None and (keep or order == sorted(order))
        if use_nchw:
            onnx_axes = sorted(NHWC_TO_NCHW.index(a) for a in axes)
            out = self.emit("ReduceMean", [self.as_nchw(node.inputs[0])], self.name(node.name), axes=onnx_axes,
                            keepdims=int(keep))
            layout = "nchw" if keep else "nhwc"
        else:
            out = self.emit("ReduceMean", [self.as_nhwc(node.inputs[0])], self.name(node.name), axes=axes,
                            keepdims=int(keep))
            layout = "nhwc"
        self.values[node.name] = _Value(out_shape, **{layout: out})

    def matmul(self, node: TfjsNode) -> None:
        a, b = self.value(node.inputs[0]), self.value(node.inputs[1])
        if len(a.shape) != 2 or len(b.shape) != 2:
            raise TfjsConversionError(f"{node.op} {node.name!r}: only 2-D MatMul is supported")
        ta, tb = bool(node.attrs.get("transpose_a", False)), bool(node.attrs.get("transpose_b", False))
        has_bias, act = self.fused(node)
        inputs = [self.as_nhwc(node.inputs[0]), self.as_nhwc(node.inputs[1])]
        n_out = b.shape[0] if tb else b.shape[1]
        if has_bias:
            bias = self.need_const(node.inputs[2], f"{node.op} {node.name!r}").astype(np.float32)
            inputs.append(self.init(f"{node.name}/bias", bias))
        out = self.name(node.name) if act is None else self.name(f"{node.name}/gemm")
        self.emit("Gemm", inputs, out, transA=int(ta), transB=int(tb))
        if act is not None:
            out = self.activation(node, act, out, self.name(node.name), "nhwc")
        self.values[node.name] = _Value((a.shape[1] if ta else a.shape[0], n_out), nhwc=out)


def _const_to_nchw(arr: np.ndarray) -> np.ndarray:
    """A constant broadcast against an NHWC tensor, rewritten to broadcast the same way against NCHW."""
    full = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
    return np.ascontiguousarray(full.transpose(NHWC_TO_NCHW))


def _broadcast(shapes: list[Shape], node: TfjsNode) -> Shape:
    rank = max(len(s) for s in shapes)
    out: list[int | None] = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        dims.discard(1)
        known = {d for d in dims if d is not None}
        if len(known) > 1:
            raise TfjsConversionError(f"{node.op} {node.name!r}: shapes {shapes} do not broadcast")
        out.append(known.pop() if known else (None if None in dims else 1))
    return tuple(out)


def _topological(graph: TfjsGraph, outputs: list[str]) -> list[TfjsNode]:
    """Nodes reachable from the outputs, each after its inputs (model.json order is not guaranteed)."""
    order: list[TfjsNode] = []
    state: dict[str, int] = {}
    for root in outputs:
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(graph.nodes[name])
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise TfjsConversionError(f"graph has a cycle through {name!r}")
            if name not in graph.nodes:
                raise TfjsConversionError(f"tensor {name!r} is not produced by any node")
            state[name] = 1
            stack.append((name, True))
            for ref in reversed(graph.nodes[name].inputs):
                dep = _clean(ref)
                if state.get(dep) != 2:
                    if state.get(dep) == 1:
                        raise TfjsConversionError(f"graph has a cycle through {dep!r}")
                    stack.append((dep, False))
    return order


def _value_info(name: str, shape: Shape) -> onnx.ValueInfoProto:
    """Float tensor info; an unknown leading dim is the symbolic batch 'N'."""
    dims: list[int | str | None] = ["N" if i == 0 and d is None else d for i, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def convert_tfjs_to_onnx(model_json: Path, onnx_path: Path, *, output_names: dict[str, str] | None = None) -> dict:
    """Write `onnx_path` computing the same function as the tfjs graph model, with its NHWC input layout.

    Output names are the signature's output keys without ':0' (e.g. 'age_pred/Softmax'); `output_names`
    may map those clean names to others. Returns a report: tfjs and ONNX op counts, inputs and outputs
    (name, shape, with -1 for the batch), weight count, parameter count, weight dtypes, seconds.
    """
    start = time.perf_counter()
    graph = load_tfjs_graph(Path(model_json))
    rename = dict(output_names or {})
    out_specs = [(_clean_key(key), _clean(ref)) for key, ref in graph.outputs.items()]
    if not out_specs:
        raise TfjsConversionError(f"{model_json}: no outputs found")
    order = _topological(graph, [ref for _, ref in out_specs])
    unsupported = sorted({n.op for n in order if n.op not in SUPPORTED_OPS})
    if unsupported:
        raise TfjsConversionError(
            f"{Path(model_json).name}: unsupported tfjs op(s): {', '.join(unsupported)} "
            f"(supported: {', '.join(sorted(SUPPORTED_OPS))})")

    finals = [rename.get(key, key) for key, _ in out_specs]
    if len(set(finals)) != len(finals):
        raise TfjsConversionError(f"{model_json}: duplicate output names {finals}")
    conv = _Converter(graph)
    conv.used_names.update(finals)  # reserved: internal tensors never take an output's name
    conv.used_names.update(n.name for n in order if n.op == "Placeholder")
    for node in order:
        conv.convert_node(node)

    graph_inputs = []
    report_inputs = []
    for node in order:
        if node.op == "Placeholder":
            shape = conv.values[node.name].shape
            graph_inputs.append(_value_info(node.name, shape))
            report_inputs.append({"name": node.name, "shape": [-1 if d is None else d for d in shape]})

    graph_outputs = []
    report_outputs = []
    input_names = {n.name for n in order if n.op == "Placeholder"}
    for (_key, ref), final in zip(out_specs, finals, strict=True):
        val = conv.values[ref]
        src = conv.as_nhwc(ref)
        if src in input_names or src in finals or src in conv.inits:
            conv.emit("Identity", [src], final)  # an input, a constant, or a tensor exposed under another name
        else:
            conv.rename(src, final)  # the producing node writes the output directly
        graph_outputs.append(_value_info(final, val.shape))
        report_outputs.append({"name": final, "tensor": ref, "shape": [-1 if d is None else d for d in val.shape]})

    onnx_graph = helper.make_graph(conv.nodes, Path(model_json).stem, graph_inputs, graph_outputs,
                                   initializer=list(conv.inits.values()))
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="facelens.models.tfjs", ir_version=IR_VERSION)
    meta = {**graph.metadata, "source": Path(model_json).name, "layout": "NHWC"}
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(onnx_path))

    return {
        "source": str(model_json),
        "onnx": str(onnx_path),
        "opset": OPSET,
        "tfjs_ops": dict(sorted(Counter(n.op for n in order).items())),
        "onnx_ops": dict(sorted(Counter(n.op_type for n in conv.nodes).items())),
        "inputs": report_inputs,
        "outputs": report_outputs,
        "num_weights": len(graph.weights),
        "num_params": int(sum(w.size for w in graph.weights.values())),
        "weight_dtypes": dict(sorted(Counter(graph.weight_dtypes.values()).items())),
        "seconds": round(time.perf_counter() - start, 3),
    }


def _clean_key(key: str) -> str:
    return key[:-2] if key.endswith(":0") else key
