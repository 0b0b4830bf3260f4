"""Single DICOM files: pydicom's own test files (compressed and not) as 2D images, and
multi-frame (Enhanced MR) files written by pydicom as volumes."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, apply_rescale
from pydicom.uid import EnhancedMRImageStorage, RLELossless, generate_uid

from tumorscope.data.dicom import read_dicom_frames, read_dicom_series
from tumorscope.data.dicomfile import (
    LUMA_WEIGHTS,
    frame_count,
    header_modality,
    is_dicom_file,
    modality_warnings,
    read_dicom_image,
)
from tumorscope.data.errors import (
    DicomDecoderError,
    DicomPixelDataError,
    DimensionError,
    SliceSpacingError,
    SpacingError,
    VolumeTooLargeError,
    VoxelTypeError,
)

IDENTITY_IOP = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def bundled(name: str) -> Path:
    """A test file shipped inside the installed pydicom (never downloaded)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} does not ship with this pydicom"
    return Path(str(path))


def dataset(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom doubts some values of its own test files
        return pydicom.dcmread(bundled(name))


def syntax_of(name: str) -> str:
    return str(dataset(name).file_meta.TransferSyntaxUID)


def luma(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


# ----------------------------------------------------------------- single-frame: decoding


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),
        ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),
        ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),
    ],
)
def test_lossless_compressed_mr_equals_the_uncompressed_file(name: str, syntax: str) -> None:
    assert syntax_of(name) == syntax  # really compressed, as the name says
    reference = dataset("MR_small.dcm").pixel_array  # Explicit VR Little Endian
    got = read_dicom_image(bundled(name))
    assert got.array.dtype == np.float32 and got.array.shape == (64, 64)
    np.testing.assert_array_equal(got.array, reference.astype(np.float32))
    assert got.modality == "MR"


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("SC_rgb_rle.dcm", "1.2.840.10008.1.2.5"),
        ("SC_rgb_gdcm_KY.dcm", "1.2.840.10008.1.2.4.91"),  # JPEG 2000
        ("SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70"),  # JPEG lossless
    ],
)
def test_lossless_colour_codecs_agree_and_grey_is_itu_601_luma(name: str, syntax: str) -> None:
    assert syntax_of(name) == syntax
    got = read_dicom_image(bundled(name)).array
    rle = dataset("SC_rgb_rle.dcm").pixel_array  # the same image, RLE lossless
    np.testing.assert_allclose(got, luma(rle), atol=1e-3)
    # Top-left is pure red (255, 0, 0) in pydicom's SC_rgb images.
    assert got[0, 0] == pytest.approx(0.299 * 255, abs=1e-3)
    pillow = np.asarray(Image.fromarray(rle).convert("L"), dtype=np.float64)
    assert np.abs(got - pillow).max() <= 0.5 + 1e-3  # Pillow rounds the same weights


def test_lossy_jpeg_baseline_within_one_level_of_the_decompressed_copy() -> None:
    assert syntax_of("SC_rgb_jpeg.dcm") == "1.2.840.10008.1.2.4.50"
    reference = dataset("SC_rgb_jpeg_dcmd.dcm")  # dcmtk's uncompressed copy of it
    assert not reference.file_meta.TransferSyntaxUID.is_compressed
    got = read_dicom_image(bundled("SC_rgb_jpeg.dcm")).array
    # Lossy decoders round differently by at most one level per sample.
    assert np.abs(got - luma(reference.pixel_array)).max() <= 1.0 + 1e-3


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPGExtended.dcm", "693_J2KI.dcm"])
def test_other_compressed_files_match_pydicoms_decoded_rescaled_pixels(name: str) -> None:
    ds = dataset(name)
    got = read_dicom_image(bundled(name))
    np.testing.assert_allclose(got.array, apply_rescale(ds.pixel_array, ds), rtol=1e-6)


