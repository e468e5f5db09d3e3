"""tfjs graph model -> ONNX conversion, checked against an independent numpy interpreter (tests/tfjs_numpy.py).

The real models are human's faceres (HSE FaceRes: gender, 1024-d descriptor, age bins) and emotion (oarriaga
mini-Xception, 7 classes). A synthetic graph covers what those two do not: uint8/uint16 quantized weights,
EXPLICIT padding, dilation, fused Relu6/PRelu, AvgPool, Sub/BiasAdd, MatMul transposes, keep_dims.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from facelens.models.tfjs import TfjsConversionError, convert_tfjs_to_onnx, load_tfjs_graph

from .tfjs_numpy import run_tfjs_graph

ATOL = 1e-4
RGB_TO_GRAY = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)  # human's constants.rgb


@pytest.fixture(scope="module")
def human_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding human's faceres.json/emotion.json (+ .bin): the sha256-checked sources the model
    store keeps beside the ONNX files it converted at pull time."""
    from facelens.models.registry import get_model
    from facelens.models.store import source_dir

    root = tmp_path_factory.mktemp("human-models")
    for model in ("age-gender-faceres", "expression-human"):
        src = source_dir(get_model(model))
        if not src.is_dir():
            pytest.fail(f"{model} sources not found in {src}; run `facelens models pull {model}` (or `make models`)")
        for file in src.iterdir():
            (root / file.name).symlink_to(file)
    return root


@pytest.fixture(scope="module")
def face_chip(data: Path) -> np.ndarray:
    """A real 150x150 face chip (dlib's Johns are pre-cropped), RGB uint8."""
    chips = sorted((data / "identities").glob("dlib-*/*.jpg"))
    assert chips, f"no dlib face chips under {data / 'identities'}"
    return np.asarray(Image.open(chips[0]).convert("RGB"))


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _compare(model_json: Path, onnx_path: Path, x: np.ndarray) -> dict[str, float]:
    """Run both, assert same output names/shapes and values within ATOL; return max abs diff per output."""
    sess = _session(onnx_path)
    assert [i.name for i in sess.get_inputs()] == ["input_1"]
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input_1": x}), strict=True))
    ref = run_tfjs_graph(model_json, {"input_1": x})
    assert set(got) == set(ref)
    diffs = {}
    for name, want in ref.items():
        assert got[name].shape == want.shape, name
        assert np.isfinite(got[name]).all(), name
        diffs[name] = float(np.abs(got[name].astype(np.float64) - want).max())
    print(f"\n{model_json.name}: max abs diff {diffs}")
    assert max(diffs.values()) <= ATOL, diffs
    return diffs


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR), dtype=np.float32)


def test_faceres_matches_reference(human_models: Path, tmp_path: Path, face_chip: np.ndarray) -> None:
    model_json = human_models / "faceres.json"
    onnx_path = tmp_path / "faceres.onnx"
    report = convert_tfjs_to_onnx(model_json, onnx_path)
    assert {o["name"]: o["shape"] for o in report["outputs"]} == {
        "gender_pred/Sigmoid": [-1, 1], "global_pooling/Mean": [-1, 1024], "age_pred/Softmax": [-1, 100]}
    assert report["inputs"] == [{"name": "input_1", "shape": [-1, 224, 224, 3]}]
    assert report["num_weights"] == 128
    # human feeds RGB in 0..255 (face crop in 0..1 times 255)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0, 255, (2, 224, 224, 3)), _resize(face_chip, 224)[None]]).astype(np.float32)
    _compare(model_json, onnx_path, x)


def test_emotion_matches_reference(human_models: Path, tmp_path: Path, face_chip: np.ndarray) -> None:
    model_json = human_models / "emotion.json"
    onnx_path = tmp_path / "emotion.onnx"
    report = convert_tfjs_to_onnx(model_json, onnx_path)
    assert report["outputs"] == [{"name": "Identity", "tensor": "Identity", "shape": [-1, 7]}]
    assert report["inputs"] == [{"name": "input_1", "shape": [-1, 64, 64, 1]}]
    # human feeds grayscale (0.2989 R + 0.587 G + 0.114 B of a 0..1 crop), minus 0.5, times 2: range -1..1
    gray = (_resize(face_chip, 64) / 255.0 * RGB_TO_GRAY).sum(-1, keepdims=True)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-1, 1, (3, 64, 64, 1)), ((gray - 0.5) * 2)[None]]).astype(np.float32)
    _compare(model_json, onnx_path, x)
    probs = _session(onnx_path).run(None, {"input_1": x})[0]
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_output_rename(human_models: Path, tmp_path: Path) -> None:
    report = convert_tfjs_to_onnx(human_models / "emotion.json", tmp_path / "e.onnx",
                                  output_names={"Identity": "emotion"})
    assert [o["name"] for o in report["outputs"]] == ["emotion"]
    assert [o.name for o in _session(tmp_path / "e.onnx").get_outputs()] == ["emotion"]


