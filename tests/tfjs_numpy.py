"""A tiny, independent numpy interpreter for tfjs graph models, used as the reference in test_tfjs.py.

It deliberately shares no code with `facelens.models.tfjs`: it parses model.json and the weight shards
itself and evaluates every op directly in NHWC, in float64, by accumulating kernel taps over a padded
input. A layout, padding or weight-order bug in the converter therefore cannot be mirrored here.
Only the ops of human's faceres/emotion models (and their fused variants) are implemented.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

_ITEM = {"float32": ("<f4", 4), "int32": ("<i4", 4), "uint8": ("u1", 1), "uint16": ("<u2", 2), "float16": ("<f2", 2)}


def _read_weights(model_json: Path, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        data = bytearray()
        for p in group["paths"]:
            data += (model_json.parent / p).read_bytes()
        pos = 0
        for w in group["weights"]:
            q = w.get("quantization")
            kind = q["dtype"] if q else w["dtype"]
            code, size = _ITEM[kind]
            n = 1
            for s in w["shape"]:
                n *= int(s)
            raw = np.frombuffer(bytes(data[pos:pos + n * size]), dtype=code)
            pos += n * size
            if q is None or kind == "float16":
                vals = raw.astype(np.float32) if w["dtype"] == "float32" else raw.astype(np.int64)
            elif w["dtype"] == "int32":
                vals = np.floor(raw * float(q["scale"]) + float(q["min"]) + 0.5).astype(np.int64)
            else:  # tfjs: q*scale+min in double precision, stored in a Float32Array
                vals = (raw * float(q["scale"]) + float(q["min"])).astype(np.float32)
            out[w["name"]] = vals.reshape([int(s) for s in w["shape"]])
    return out


def _attr(node: dict[str, Any], key: str, default: Any = None) -> Any:
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "list" in a:
        lst = a["list"]
        if "s" in lst:
            return [base64.b64decode(s).decode() for s in lst["s"]]
        return [int(i) for i in lst.get("i", [])]
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "b" in a:
        return bool(a["b"])
    if "i" in a:
        return int(a["i"])
    return a


def _same_pad(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    span = d * (k - 1) + 1
    out = (size + s - 1) // s
    need = max(0, (out - 1) * s + span - size)
    return need // 2, need - need // 2


def _padding(node: dict[str, Any], x: np.ndarray, k: tuple[int, int], s: tuple[int, int],
             d: tuple[int, int]) -> list[tuple[int, int]]:
    mode = _attr(node, "padding")
    if mode == "VALID":
        return [(0, 0), (0, 0)]
    if mode == "SAME":
        return [_same_pad(x.shape[1], k[0], s[0], d[0]), _same_pad(x.shape[2], k[1], s[1], d[1])]
    if mode == "EXPLICIT":
        e = _attr(node, "explicit_paddings")
        return [(e[2], e[3]), (e[4], e[5])]
    raise NotImplementedError(mode)


def _taps(x: np.ndarray, pads: list[tuple[int, int]], k: tuple[int, int], s: tuple[int, int],
          d: tuple[int, int], fill: float):
    """Yield (i, j, window) with window[n, oh, ow, c] = padded x at (oh*s + i*d, ow*s + j*d)."""
    xp = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)], constant_values=fill)
    oh = (xp.shape[1] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (xp.shape[2] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    for i in range(k[0]):
        for j in range(k[1]):
            r, c = i * d[0], j * d[1]
            yield i, j, xp[:, r:r + (oh - 1) * s[0] + 1:s[0], c:c + (ow - 1) * s[1] + 1:s[1], :]


def _activate(kind: str | None, y: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    if kind is None:
        return y
    kind = kind.lower()
    if kind == "relu":
        return np.maximum(y, 0.0)
    if kind == "relu6":
        return np.minimum(np.maximum(y, 0.0), 6.0)
    if kind == "prelu":
        return np.where(y < 0, y * alpha, y)
    raise NotImplementedError(kind)


def _fused(node: dict[str, Any], args: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    ops = [o.lower() for o in _attr(node, "fused_ops", []) or []]
    if not ops:
        return y
    assert ops[0] == "biasadd", ops
    y = y + args[2]
    return _activate(ops[1] if len(ops) > 1 else None, y, args[3] if len(args) > 3 else None)


def _conv(node: dict[str, Any], args: list[np.ndarray]) -> np.ndarray:
    x, w = args[0], args[1].astype(np.float64)
    s = tuple(_attr(node, "strides", [1, 1, 1, 1])[1:3])
    d = tuple(_attr(node, "dilations", [1, 1, 1, 1])[1:3])
    k = w.shape[:2]
    depthwise = "Depthwise" in node["op"]
    acc = None
    for i, j, win in _taps(x, _padding(node, x, k, s, d), k, s, d, 0.0):
        # depthwise: out channel c*M + m = x[..., c] * w[i, j, c, m]; full: a Cin x Cout matmul per tap
        term = (win[..., :, None] * w[i, j]).reshape(*win.shape[:3], -1) if depthwise else win @ w[i, j]
        acc = term if acc is None else acc + term
    return _fused(node, args, acc)


def _pool(node: dict[str, Any], x: np.ndarray) -> np.ndarray:
    k = tuple(_attr(node, "ksize")[1:3])
    s = tuple(_attr(node, "strides")[1:3])
    pads = _padding(node, x, k, s, (1, 1))
    if node["op"] == "MaxPool":
        return np.max(np.stack([w for _, _, w in _taps(x, pads, k, s, (1, 1), -np.inf)]), axis=0)
    total = sum(w for _, _, w in _taps(x, pads, k, s, (1, 1), 0.0))
    count = sum(w for _, _, w in _taps(np.ones_like(x[..., :1]), pads, k, s, (1, 1), 0.0))
    return total / count


def _eval(node: dict[str, Any], args: list[np.ndarray], weights: dict[str, np.ndarray]) -> np.ndarray:
    op = node["op"]
    if op == "Const":
        return weights[node["name"]]
    if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
        return _conv(node, args)
    if op in ("MaxPool", "AvgPool"):
        return _pool(node, args[0])
    if op in ("MatMul", "_FusedMatMul"):
        a = args[0].T if _attr(node, "transpose_a", False) else args[0]
        b = args[1].T if _attr(node, "transpose_b", False) else args[1]
        return _fused(node, args, a @ b.astype(np.float64))
    binary = {"Add": np.add, "AddV2": np.add, "BiasAdd": np.add, "Sub": np.subtract, "Mul": np.multiply,
              "Minimum": np.minimum, "Maximum": np.maximum}
    if op in binary:
        return binary[op](args[0], args[1])
    if op in ("Relu", "Relu6"):
        return _activate(op, args[0])
    if op == "Sigmoid":
        return 1.0 / (1.0 + np.exp(-args[0]))
    if op == "Softmax":
        e = np.exp(args[0] - args[0].max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if op == "Mean":
        axes = tuple(int(a) for a in np.atleast_1d(args[1]))
        return args[0].mean(axis=axes, keepdims=bool(_attr(node, "keep_dims", False)))
    if op == "Identity":
        return args[0]
    raise NotImplementedError(f"reference interpreter has no op {op}")


def run_tfjs_graph(model_json: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate the graph on `feeds` (placeholder name, ':0' optional) and return float64 outputs keyed
    by the signature's output names without ':0'."""
    model_json = Path(model_json)
    doc = json.loads(model_json.read_text())
    weights = _read_weights(model_json, doc.get("weightsManifest", []))
    nodes = {n["name"]: n for n in doc["modelTopology"]["node"]}
    sig = doc.get("signature") or doc.get("userDefinedMetadata", {}).get("signature", {})
    cache: dict[str, np.ndarray] = {k.split(":")[0]: np.asarray(v, dtype=np.float64) for k, v in feeds.items()}

    def get(ref: str) -> np.ndarray:
        name = ref.split(":")[0]
        if name not in cache:  # graphs are shallow enough (< 200 nodes deep) for recursion
            node = nodes[name]
            args = [get(i) for i in node.get("input", []) if not i.startswith("^")]
            cache[name] = _eval(node, args, weights)
        return cache[name]

    return {key.removesuffix(":0"): get(spec["name"]) for key, spec in sig["outputs"].items()}