def test_rescale_and_spacing_of_a_ct_slice() -> None:
    ds = dataset("CT_small.dcm")
    got = read_dicom_image(bundled("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(got.array, hu.astype(np.float32))
    assert got.meta.spacing == tuple(float(v) for v in ds.PixelSpacing)
    assert got.meta.shape == (128, 128) and got.modality == "CT"
    np.testing.assert_allclose(np.diag(got.meta.affine), [*got.meta.spacing, 1.0, 1.0])


def test_monochrome1_is_inverted_over_the_stored_range(tmp_path: Path) -> None:
    ds = dataset("CT_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "inverted.dcm"
    ds.save_as(path)
    slope, inter = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert int(ds.BitsStored) == 16 and int(ds.PixelRepresentation) == 1
    lo, hi = -(2**15) * slope + inter, (2**15 - 1) * slope + inter
    hu = ds.pixel_array * slope + inter
    got = read_dicom_image(path).array
    np.testing.assert_array_equal(got, (lo + hi - hu).astype(np.float32))
    assert np.argmax(got) == np.argmin(hu)  # the darkest stored pixel reads brightest


def test_palette_colour_through_its_lookup_table() -> None:
    ds = dataset("examples_palette.dcm")
    got = read_dicom_image(bundled("examples_palette.dcm"))
    np.testing.assert_allclose(got.array, luma(apply_color_lut(ds.pixel_array, ds)), rtol=1e-5)
    assert got.modality == "US"


def test_imager_pixel_spacing_and_bad_spacing(tmp_path: Path) -> None:
    ds = dataset("MR_small.dcm")
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.2, 0.3]
    ds.save_as(tmp_path / "cr.dcm")
    assert read_dicom_image(tmp_path / "cr.dcm").meta.spacing == (0.2, 0.3)
    ds.ImagerPixelSpacing = [0.0, 0.3]
    ds.save_as(tmp_path / "flat.dcm")
    with pytest.raises(SpacingError, match=r"flat\.dcm: ImagerPixelSpacing \[0\.0, 0\.3\]"):
        read_dicom_image(tmp_path / "flat.dcm")


# ----------------------------------------------------------------- decoders missing or failing


def test_missing_decoder_names_file_syntax_and_packages() -> None:
    path = bundled("MR_small_jpeg_ls_lossless.dcm")
    # A fresh interpreter where pydicom's only JPEG-LS plugin (pylibjpeg) is taken away, as
    # on an install without pylibjpeg-libjpeg; this process's decoders stay untouched.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pydicom.pixels import get_decoder\n"
        "from pydicom.uid import JPEGLSLossless\n"
        "get_decoder(JPEGLSLossless).remove_plugin('pylibjpeg')\n"
        "from tumorscope.data.dicomfile import read_dicom_image\n"
        "from tumorscope.data.errors import DicomDecoderError\n"
        "try:\n"
        "    read_dicom_image(Path(sys.argv[1]))\n"
        "except DicomDecoderError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{path}: pixel data is compressed as JPEG-LS Lossless Image Compression "
        "(1.2.840.10008.1.2.4.80) and no installed decoder reads it: "
        "pip install pylibjpeg pylibjpeg-libjpeg"
    )


def test_syntax_pydicom_cannot_decode_and_unknown_syntax(tmp_path: Path) -> None:
    ds = dataset("MR_small_jp2klossless.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"  # JPEG 2000 Part 2
    ds.save_as(tmp_path / "part2.dcm")
    with pytest.raises(
        DicomDecoderError, match=r"part2\.dcm: .*Part 2 Multi-component.*no decoder"
    ):
        read_dicom_image(tmp_path / "part2.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"
    ds.save_as(tmp_path / "private.dcm")
    with pytest.raises(DicomDecoderError, match=r"unknown transfer syntax 1\.2\.3\.4\.5\.6"):
        read_dicom_image(tmp_path / "private.dcm")


def test_corrupt_codestream_is_one_line_naming_the_syntax(tmp_path: Path) -> None:
    ds = dataset("MR_small_jp2klossless.dcm")
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])  # a broken J2K stream
    ds.save_as(tmp_path / "broken.dcm")
    with pytest.raises(DicomPixelDataError) as err:
        read_dicom_image(tmp_path / "broken.dcm")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'broken.dcm'}: pixel data cannot be decoded as JPEG 2000")
    assert "\n" not in msg


def test_series_reader_refuses_a_missing_decoder_before_decoding(tmp_path: Path) -> None:
    ds = dataset("MR_small_jp2klossless.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"
    (tmp_path / "s").mkdir()
    ds.save_as(tmp_path / "s" / "IM1.dcm")
    with pytest.raises(DicomDecoderError, match=r"IM1\.dcm: .*which pydicom has no decoder"):
        read_dicom_series(tmp_path / "s")


# ----------------------------------------------------------------- multi-frame volumes


def write_enhanced(
    path: Path,
    frames: np.ndarray,
    z: list[float],
    *,
    spacing: tuple[float, float] = (0.5, 0.75),
    rescale: tuple[float, float] = (2.0, -5.0),
    compress: bool = False,
) -> Path:
    """An Enhanced MR file of ``frames`` ``(F, R, C)`` int16 at positions ``z`` (mm), one
    orientation, spacing and rescale shared by all frames (functional groups)."""
    ds = dataset("MR_small.dcm")
    for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, key)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames.shape
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = IDENTITY_IOP
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = list(spacing)
    shared.PixelValueTransformationSequence = [Dataset()]
    shared.PixelValueTransformationSequence[0].RescaleSlope = rescale[0]
    shared.PixelValueTransformationSequence[0].RescaleIntercept = rescale[1]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for zk in z:
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [-10.0, 20.0, zk]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.ascontiguousarray(frames.astype(np.int16)).tobytes()
    if compress:
        ds.compress(RLELossless)  # pydicom's own RLE encoder
    ds.save_as(path, enforce_file_format=True)
    return path