# ------------------------------------------------------------------------------- synthetic model.json


def _attr_list(values: list[int]) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _attr_s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _fused(ops: list[str]) -> dict:
    return {"list": {"s": [base64.b64encode(o.encode()).decode() for o in ops]}}


def _write_model(folder: Path, nodes: list[dict], weights: list[tuple[str, np.ndarray, str]],
                 inputs: dict[str, list[int]], outputs: dict[str, str]) -> Path:
    """model.json + one shard; weight encodings: 'float32', 'int32', 'float16', 'uint8', 'uint16'."""
    manifest, blob = [], bytearray()
    for name, arr, enc in weights:
        entry: dict = {"name": name, "shape": list(arr.shape), "dtype": "int32" if enc == "int32" else "float32"}
        if enc in ("float32", "int32"):
            blob += arr.astype("<f4" if enc == "float32" else "<i4").tobytes()
        elif enc == "float16":
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            blob += arr.astype("<f2").tobytes()
        else:
            levels = 255 if enc == "uint8" else 65535
            lo, hi = float(arr.min()), float(arr.max())
            scale = (hi - lo) / levels or 1.0
            q = np.round((arr - lo) / scale).astype("u1" if enc == "uint8" else "<u2")
            entry["quantization"] = {"dtype": enc, "min": lo, "scale": scale, "original_dtype": "float32"}
            blob += q.tobytes()
        manifest.append(entry)
    for name, shape in inputs.items():
        nodes.append({"name": name, "op": "Placeholder", "attr": {
            "dtype": {"type": "DT_FLOAT"}, "shape": {"shape": {"dim": [{"size": str(d)} for d in shape]}}}})
    for name, _, enc in weights:
        nodes.append({"name": name, "op": "Const", "attr": {"dtype": {"type": "DT_INT32" if enc == "int32" else
                                                                      "DT_FLOAT"}}})
    (folder / "w.bin").write_bytes(bytes(blob))
    doc = {"format": "graph-model", "modelTopology": {"node": nodes, "library": {}, "versions": {}},
           "signature": {"inputs": {f"{k}:0": {"name": f"{k}:0", "dtype": "DT_FLOAT"} for k in inputs},
                         "outputs": {k: {"name": v, "dtype": "DT_FLOAT"} for k, v in outputs.items()}},
           "weightsManifest": [{"paths": ["w.bin"], "weights": manifest}]}
    path = folder / "model.json"
    path.write_text(json.dumps(doc))
    return path


def _node(name: str, op: str, inputs: list[str], **attr: dict) -> dict:
    return {"name": name, "op": op, "input": inputs, "attr": attr}


