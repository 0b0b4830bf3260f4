"""PNG/JPEG images read with their size checked from the header, before any pixel is decoded.

Files are sniffed by their magic bytes, opened by Pillow restricted to the format their
extension names, and refused from the header alone when they declare more pixels, a longer
side or a more extreme aspect ratio than :mod:`tumorscope.data.limits` allows (an 86 KB
PNG can declare 88 million pixels). Pillow's own decompression-bomb limit stays on and its
warning is an error too. Pixels come back as a viewer shows them (EXIF orientation applied)
and as stored otherwise: greyscale keeps its 8- or 16-bit values, colour becomes grey by one
stated rule (:func:`read_image`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tumorscope.data.errors import (
    DecompressionBombError,
    ExtensionMismatchError,
    ImageTooLargeError,
    NotImageError,
    ReadError,
    TruncatedFileError,
)
from tumorscope.data.limits import (
    MAX_IMAGE_FILE_BYTES,
    check_image_size,
    check_jpeg_scans,
    human_bytes,
)
from tumorscope.data.readers import check_file, sniff_format
from tumorscope.data.types import DataError, ImageMeta

_HEAD_BYTES = 540
# Modes whose values are kept as stored: 16-bit and 32-bit greyscale (Pillow gives them no alpha).
_WIDE_GREY_MODES = ("I", "F", "I;16", "I;16B", "I;16L")


def read_image(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """Read a PNG/JPEG image as ``(H, W)`` float32 greyscale, values as stored.

    The rule, in order:

    - **Orientation:** an EXIF Orientation tag is applied (Pillow's
      ``ImageOps.exif_transpose``): the array is the image as a viewer shows it, so a phone
      photo stored sideways comes back upright (its height and width swapped).
    - **Greyscale** keeps its values: 0–255 for 8 bits, 0–65535 for a 16-bit PNG.
    - **Alpha** (RGBA, LA, a palette or a tRNS colour with transparency) is composited on
      black (Pillow's ``Image.alpha_composite``): a pixel of alpha ``a`` keeps ``a / 255`` of
      its grey value, a fully transparent pixel reads 0, as a scan's empty background does.
    - **Colour** (RGB, palette, CMYK) becomes grey by luminance, ITU-R 601-2 as Pillow's
      ``"L"`` conversion: ``L = 0.299 R + 0.587 G + 0.114 B``, rounded to an integer. Pillow
      reads 16-bit colour PNGs with 8 bits per sample, so their grey is 0–255 too.

    The size is checked from the header first
    (:func:`~tumorscope.data.limits.check_image_size`); Pillow's decompression-bomb limit
    stays on and its warning (more than ``Image.MAX_IMAGE_PIXELS``) is an error too.

    Args:
        path: ``.png``, ``.jpg`` or ``.jpeg`` file.

    Returns:
        ``(array, meta)`` with ``meta.spacing == (1.0, 1.0)``, an identity affine and
        ``meta.shape`` the shape after the EXIF orientation.

    Raises:
        DataError: A subclass naming the file and the fault.
    """
    path = Path(path)
    check_file(path)
    size = path.stat().st_size
    if size > MAX_IMAGE_FILE_BYTES:
        raise ImageTooLargeError(
            path,
            f"file of {human_bytes(size)} is above the {human_bytes(MAX_IMAGE_FILE_BYTES)} cap",
        )
    with path.open("rb") as f:
        head = f.read(_HEAD_BYTES)
    fmt = sniff_format(head)
    expected = "png" if path.suffix.lower() == ".png" else "jpeg"
    if fmt != expected:
        if fmt is not None:
            raise ExtensionMismatchError(
                path, f"content is {fmt.upper()} but the extension is {path.suffix}"
            )
        raise NotImageError(
            path, f"not a {expected.upper()} image (unrecognised leading bytes {head[:8].hex()})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=[expected.upper()]) as im:
                width, height = im.size
                check_image_size(path, height, width)  # from the header: nothing decoded yet
                if expected == "jpeg":
                    check_jpeg_scans(path, path.read_bytes())
                im.load()
                arr = _to_grey(ImageOps.exif_transpose(im))
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecompressionBombError(path, f"decompression bomb refused: {e}") from None
    except UnidentifiedImageError:
        raise NotImageError(path, f"Pillow cannot identify the {expected.upper()} image") from None
    except (OSError, SyntaxError, EOFError, ValueError) as e:
        raise TruncatedFileError(path, f"image data is truncated or corrupt ({e})") from None
    except Exception as e:  # Pillow plugins raise other types on odd files; report, never crash
        raise ReadError(path, f"image cannot be decoded ({type(e).__name__}: {e})") from None
    meta = ImageMeta(
        path=path,
        shape=(int(arr.shape[0]), int(arr.shape[1])),
        spacing=(1.0, 1.0),
        affine=np.eye(4),
        original_shape=(int(arr.shape[0]), int(arr.shape[1])),
    )
    return arr, meta


def _to_grey(im: Image.Image) -> np.ndarray:
    """``(H, W)`` float32 grey of a decoded image by the rule of :func:`read_image`."""
    if im.mode in _WIDE_GREY_MODES:
        return np.asarray(im, dtype=np.float32)
    if im.has_transparency_data:
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, im.convert("RGBA"))
    if im.mode == "L":
        return np.asarray(im, dtype=np.float32)
    return np.asarray(im.convert("L"), dtype=np.float32)
