"""Every input ``Predictor`` takes, read and checked: 2D arrays, PNG/JPEG, 2D NIfTI,
single-frame DICOM files, and volumes (arrays, NIfTI files, multi-frame DICOM files,
``Case``, ``LoadedCase``, and any case folder or file a layout of
``tumorscope.data.layouts.LAYOUTS`` recognises: BraTS/HECKTOR case folders, DICOM series,
MSD and nnU-Net images), each cut exactly as training slices are and mapped back to its
own grid. A DICOM header's Modality that the model's profile was not trained on (a CT for
a brain-MRI model) adds a warning to the input; it never refuses it. Files are read by the data layer's own readers, so every input meets the
checks and budgets of :mod:`tumorscope.data.limits` that ``data validate`` reports, with
the same one-line fault.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes
from nibabel.orientations import aff2axcodes

from tumorscope.data.dicom import SOURCE as DICOM_SOURCE
from tumorscope.data.dicom import read_dicom_frames, series_modality
from tumorscope.data.dicomfile import (
    frame_count,
    header_modality,
    is_dicom_file,
    modality_warnings,
    read_dicom_image,
)
from tumorscope.data.imagefolder import load_image
from tumorscope.data.layout import discover, load_case, read_case
from tumorscope.data.layouts import get_layout
from tumorscope.data.limits import check_image_size, check_volume
from tumorscope.data.readers import (
    IMAGE_SUFFIXES,
    check_file,
    is_nifti_path,
    read_nifti,
    to_canonical,
)
from tumorscope.data.spec import IMAGE_CHANNEL, PreprocessSpec
from tumorscope.data.transforms import (
    prepare_image,
    preprocess_volume,
    restore_image_mask,
    restore_volume,
)
from tumorscope.data.types import Case, DataError, ImageMeta, LoadedCase
from tumorscope.inference.results import to_stored

ImageInput = np.ndarray | str | Path
VolumeInput = np.ndarray | str | Path | Case | LoadedCase
# More channels than any model takes (ModelConfig.in_channels <= 16): a 3D array is a volume.
_MAX_CHANNELS = 16


@dataclass
class Image2D:
    """A 2D input read for the model.

    ``data`` is ``(H, W)`` / ``(C, H, W)`` as given (arrays, PNG/JPEG, DICOM); ``image``
    the first channel in the input's own grid. A NIfTI slice is instead ``volume``: a
    one-slice canonical volume cut exactly as training slices are, its singleton axis moved
    from ``axis`` to the last place. ``meta`` is the geometry of a NIfTI slice or a DICOM
    file (its pixel spacing); ``modality`` a DICOM header's Modality (``MR``, ``CT``...).
    """

    data: np.ndarray
    label: str
    where: str
    image: np.ndarray
    meta: ImageMeta | None = None
    volume: LoadedCase | None = None
    axis: int = 2
    warnings: list[str] = field(default_factory=list)
    modality: str | None = None


def read_2d(img: ImageInput, name: str | None, i: int, n: int, spec: PreprocessSpec) -> Image2D:
    """Read and check the ``i``-th of ``n`` 2D inputs (``name`` overrides the default)."""

    n_ch = len(spec.channels)
    if isinstance(img, np.ndarray):
        label = name or ("array" if n == 1 else f"array_{i}")
        shape = tuple(img.shape)
        if img.ndim == 4 or (img.ndim == 3 and shape[0] > _MAX_CHANNELS):
            raise DataError(
                label,
                f"array of shape {shape} is a 3D volume where a 2D image is expected; "
                "use predict_volume",
            )
        if img.ndim == 3 and shape[0] not in (1, 3, n_ch):
            raise DataError(
                label,
                f"image has {shape[0]} channels; the model takes {n_ch} "
                f"({', '.join(spec.channels)}) or a greyscale (H, W) image",
            )
        if img.ndim not in (2, 3):
            raise DataError(label, f"array of shape {shape} is not (H, W) or (C, H, W)")
        check_image_size(label, shape[-2], shape[-1])
        if not np.issubdtype(img.dtype, np.number) or not np.isfinite(img).all():
            raise DataError(label, "image holds NaN, Inf or non-numeric values")
        data = img.astype(np.float32)
        if data.ndim == 2:
            grey = data
        else:  # an RGB array is averaged to grey by preprocessing; show what the model sees
            grey = data.mean(axis=0) if shape[0] == 3 and n_ch != 3 else data[0]
        return Image2D(data=data, label=label, where=label, image=grey)
    path = Path(img)
    stem = name or file_stem(path)
    if not (path.exists() or path.is_symlink()):
        raise DataError(path, "no such file")
    if path.is_dir():
        raise DataError(path, "is a folder; use predict_volume for case or DICOM folders")
    check_file(path)  # a dangling link, FIFO or device: one line, never a blocking open
    if is_nifti_path(path):
        return read_nifti_2d(path, stem, spec)
    if is_dicom_file(path):
        return read_dicom_2d(path, stem, spec)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(
            path, f"unsupported file type {path.suffix!r}: expected PNG, JPEG, NIfTI or DICOM"
        )
    arr, _ = load_image(path)
    return Image2D(data=arr, label=stem, where=str(path), image=arr)


def is_2d_input(path: Path) -> bool:
    """True for PNG/JPEG files, single-frame DICOM files and NIfTI files whose header
    declares one slice or 2 dims.

    Unreadable NIfTI headers count as volumes, unreadable DICOM headers as 2D images (their
    reader then names the fault).
    """

    if path.is_dir():
        return False
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    if is_dicom_file(path):
        return frame_count(path) == 1
    if is_nifti_path(path) and path.is_file():  # never open a FIFO or device: it may block
        try:
            shape = tuple(int(s) for s in nib.load(path).shape)  # type: ignore[attr-defined]
        except Exception:  # any header fault is reported by the volume reader
            return False
        return len(shape) == 2 or (len(shape) >= 3 and 1 in shape[:3])
    return False


def file_stem(path: Path) -> str:
    """File name without its image suffix (``.nii.gz`` counts as one)."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