def _synthetic(folder: Path) -> Path:
    rng = np.random.default_rng(7)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.5, shape).astype(np.float32)

    nhwc = {"data_format": _attr_s("NHWC")}
    ones = {"dilations": _attr_list([1, 1, 1, 1])}
    weights = [
        ("w1", w(3, 3, 3, 4), "uint8"), ("b1", w(4), "float32"), ("alpha1", w(4) * 0.2, "float16"),
        ("d1", w(3, 3, 4, 2), "uint16"), ("bd1", w(8), "float32"),
        ("shift", w(8), "float32"), ("gain", w(1, 1, 1, 8) + 1, "float16"),
        ("w2", w(1, 1, 8, 5), "uint8"), ("b2", w(5), "float32"),
        ("axes_hw", np.array([1, 2]), "int32"), ("axes_c", np.array([-1]), "int32"),
        ("k1", w(6, 5), "float16"), ("k2", w(6, 3), "float32"), ("bk2", w(3), "float32"),
    ]
    nodes = [
        _node("c1", "_FusedConv2D", ["x", "w1", "b1", "alpha1"], strides=_attr_list([1, 2, 2, 1]),
              padding=_attr_s("SAME"), fused_ops=_fused(["BiasAdd", "Prelu"]), num_args={"i": "2"}, **ones, **nhwc),
        _node("dw", "FusedDepthwiseConv2dNative", ["c1", "d1", "bd1"], strides=_attr_list([1, 1, 1, 1]),
              dilations=_attr_list([1, 2, 2, 1]), padding=_attr_s("EXPLICIT"),
              explicit_paddings=_attr_list([0, 0, 1, 2, 2, 1, 0, 0]), fused_ops=_fused(["BiasAdd", "Relu6"]),
              num_args={"i": "1"}, **nhwc),
        _node("pool", "AvgPool", ["dw"], ksize=_attr_list([1, 3, 3, 1]), strides=_attr_list([1, 2, 2, 1]),
              padding=_attr_s("SAME"), **nhwc),
        _node("sub", "Sub", ["pool", "shift"]),
        _node("mul", "Mul", ["sub", "gain"]),
        _node("r6", "Relu6", ["mul"]),
        _node("pw", "Conv2D", ["r6", "w2"], strides=_attr_list([1, 1, 1, 1]), padding=_attr_s("VALID"), **ones, **nhwc),
        _node("bias", "BiasAdd", ["pw", "b2"], **nhwc),
        _node("gap", "Mean", ["bias", "axes_hw"], keep_dims={"b": False}),
        _node("mm", "MatMul", ["gap", "k1"], transpose_b={"b": True}),
        _node("dense", "_FusedMatMul", ["mm", "k2", "bk2"], fused_ops=_fused(["BiasAdd", "Relu"]),
              num_args={"i": "1"}),
        _node("cmean", "Mean", ["dw", "axes_c"], keep_dims={"b": True}),
        _node("gate", "Sigmoid", ["cmean"]),
        _node("mp", "MaxPool", ["c1"], ksize=_attr_list([1, 2, 2, 1]), strides=_attr_list([1, 2, 2, 1]),
              padding=_attr_s("SAME"), **nhwc),
        _node("mx", "Maximum", ["mp", "c1_max_floor"]),
    ]
    weights.append(("c1_max_floor", np.array(0.1, dtype=np.float32), "float32"))
    return _write_model(folder, nodes, weights, {"x": [-1, 9, 11, 3]},
                        {"logits": "dense:0", "gate": "gate:0", "pooled:0": "mx:0"})


def test_synthetic_ops_and_quantization(tmp_path: Path) -> None:
    model_json = _synthetic(tmp_path)
    graph = load_tfjs_graph(model_json)
    q = graph.weights["w1"]
    assert q.dtype == np.float32 and len(np.unique(q)) <= 256  # uint8 levels, dequantized as q*scale+min
    onnx_path = tmp_path / "synthetic.onnx"
    report = convert_tfjs_to_onnx(model_json, onnx_path)
    assert {o["name"]: o["shape"] for o in report["outputs"]} == {
        "logits": [-1, 3], "gate": [-1, 4, 5, 1], "pooled": [-1, 3, 3, 4]}
    x = np.random.default_rng(3).normal(0, 1, (2, 9, 11, 3)).astype(np.float32)
    sess = _session(onnx_path)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x}), strict=True))
    ref = run_tfjs_graph(model_json, {"x:0": x})
    for name, want in ref.items():
        assert got[name].shape == want.shape, name
        np.testing.assert_allclose(got[name], want, atol=1e-5, err_msg=name)


def test_unsupported_op_is_named(tmp_path: Path) -> None:
    nodes = [_node("e", "Erf", ["x"]), _node("y", "FooBar", ["e"]), _node("z", "Relu", ["y"])]
    model_json = _write_model(tmp_path, nodes, [], {"x": [-1, 4]}, {"out": "z:0"})
    with pytest.raises(TfjsConversionError, match=r"unsupported tfjs op\(s\): Erf, FooBar"):
        convert_tfjs_to_onnx(model_json, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_unsupported_fused_activation_is_named(tmp_path: Path) -> None:
    nodes = [_node("c", "_FusedConv2D", ["x", "k", "b"], strides=_attr_list([1, 1, 1, 1]), padding=_attr_s("SAME"),
                   fused_ops=_fused(["BiasAdd", "Elu"]))]
    weights = [("k", np.ones((1, 1, 2, 2), np.float32), "float32"), ("b", np.zeros(2, np.float32), "float32")]
    model_json = _write_model(tmp_path, nodes, weights, {"x": [1, 3, 3, 2]}, {"out": "c"})
    with pytest.raises(TfjsConversionError, match="Elu"):
        convert_tfjs_to_onnx(model_json, tmp_path / "bad.onnx")
