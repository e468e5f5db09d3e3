"""Reading and validating images. Every message a user sees about a bad input file is written here.

Decoding goes through Pillow (broad format support, EXIF orientation, a decompression-bomb guard);
the result is always a contiguous BGR uint8 array, the layout OpenCV and the models expect.
"""

from __future__ import annotations

import hashlib
import io as _io
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facelens.errors import ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".jfif"}
# read by `facelens.video` (PyAV); a GIF stays an image
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                            ".wmv", ".flv", ".3gp", ".ogv"})
DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: larger than any camera photo, far below what exhausts memory
MIN_SIDE = 16  # below this no detector can find a face
ORIENTATION_TAG = 0x0112


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (model checks, caches, gallery provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def max_pixels() -> int:
    value = os.environ.get("FACELENS_MAX_PIXELS")
    return int(value) if value and value.isdigit() else DEFAULT_MAX_PIXELS


ImageSource = str | os.PathLike[str] | bytes | np.ndarray | Image.Image


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to RGB uint8: 16-bit and float are rescaled, alpha is composited on white."""
    mode = img.mode
    if mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        elif mode == "I":
            # 32-bit integer images usually hold 16-bit data (PNG 16-bit greyscale decodes as "I")
            arr = arr / 257.0 if arr.max(initial=0) > 255 else arr
        else:
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        gray = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in {"RGBA", "LA", "PA"} or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def _rgb_to_bgr(rgb: np.ndarray) -> np.ndarray:
    # cv2 swaps channels in one pass, ~8x faster than a strided numpy copy on a large photo
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)


@dataclass(frozen=True)
class Decoded:
    """Pixels (BGR uint8) and how they relate to the file: original = pixels coordinates x `scale`."""

    pixels: np.ndarray
    scale: float
    width: int  # of the original, upright image
    height: int


def _decode(data: bytes | None, path: str | None, label: str, max_side: int = 0) -> Decoded:
    limit = max_pixels()
    scale = 1.0
    try:
        with Image.open(_io.BytesIO(data) if data is not None else path) as img:  # type: ignore[arg-type]
            width, height = img.size
            if width * height > limit:
                raise ImageError(
                    f"{label}: {width}x{height} is {width * height / 1e6:.0f} MP, over the "
                    f"{limit / 1e6:.0f} MP limit (set FACELENS_MAX_PIXELS to raise it)"
                )
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated formats: the first frame
            if max_side and img.format == "JPEG" and max(width, height) >= 2 * max_side:
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale in the DCT domain, several times faster than a
                # full decode; draft keeps the longest side >= max_side
                factor = max_side / max(width, height)
                img.draft(img.mode if img.mode in {"RGB", "L"} else "RGB",
                          (math.ceil(width * factor), math.ceil(height * factor)))
                scale = width / img.size[0]
            img.load()
            loaded_size = img.size
            if img.getexif().get(ORIENTATION_TAG, 1) != 1:  # transposing copies: only when needed
                img = ImageOps.exif_transpose(img) or img
            if img.size != loaded_size:  # rotated by 90 degrees: the original's sides swap too
                width, height = height, width
            rgb = _to_rgb_array(img)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: image is too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image, or a format that cannot be read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise ImageError(f"{label}: corrupt or truncated image ({reason})") from None
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{label}: image is {width}x{height}, too small (under {MIN_SIDE} px)")
    return Decoded(_rgb_to_bgr(rgb), scale, width, height)


def load_image(source: ImageSource, label: str | None = None) -> np.ndarray:
    """Load a path, encoded bytes, a Pillow image or an array as a BGR uint8 (H, W, 3) array.

    Arrays are taken as BGR (OpenCV's convention) when they have three channels; greyscale and
    BGRA arrays are converted. Raises `ImageError` with a one-line reason for anything unusable.
    """
    return decode_image(source, label).pixels


def decode_image(source: ImageSource, label: str | None = None, max_side: int = 0) -> Decoded:
    """Like `load_image`, but a JPEG whose longest side is at least 2 x `max_side` may be decoded at a
    reduced scale (never below `max_side`); `Decoded.scale` maps its coordinates back to the file's."""
    if isinstance(source, np.ndarray):
        pixels = _from_array(source, label or "array")
        return Decoded(pixels, 1.0, pixels.shape[1], pixels.shape[0])
    if isinstance(source, Image.Image):
        pixels = _rgb_to_bgr(_to_rgb_array(source))
        return Decoded(pixels, 1.0, pixels.shape[1], pixels.shape[0])
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise ImageError(f"{label or 'upload'}: empty file")
        return _decode(data, None, label or "upload", max_side)
    if not isinstance(source, str | os.PathLike):
        raise ImageError(f"{label or type(source).__name__}: not an image (give a path, encoded bytes, a Pillow "
                         f"image or an array, not a {type(source).__name__})")
    path = Path(source)
    name = label or str(path)
    if not path.exists():
        raise ImageError(f"{name}: no such file")
    if path.is_dir():
        raise ImageError(f"{name}: is a directory, not an image")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read ({exc.strerror})") from None
    if size == 0:
        raise ImageError(f"{name}: empty file")
    if not os.access(path, os.R_OK):
        raise ImageError(f"{name}: permission denied")
    return _decode(None, str(path), name, max_side)


def _from_array(arr: np.ndarray, label: str) -> np.ndarray:
    if arr.size == 0:
        raise ImageError(f"{label}: empty array")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            scale = 255.0 if float(np.nanmax(arr)) <= 1.0 else 1.0
            arr = np.clip(np.nan_to_num(arr) * scale, 0, 255).astype(np.uint8)
        elif arr.dtype == np.uint16:
            arr = (arr // 257).astype(np.uint8)
        else:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise ImageError(f"{label}: array of shape {arr.shape} is not an image (want HxW, HxWx3 or HxWx4)")
    if min(arr.shape[:2]) < MIN_SIDE:
        raise ImageError(f"{label}: image is {arr.shape[1]}x{arr.shape[0]}, too small (under {MIN_SIDE} px)")
    return np.ascontiguousarray(arr)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file (links, hard links and relative paths included): an output that
    is one of the inputs must be refused, whatever it is called."""
    try:
        return Path(a).exists() and Path(b).exists() and os.path.samefile(a, b)
    except (OSError, ValueError):
        return Path(a).resolve() == Path(b).resolve()


def expand_paths(paths: Iterable[str | os.PathLike[str]], recursive: bool = True,
                 confine_to: str | os.PathLike[str] | None = None, videos: bool = False) -> list[Path]:
    """Files as given, folders replaced by the images (and with `videos`, the videos) inside them (sorted).

    Missing paths stay in the list so the batch reports them; a folder with no image in it raises,
    since that is nearly always a typo. With `confine_to`, images found inside folders whose real
    path (symlinks followed) lies outside that folder are left out: a server reading a photos root on
    a client's behalf must not be led elsewhere by a link.
    """
    fence = Path(confine_to).resolve() if confine_to is not None else None

    def allowed(p: Path) -> bool:
        suffix = p.suffix.lower()
        return p.is_file() and (suffix in IMAGE_SUFFIXES or (videos and suffix in VIDEO_SUFFIXES)) and (
            fence is None or p.resolve().is_relative_to(fence))

    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if allowed(p))
            if not found:
                raise ImageError(f"{path}: folder holds no image{' or video' if videos else ''} files")
            out.extend(found)
        else:
            out.append(path)
    return out