# --------------------------------------------------------------------------- 2D inputs


def read_nifti_2d(path: Path, label: str, spec: PreprocessSpec) -> Image2D:
    """Read a 2D NIfTI (``(X, Y)`` or a volume with one singleton axis) as one slice."""
    canon, meta = read_nifti(path, planar=True)
    singles = [k for k, s in enumerate(canon.shape) if s == 1]
    if not singles:
        raise DataError(
            path, f"expected a 2D image, got a 3D volume of shape {canon.shape}; use predict_volume"
        )
    axis = 2 if 2 in singles else singles[0]
    plane = np.moveaxis(np.asarray(canon, dtype=np.float32), axis, 2)
    check_image_size(path, plane.shape[0], plane.shape[1])
    volume, warnings = single_channel(plane, meta, spec)
    if axis != 2:
        warnings.append(f"slice is not axial (stored orientation {''.join(meta.orientation)})")
    stored = to_stored(canon, meta)
    return Image2D(
        data=plane[:, :, 0],
        label=label,
        where=str(path),
        image=stored.reshape(plane_shape(stored.shape)),
        meta=meta,
        volume=volume,
        axis=axis,
        warnings=warnings,
    )


def read_dicom_2d(path: Path, label: str, spec: PreprocessSpec) -> Image2D:
    """Read a single-frame DICOM file as a 2D image, its Modality checked against the profile."""
    read = read_dicom_image(path)
    return Image2D(
        data=read.array,
        label=label,
        where=str(path),
        image=read.array,
        meta=read.meta,
        warnings=modality_warnings(read.modality, spec.profile),
        modality=read.modality,
    )


def plane_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Stored shape without singleton axes (kept 2D: the first axes when more are 1)."""
    kept = tuple(s for s in shape if s != 1)
    return kept if len(kept) == 2 else tuple(shape[:2])


def cut(
    x: Image2D, spec: PreprocessSpec
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray], int]:
    """Model input ``(C, S, S)`` of a 2D input, the map of ``(R, S, S)`` outputs back to the
    input's grid ``(R, H, W)``, and the side in pixels of the square crop."""
    if x.volume is None:
        prep = prepare_image(x.data, spec, path=x.where)
        return prep.image, lambda seg: restore_image_mask(seg, prep.restore), prep.restore.box[2]
    # A NIfTI slice is cut as a one-slice volume, so it matches training slices exactly.
    one = dataclasses.replace(spec, min_foreground_fraction=0.0)
    slices = preprocess_volume(x.volume, one, source="volume", all_slices=True)
    meta, axis, shape = x.meta, x.axis, x.volume.image.shape[1:]

    def back(seg: np.ndarray) -> np.ndarray:
        canon = np.moveaxis(restore_volume(seg[None], slices, shape), 3, axis + 1)
        stored = canon if meta is None else to_stored(canon, meta)
        return stored.reshape(seg.shape[0], *plane_shape(stored.shape[1:]))

    return slices.images[0], back, slices.restore.box[2]


# --------------------------------------------------------------------------- 3D inputs