def _frames(n: int) -> np.ndarray:
    base = dataset("MR_small.dcm").pixel_array.astype(np.int16)[:37, :41]
    return np.stack([base + 10 * k for k in range(n)])


@pytest.mark.parametrize("compress", [False, True])
def test_enhanced_mr_frames_sorted_rescaled_and_placed(tmp_path: Path, compress: bool) -> None:
    frames = _frames(4)
    z = [6.0, 0.0, 9.0, 3.0]  # stored out of order
    path = write_enhanced(tmp_path / "enhanced.dcm", frames, z, compress=compress)
    assert frame_count(path) == 4
    vol, meta = read_dicom_frames(path)
    assert vol.dtype == np.float32 and vol.shape == (41, 37, 4)
    # Identity orientation: canonical RAS flips both in-plane axes (LPS → RAS).
    for k, stored in enumerate(np.argsort(z)):
        expected = frames[stored].astype(np.float64) * 2.0 - 5.0
        np.testing.assert_array_equal(vol[:, :, k], expected.T[::-1, ::-1])
    np.testing.assert_allclose(meta.spacing, (0.75, 0.5, 3.0))
    corner = meta.affine @ np.array([40, 36, 0, 1.0])  # first stored pixel of the lowest frame
    np.testing.assert_allclose(corner[:3], [10.0, -20.0, 0.0], atol=1e-6)
    assert meta.path == path and meta.orientation == ("L", "P", "S")


def test_frames_at_one_position_or_uneven_are_named(tmp_path: Path) -> None:
    echoes = write_enhanced(tmp_path / "echoes.dcm", _frames(4), [0.0, 3.0, 0.0, 3.0])
    with pytest.raises(SliceSpacingError, match=r"echoes\.dcm: slices at the same position: frame"):
        read_dicom_frames(echoes)
    uneven = write_enhanced(tmp_path / "uneven.dcm", _frames(3), [0.0, 3.0, 8.0])
    with pytest.raises(SliceSpacingError, match=r"uneven slice spacing .*frame 2→frame 3 5\.000"):
        read_dicom_frames(uneven)


def test_multi_frame_without_per_frame_geometry_is_refused() -> None:
    path = bundled("rtdose.dcm")  # 15 frames, no functional groups
    assert frame_count(path) == 15
    with pytest.raises(SliceSpacingError) as err:
        read_dicom_frames(path)
    assert str(err.value) == (
        f"{path}: 15 frames and no per-frame geometry (PerFrameFunctionalGroupsSequence "
        "with PlanePositionSequence): the frames cannot be placed as a volume"
    )
    with pytest.raises(DimensionError, match="15 frames: a multi-frame file is a volume"):
        read_dicom_image(path)


def test_colour_multi_frame_and_budget_refused_before_decoding(tmp_path: Path) -> None:
    with pytest.raises(VoxelTypeError, match="3 samples per pixel"):
        read_dicom_frames(bundled("SC_rgb_rle_2frame.dcm"))
    path = write_enhanced(tmp_path / "big.dcm", _frames(4), [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(VolumeTooLargeError, match="file declares 6068 voxels"):
        read_dicom_frames(path, max_voxels=1000)
    with pytest.raises(DimensionError, match="one frame: a 2D image"):
        read_dicom_frames(bundled("MR_small.dcm"))


# ----------------------------------------------------------------- headers and modality


def test_dicom_files_are_recognised_by_suffix_or_prefix(tmp_path: Path) -> None:
    raw = bundled("MR_small.dcm").read_bytes()
    (tmp_path / "IM0001").write_bytes(raw)
    (tmp_path / "notes").write_bytes(b"x" * 200)
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    assert is_dicom_file(tmp_path / "IM0001") and is_dicom_file(tmp_path / "junk.dcm")
    assert not is_dicom_file(tmp_path / "notes") and not is_dicom_file(tmp_path)
    assert frame_count(tmp_path / "junk.dcm") == 1  # its reader names the fault
    assert header_modality(tmp_path / "IM0001") == "MR"
    assert header_modality(tmp_path / "junk.dcm") is None


@pytest.mark.parametrize(
    ("modality", "profile", "warned"),
    [
        ("MR", "brain-mri", False),
        ("CT", "brain-mri", True),
        ("US", "brain-mri", True),
        ("XC", "brain-mri", True),
        ("MR", "petct", True),
        ("CT", "petct", False),
        ("PT", "petct", False),
        (None, "brain-mri", False),
    ],
)
def test_modality_checked_against_the_profile(
    modality: str | None, profile: str, warned: bool
) -> None:
    got = modality_warnings(modality, profile)
    assert len(got) == int(warned)
    if warned:
        assert got[0].startswith(f"DICOM Modality is {modality}") and profile in got[0]


def test_luma_weights_are_itu_601() -> None:
    assert LUMA_WEIGHTS == (0.299, 0.587, 0.114)
