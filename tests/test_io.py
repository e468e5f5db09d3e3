"""Bad and unusual inputs: each gives one clear ImageError or a correct image."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelens.errors import ImageError
from facelens.io import expand_paths, load_image


@pytest.mark.parametrize(
    ("name", "reason"),
    [("corrupted.png", "not an image"), ("empty.png", "not an image"), ("truncated.jpg", "truncated")],
)
def test_corrupt_fixtures_give_clear_errors(data, name, reason):
    with pytest.raises(ImageError, match=reason) as info:
        load_image(data / "corrupt" / name)
    message = str(info.value)
    assert name in message and "\n" not in message


def test_every_corrupt_fixture_is_rejected(data):
    files = sorted((data / "corrupt").iterdir())
    assert files
    for path in files:
        with pytest.raises(ImageError):
            load_image(path)


def test_missing_directory_and_text(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)
    empty = tmp_path / "zero.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("hello, not a jpeg")
    with pytest.raises(ImageError, match="not an image"):
        load_image(text)


def test_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(path)
    monkeypatch.setenv("FACELENS_MAX_PIXELS", "100000")
    with pytest.raises(ImageError, match="MP limit"):
        load_image(path)


def test_tiny_image(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(ImageError, match="too small"):
        load_image(path)


def _rgb_gradient() -> Image.Image:
    x = np.linspace(0, 255, 64, dtype=np.uint8)
    arr = np.stack([np.tile(x, (48, 1)), np.tile(x[::-1], (48, 1)), np.full((48, 64), 128, np.uint8)], axis=2)
    return Image.fromarray(arr, "RGB")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1", "F"])
def test_modes_decode_to_bgr_uint8(tmp_path, mode):
    img = _rgb_gradient()
    if mode == "I;16":
        gray = np.asarray(img.convert("L")).astype(np.uint16) * 257
        img = Image.fromarray(gray)  # 16-bit greyscale
        path = tmp_path / "x.png"
    elif mode == "F":
        img = img.convert("F")
        path = tmp_path / "x.tiff"
    else:
        img = img.convert(mode)
        path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3) and out.flags.c_contiguous
    if mode in {"L", "I;16"}:
        # a 16-bit grey level v*257 must come back as v
        expected = np.asarray(_rgb_gradient().convert("L"))
        assert np.abs(out[:, :, 0].astype(int) - expected).max() <= 1


def test_rgba_transparent_is_white(tmp_path):
    path = tmp_path / "t.png"
    Image.new("RGBA", (32, 32), (255, 0, 0, 0)).save(path)
    assert (load_image(path) == 255).all()


def test_exif_orientation_applied(tmp_path):
    img = _rgb_gradient()  # 64 wide, 48 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape[:2] == (64, 48)


def test_arrays_and_bytes(tmp_path):
    gray = np.zeros((40, 50), np.uint8)
    assert load_image(gray).shape == (40, 50, 3)
    assert load_image(np.zeros((40, 50, 4), np.uint8)).shape == (40, 50, 3)
    assert load_image(np.ones((40, 50, 3), np.float32)).max() == 255
    with pytest.raises(ImageError, match="not an image"):
        load_image(np.zeros((4, 40, 50, 3), np.uint8))
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    path = tmp_path / "a.png"
    _rgb_gradient().save(path)
    np.testing.assert_array_equal(load_image(path.read_bytes()), load_image(path))


def test_expand_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    _rgb_gradient().save(tmp_path / "sub" / "b.png")
    _rgb_gradient().save(tmp_path / "a.jpg")
    (tmp_path / "readme.txt").write_text("x")
    found = expand_paths([tmp_path, tmp_path / "missing.jpg"])
    assert [p.name for p in found] == ["a.jpg", "b.png", "missing.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="no image files"):
        expand_paths([empty])


def test_paths_are_reported_verbatim(tmp_path):
    weird = tmp_path / "a [b].jpg"
    with pytest.raises(ImageError) as info:
        load_image(weird)
    assert str(Path(weird)) in str(info.value)


def test_reduced_jpeg_decode_maps_back(tmp_path):
    from facelens.io import decode_image

    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (1100, 900, 3), dtype=np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(arr).save(path, quality=90)
    full = decode_image(path)
    reduced = decode_image(path, max_side=256)
    assert full.scale == 1.0 and full.pixels.shape == (1100, 900, 3)
    # 1/4 scale keeps the longest side >= 256 (1/8 would give 138)
    assert reduced.scale == 4.0 and reduced.pixels.shape == (275, 225, 3)
    assert (reduced.width, reduced.height) == (900, 1100)
    small = decode_image(path, max_side=1000)  # not at least twice max_side: decoded in full
    assert small.scale == 1.0