def load_volume(
    case: VolumeInput, spec: PreprocessSpec, *, source: str | None, affine: np.ndarray | None
) -> tuple[LoadedCase, str, str, list[str]]:
    """Read any volume input into a canonical :class:`LoadedCase` with the spec's channels.

    A path is asked of every layout (:func:`tumorscope.data.layout.read_case`): a BraTS or
    HECKTOR case folder, a DICOM series (or a folder of series), an MSD or nnU-Net image
    file; a NIfTI file no layout claims and a multi-frame DICOM file are single volumes; any
    other folder must hold exactly one case. The Modality of DICOM inputs is checked
    against the profile (a warning).

    Returns:
        ``(loaded, source layout, name, warnings)``.
    """
    channels, missing = spec.channels, spec.missing_channels
    if isinstance(case, LoadedCase):
        if case.image.ndim != 4 or case.image.shape[0] != len(channels):
            raise DataError(
                case.meta.path,
                f"image shape {case.image.shape} is not (C={len(channels)}, X, Y, Z)",
            )
        check_volume(case.meta.path, case.image.shape[1:], channels=case.image.shape[0])
        return case, source or "volume", file_stem(case.meta.path), []
    if isinstance(case, np.ndarray):
        loaded, notes = array_volume(case, spec, affine)
        return loaded, source or "volume", "array", notes
    if isinstance(case, Case):
        return (
            load_case(case, channels, missing=missing, with_mask=False),
            case.source,
            case.patient_id,
            [],
        )
    path = Path(case)
    if not (path.exists() or path.is_symlink()):
        raise DataError(path, "no such file or folder")
    if not path.is_dir():
        check_file(path)  # a dangling link, FIFO or device: one line, never a blocking open
        if is_dicom_file(path):
            loaded, notes = dicom_volume(path, spec)
            return loaded, DICOM_SOURCE, file_stem(path), notes
        if not is_nifti_path(path):
            raise DataError(
                path,
                "a volume must be a NIfTI file, a multi-frame DICOM file, a case folder or a "
                "DICOM folder",
            )
    found, problems = read_case(path)
    if found is None and problems:
        raise problems[0]
    if found is None and path.is_file():
        loaded, notes = nifti_volume(path, spec)
        return loaded, source or "volume", file_stem(path), notes
    if found is None:
        cases = discover([path]).cases
        if len(cases) != 1:
            what = f"{len(cases)} cases" if cases else "no case"
            raise DataError(
                path, f"expected one case folder (BraTS, HECKTOR or DICOM series), found {what}"
            )
        found = cases[0]
    headers = [m for p in found.channels.values() if (m := series_modality(p)) is not None]
    fitted, warnings = get_layout(found.source).fit_channels(found, channels)
    name = path.name if path.is_dir() else found.patient_id
    loaded = load_case(fitted, channels, missing=missing, with_mask=False)
    notes = [w for m in dict.fromkeys(headers) for w in modality_warnings(m, spec.profile)]
    return loaded, fitted.source, name, warnings + notes


def single_channel(
    arr: np.ndarray, meta: ImageMeta, spec: PreprocessSpec
) -> tuple[LoadedCase, list[str]]:
    """A one-channel canonical volume placed into the spec's channels."""
    channels = spec.channels
    if len(channels) == 1:
        return LoadedCase(arr[None].astype(np.float32), None, meta, (True,)), []
    if spec.missing_channels != "zero_fill" or IMAGE_CHANNEL not in channels:
        raise DataError(
            meta.path,
            f"volume has 1 channel; the model takes {len(channels)} ({', '.join(channels)}): "
            "pass a case folder",
        )
    k = channels.index(IMAGE_CHANNEL)
    image = np.zeros((len(channels), *arr.shape), dtype=np.float32)
    image[k] = arr
    present = tuple(i == k for i in range(len(channels)))
    return LoadedCase(image, None, meta, present), [f"single volume taken as {IMAGE_CHANNEL}"]


def dicom_volume(path: Path, spec: PreprocessSpec) -> tuple[LoadedCase, list[str]]:
    """A multi-frame DICOM file as a one-channel volume, its Modality checked."""
    arr, meta = read_dicom_frames(path)
    loaded, notes = single_channel(arr, meta, spec)
    return loaded, modality_warnings(header_modality(path), spec.profile) + notes


def nifti_volume(path: Path, spec: PreprocessSpec) -> tuple[LoadedCase, list[str]]:
    arr, meta = read_nifti(path)
    return single_channel(np.asarray(arr, dtype=np.float32), meta, spec)


def array_volume(
    array: np.ndarray, spec: PreprocessSpec, affine: np.ndarray | None
) -> tuple[LoadedCase, list[str]]:
    """``(X, Y, Z)`` / ``(C, X, Y, Z)`` array with a stored-orientation affine → canonical."""
    n_ch = len(spec.channels)
    where = Path("array")
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[0] not in (1, n_ch):
        raise DataError(
            where,
            f"volume of shape {array.shape} is not (X, Y, Z) or (C={n_ch}, X, Y, Z)",
        )
    check_volume(where, a.shape[1:], channels=a.shape[0])
    if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        raise DataError(where, "volume holds NaN, Inf or non-numeric values")
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or abs(float(np.linalg.det(aff[:3, :3]))) < 1e-12:
        raise DataError(where, f"affine must be a non-singular 4×4 matrix, got {aff.tolist()}")
    canon = [to_canonical(np.asarray(c, dtype=np.float32), aff) for c in a]
    canon_affine = canon[0][1]
    meta = ImageMeta(
        path=where,
        shape=tuple(int(s) for s in canon[0][0].shape),
        spacing=tuple(float(v) for v in voxel_sizes(canon_affine)),
        affine=canon_affine,
        orientation=tuple(str(c) for c in aff2axcodes(aff)),
        original_affine=aff,
        original_shape=tuple(int(s) for s in a.shape[1:]),
    )
    if a.shape[0] == 1:
        return single_channel(canon[0][0], meta, spec)
    image = np.stack([c[0] for c in canon]).astype(np.float32)
    return LoadedCase(image, None, meta, (True,) * n_ch), []
