"""PNG/JPEG as people have them: 8- and 16-bit greyscale, RGB(A), palette, EXIF orientation.

Every file is written into ``tmp_path`` by Pillow or imageio; references are the arrays
written, numpy's rotations and the ITU-R 601-2 weights, not our reader.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from tumorscope.data.images import read_image

H, W = 37, 41  # odd, unequal sides: a rotation or transpose shows
ORIENTATION = 0x0112


def ramp(dtype: type, top: int) -> np.ndarray:
    """``(H, W)`` values from 0 to ``top`` (both ends present), no two neighbours equal."""
    return np.linspace(0, top, H * W).round().astype(dtype).reshape(H, W)


def colour() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def luma(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_16_bit_png_by_pillow_keeps_its_values(tmp_path: Path) -> None:
    values = ramp(np.uint16, 65535)
    Image.fromarray(values).save(tmp_path / "ct16.png")
    with Image.open(tmp_path / "ct16.png") as im:
        assert im.mode.startswith("I")  # really stored with 16 bits
    arr, meta = read_image(tmp_path / "ct16.png")
    assert arr.dtype == np.float32 and arr.max() == 65535.0
    np.testing.assert_array_equal(arr, values.astype(np.float32))
    assert meta.shape == (H, W)


def test_16_bit_png_by_imageio_keeps_its_values(tmp_path: Path) -> None:
    values = ramp(np.uint16, 4095)  # a 12-bit scan in 16-bit samples
    iio.imwrite(tmp_path / "mr12.png", values)
    arr, _ = read_image(tmp_path / "mr12.png")
    np.testing.assert_array_equal(arr, values.astype(np.float32))


def test_8_bit_png_keeps_0_to_255(tmp_path: Path) -> None:
    values = ramp(np.uint8, 255)
    Image.fromarray(values).save(tmp_path / "grey.png")
    arr, _ = read_image(tmp_path / "grey.png")
    np.testing.assert_array_equal(arr, values.astype(np.float32))


def test_rgb_png_is_itu_601_luma_rounded(tmp_path: Path) -> None:
    rgb = colour()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    arr, _ = read_image(tmp_path / "rgb.png")
    assert arr.shape == (H, W)
    assert np.abs(arr - luma(rgb)).max() <= 0.5 + 1e-6
    np.testing.assert_array_equal(arr, np.asarray(Image.fromarray(rgb).convert("L"), np.float32))


def test_rgb_jpeg_is_luma_of_its_decoded_colour(tmp_path: Path) -> None:
    Image.fromarray(colour()).save(tmp_path / "photo.jpg", quality=90)
    with Image.open(tmp_path / "photo.jpg") as im:
        assert im.mode == "RGB"
        decoded = np.asarray(im)
    arr, _ = read_image(tmp_path / "photo.jpg")
    assert np.abs(arr - luma(decoded)).max() <= 0.5 + 1e-6


def test_rgba_png_is_composited_on_black(tmp_path: Path) -> None:
    rgb = colour()
    alpha = np.zeros((H, W), np.uint8)
    alpha[:, 10:20] = 255
    alpha[:, 20:30] = 128
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "rgba.png")
    arr, _ = read_image(tmp_path / "rgba.png")
    expected = luma(rgb) * alpha / 255.0
    assert np.abs(arr - expected).max() <= 1.0 + 1e-6  # two roundings: composite, then L
    assert (arr[:, :10] == 0).all() and (arr[:, 30:] == 0).all()  # transparent reads black
    assert np.abs(arr[:, 10:20] - luma(rgb)[:, 10:20]).max() <= 0.5 + 1e-6


def test_grey_with_alpha_and_transparent_palette_entry(tmp_path: Path) -> None:
    grey = ramp(np.uint8, 255)
    alpha = np.where(np.arange(W) < 20, 255, 0).astype(np.uint8)[None].repeat(H, axis=0)
    Image.fromarray(np.dstack([grey, alpha]), mode="LA").save(tmp_path / "la.png")
    arr, _ = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(arr, np.where(alpha == 255, grey, 0).astype(np.float32))
    index = (np.arange(H * W) % 3).reshape(H, W).astype(np.uint8)
    pal = Image.fromarray(index, mode="P")
    pal.putpalette([200, 200, 200, 0, 0, 255, 255, 255, 255])
    pal.save(tmp_path / "pal.png", transparency=2)  # palette entry 2 (white) is transparent
    arr, _ = read_image(tmp_path / "pal.png")
    expected = np.choose(index, [200.0, round(0.114 * 255), 0.0])
    np.testing.assert_array_equal(arr, expected.astype(np.float32))


@pytest.mark.parametrize(("tag", "turns"), [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_of_a_jpeg_is_applied(tmp_path: Path, tag: int, turns: int) -> None:
    path = tmp_path / f"phone_{tag}.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = tag
    Image.fromarray(ramp(np.uint8, 255)).save(path, exif=exif, quality=95)
    with Image.open(path) as im:
        assert im.getexif()[ORIENTATION] == tag
        stored = np.asarray(im.convert("L"), dtype=np.float32)  # as stored, not turned
    arr, meta = read_image(path)
    # EXIF 6 = turn 90° clockwise to view (np.rot90 k=-1), 8 = counter-clockwise, 3 = 180°.
    np.testing.assert_array_equal(arr, np.rot90(stored, turns))
    assert meta.shape == arr.shape == ((W, H) if tag in (6, 8) else (H, W))


def test_exif_orientation_of_a_png_turns_the_written_array(tmp_path: Path) -> None:
    values = ramp(np.uint8, 255)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(values).save(tmp_path / "turned.png", exif=exif)
    arr, _ = read_image(tmp_path / "turned.png")
    np.testing.assert_array_equal(arr, np.rot90(values, -1).astype(np.float32))
