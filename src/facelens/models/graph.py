"""Graph rewrites for speed: exact at load time (PRelu), and INT8 recognizers built once at pull time.

**PRelu.** onnxruntime's CPU PRelu is a generic broadcasting kernel: on ArcFace MobileFaceNet's 34 PRelus
(3.2 M values a face) it took 34 % of the network's time, and it forces the convolutions out of the
blocked NCHWc layout and back around every one of them. PRelu(x, a) = a·x + (1 - a)·relu(x) written with
Relu, Mul and Add stays in that layout (onnxruntime folds the per-channel multiplications into its blocked
kernels) and gives the same values to float rounding: 23 → 16-18 ms a face on one thread, measured. Done on
the loaded graph, so the file on disk stays the checked, published one.

**INT8.** `quantize_recognizer` builds a static, per-channel QDQ INT8 model (onnxruntime's quantizer)
from the fp32 file: opset 13 (per-channel QDQ needs it), the PRelu rewrite, activation ranges calibrated on
faces found in photos that ship in the same distribution (Percentile calibration: measured against MinMax
and Entropy on people_celeba, it kept the most verification accuracy), and grouped (not depthwise)
convolutions left in fp32: onnxruntime's INT8 kernel for them took 11.7 of 19 ms a face. The session then
runs with onnxruntime's `WeightBiasQuantization` pass off, which would otherwise quantize those fp32
weights itself. See benchmarks/RESULTS.md ("Throughput") for the speed and accuracy measured.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# onnxruntime passes turned off for every session: this one re-quantizes the fp32 weights a quantized graph
# keeps on purpose (see the module docstring); it does nothing to graphs without QDQ nodes
DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]

# faces per calibration pass: bounds a pull's memory (4-5 GB measured) while the first pass still sees nearly the
# largest activations. Fed one face at a time, the first face's range set a bin width so fine that the 99.999th
# percentile clipped more: arcface-mbf-int8 lost 0.11 points of accuracy on people_celeba, against 0.06 in
# passes of 32 (measured, benchmarks/bench_throughput.py)
CALIBRATION_CHUNK = 32


def split_prelu(model: Any, as_conv: bool = False) -> int:
    """Rewrite every PRelu whose slope is a constant per-channel (C,1,1) or scalar tensor as
    a·x + (1 - a)·relu(x), in place; returns how many were rewritten.

    `as_conv=True` writes the two per-channel products as depthwise 1×1 convolutions, for a graph about to
    be quantized: onnxruntime runs an INT8 per-channel multiplication as a broadcasting QLinearMul (34 % of
    INT8 SFace's time, measured) but a depthwise 1×1 QLinearConv at a third of that cost."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    nodes, count = [], 0
    for k, node in enumerate(graph.node):
        slope = constants.get(node.input[1]) if node.op_type == "PRelu" else None
        if slope is None:
            nodes.append(node)
            continue
        a = numpy_helper.to_array(slope).astype(np.float32)
        if not (a.size == 1 or (a.ndim == 3 and a.shape[1:] == (1, 1))):
            nodes.append(node)  # another broadcast (e.g. over the last axis): left as it is
            continue
        x, y, prefix = node.input[0], node.output[0], f"facelens_prelu{k}_"
        relu = helper.make_node("Relu", [x], [prefix + "relu"], name=prefix + "relu")
        total = helper.make_node("Add", [prefix + "ax", prefix + "br"], [y], name=prefix + "sum")
        if as_conv and a.ndim == 3:
            channels = a.shape[0]
            graph.initializer.extend([numpy_helper.from_array(a.reshape(channels, 1, 1, 1), prefix + "a"),
                                      numpy_helper.from_array((1.0 - a).reshape(channels, 1, 1, 1),
                                                              prefix + "one_minus_a")])
            products = [helper.make_node("Conv", [x, prefix + "a"], [prefix + "ax"], name=prefix + "ax",
                                         group=channels, kernel_shape=[1, 1]),
                        helper.make_node("Conv", [prefix + "relu", prefix + "one_minus_a"], [prefix + "br"],
                                         name=prefix + "br", group=channels, kernel_shape=[1, 1])]
        else:
            graph.initializer.append(numpy_helper.from_array(1.0 - a, prefix + "one_minus_a"))
            products = [helper.make_node("Mul", [x, node.input[1]], [prefix + "ax"], name=prefix + "ax"),
                        helper.make_node("Mul", [prefix + "relu", prefix + "one_minus_a"], [prefix + "br"],
                                         name=prefix + "br")]
        nodes += [relu, *products, total]
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def fast_graph(path: str | Path) -> bytes | None:
    """The model's bytes with the load-time rewrites applied, or None when there is nothing to rewrite
    (the session then loads the file itself)."""
    import onnx

    model = onnx.load(str(path))
    return model.SerializeToString() if split_prelu(model) else None


@contextlib.contextmanager
def _logging_off() -> Any:
    before = logging.root.manager.disable  # the caller's own setting comes back afterwards
    logging.disable(max(before, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(before)


def quantize_recognizer(source: Path, dest: Path, calibration_crops: np.ndarray, mean: float, scale: float,
                        min_cosine: float = 0.95) -> dict[str, float]:
    """Write a static per-channel QDQ INT8 version of an fp32 recognizer to `dest`.

    `calibration_crops`: aligned 112×112 BGR faces (their mirror images are added). The result is checked
    against the fp32 model on those faces: a mean cosine below `min_cosine` raises, and nothing is
    written. Returns {"faces", "mean_cosine", "min_cosine"}."""
    import onnx
    import onnxruntime as ort
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from facelens.embed.arcface import crops_to_blob
    from facelens.errors import ModelIntegrityError

    crops = np.concatenate([calibration_crops, calibration_crops[:, :, ::-1]])
    with tempfile.TemporaryDirectory(prefix="facelens-int8-") as tmp:
        work = Path(tmp)
        model = onnx.load(str(source))
        opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset < 13:  # per-channel QDQ needs opset 13; the converter cannot go down (SFace's file is 15)
            model = version_converter.convert_version(model, 13)
        split_prelu(model, as_conv=True)
        onnx.save(model, work / "fp32.onnx")
        quant_pre_process(str(work / "fp32.onnx"), str(work / "pre.onnx"))
        pre = onnx.load(str(work / "pre.onnx"))
        input_name = pre.graph.input[0].name
        weights = {i.name: list(i.dims) for i in pre.graph.initializer}
        grouped = [n.name for n in pre.graph.node if n.op_type == "Conv" and len(weights.get(n.input[1], [])) > 1
                   and weights[n.input[1]][1] > 1 and any(a.name == "group" and a.i > 1 for a in n.attribute)]

        class Faces(CalibrationDataReader):
            """CALIBRATION_CHUNK faces a call: the calibrator folds each chunk's activations into its
            histograms and drops them (in one pass it keeps every activation of every face: about 60 MB a
            face for SFace, more memory than a small machine has). The first chunk sets the histograms' bin
            width, so it is large enough to hold nearly the largest activations (see CALIBRATION_CHUNK)."""

            def __init__(self) -> None:
                self.items = iter(range(len(crops)))

            def __len__(self) -> int:  # rounded up: the quantizer wants whole chunks; set_range clips
                return -(-len(crops) // CALIBRATION_CHUNK) * CALIBRATION_CHUNK

            def set_range(self, start_index: int, end_index: int) -> None:
                self.items = iter(range(start_index, min(end_index, len(crops))))

            def get_next(self) -> dict[str, np.ndarray] | None:
                i = next(self.items, None)
                return None if i is None else {input_name: crops_to_blob(crops[i : i + 1], mean, scale)}

        # the quantizer prints its progress and logs a warning about the final BatchNorm's rank-1 weight
        with contextlib.redirect_stdout(io.StringIO()), _logging_off():
            quantize_static(str(work / "pre.onnx"), str(work / "int8.onnx"), Faces(),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile,
                            nodes_to_exclude=grouped, extra_options={"CalibStridedMinMax": CALIBRATION_CHUNK})
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        outputs = []
        for name in ("fp32.onnx", "int8.onnx"):
            session = ort.InferenceSession(str(work / name), opts, providers=["CPUExecutionProvider"],
                                           disabled_optimizers=DISABLED_OPTIMIZERS)
            out = np.concatenate([session.run(None, {input_name: crops_to_blob(crops[i : i + 32], mean, scale)})[0]
                                  for i in range(0, len(crops), 32)])
            outputs.append(out / np.linalg.norm(out, axis=1, keepdims=True))
        cosine = (outputs[0] * outputs[1]).sum(1)
        report = {"faces": float(len(calibration_crops)), "mean_cosine": float(cosine.mean()),
                  "min_cosine": float(cosine.min())}
        if report["mean_cosine"] < min_cosine:
            raise ModelIntegrityError(f"{dest.name}: the INT8 model's embeddings differ from fp32's (mean cosine "
                                      f"{report['mean_cosine']:.3f} < {min_cosine}); not installed")
        shutil.move(str(work / "int8.onnx"), str(dest))
    return report


def build_int8_recognizer(entry: Any, sources: Path, source: Path, dest: Path) -> dict[str, float]:
    """The pull-time "int8" conversion of a registry entry: find the faces of the calibration photos with the
    fp32 detector file shipped beside the recognizer (SCRFD, or YuNet for the licence-clean SFace, so its
    build opens no non-commercial file), align them on the detector's five points, quantize. Repaired copies
    of OpenCV Zoo's files live in a temporary folder, gone however the build ends."""
    from facelens.detect.scrfd import SCRFD
    from facelens.detect.yunet import YuNet
    from facelens.models.onnxfix import repair

    convert = entry.convert
    yunet = convert.get("detector_kind") == "yunet"
    with tempfile.TemporaryDirectory(prefix="facelens-int8-build-") as tmp:
        detector_file, model_file = sources / convert["detector"], source
        # OpenCV Zoo's files (YuNet, SFace) are repaired first, as their own entries are at pull
        if yunet:
            detector_file = Path(tmp) / "detector.onnx"
            repair(sources / convert["detector"], detector_file, dynamic_hw=True)
        if convert.get("repair"):
            model_file = Path(tmp) / "recognizer.onnx"
            repair(source, model_file)
        crops = _calibration_faces(entry, sources, detector_file, YuNet if yunet else SCRFD)
        if not crops:
            from facelens.errors import ModelIntegrityError

            raise ModelIntegrityError(f"{entry.name}: no calibration face found; not installed")
        return quantize_recognizer(model_file, dest, np.stack(crops), convert["mean"], convert["scale"])


def _calibration_faces(entry: Any, sources: Path, detector_file: Path, base: type) -> list[np.ndarray]:
    """Aligned 112x112 crops of every face the detector file finds in the entry's calibration photos."""
    import onnxruntime as ort

    from facelens.align import norm_crop
    from facelens.io import load_image

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(detector_file), opts, providers=["CPUExecutionProvider"])

    class FileDetector(base):  # type: ignore[misc, valid-type]  # the checked file in hand, not the cache's
        def _session(self) -> object:
            return session

    detector = FileDetector()
    crops = []
    for name in entry.convert["calibration"]:
        image = load_image(sources / name)
        crops += [norm_crop(image, face.landmarks) for face in detector.detect(image) if face.landmarks is not None]
    return crops
