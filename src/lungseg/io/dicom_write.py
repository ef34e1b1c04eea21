"""Deterministic writing of DICOM files: UIDs, the patient/study/series modules, CT series (RTSTRUCT: :mod:`lungseg.io.rtstruct_write`).

Nothing here reads the clock or draws random numbers: every UID is passed in
or derived from strings with :func:`make_uid`, so the same inputs always give
byte-identical files. Volumes follow the lungseg convention (see
:mod:`lungseg.io.geometry`): arrays are indexed ``[i, j, k]`` = ``[column,
row, slice]`` on the grid described by a :class:`~lungseg.io.geometry.Geometry`
(world coordinates LPS mm).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from lungseg.io.geometry import Geometry

logger = logging.getLogger(__name__)

#: Root of every UID made by :func:`make_uid` (pydicom's documented example root).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."
_IMPLEMENTATION_VERSION = "LUNGSEG_0_1"

def make_uid(*parts: str) -> str:
    """Return a valid DICOM UID derived only from ``parts`` (same parts, same UID).

    Args:
        *parts: One or more strings identifying the object, e.g.
            ``("synthetic", "LCTSC-001", "ct-series")``.
    """
    if not parts:
        raise ValueError("make_uid needs at least one string part")
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(p) for p in parts]))


_IMPLEMENTATION_UID = make_uid("lungseg", "implementation-class")


@dataclass(frozen=True, kw_only=True)
class StudyInfo:
    """Patient/study attributes shared by the CT series and its RTSTRUCT.

    All fields are keyword-only. ``patient_name`` is written to the files but is
    never read back or logged by lungseg.
    """

    patient_id: str
    patient_name: str = "ANONYMOUS"
    study_uid: str
    frame_of_reference_uid: str
    study_date: str = "20170101"
    study_time: str = "120000"
    study_description: str = "CT THORAX"
    manufacturer: str = "lungseg-synthetic"
    manufacturer_model_name: str = "lungseg-synthetic"
    patient_birth_date: str = ""
    patient_sex: str = "O"
    study_id: str = "1"
    accession_number: str = ""
    referring_physician_name: str = ""
    body_part_examined: str = "CHEST"


def _ds(value: float) -> str:
    """Format a number as a DICOM DS string (at most 16 characters)."""
    return format_number_as_ds(float(value) + 0.0)


def file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    return meta


def patient_study(ds: Dataset, study: StudyInfo) -> None:
    """Fill the Patient, General Study and General Equipment modules."""
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession_number
    ds.ReferringPhysicianName = study.referring_physician_name
    ds.StudyDescription = study.study_description
    ds.Manufacturer = study.manufacturer
    ds.ManufacturerModelName = study.manufacturer_model_name


def patient_study_series(ds: Dataset, study: StudyInfo, modality: str, series_uid: str, number: int) -> None:
    """Fill the Patient, General Study, General Equipment and General Series modules."""
    patient_study(ds, study)
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(number)
    ds.SeriesDate = study.study_date
    ds.SeriesTime = study.study_time


def save_dataset(ds: Dataset, path: Path) -> None:
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _pixel_format(stored: np.ndarray) -> tuple[int, int, np.dtype, int, int]:
    """Choose (BitsStored, PixelRepresentation, dtype, lo, hi) that fits ``stored``."""
    lo, hi = (float(stored.min()), float(stored.max())) if stored.size else (0.0, 0.0)
    if lo >= 0:
        bits = 12 if hi <= 4095 else 16
        return bits, 0, np.dtype("<u2"), 0, 65535
    return 16, 1, np.dtype("<i2"), -32768, 32767


def write_ct_series(
    hu: np.ndarray,
    geometry: Geometry,
    out_dir: Path,
    study: StudyInfo,
    series_uid: str,
    *,
    series_number: int = 2,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    rescale_intercept: float = -1024.0,
    rescale_slope: float = 1.0,
    kvp: float = 120.0,
    convolution_kernel: str = "STANDARD",
    window: tuple[float, float] = (-600.0, 1500.0),
    series_description: str = "CT THORAX",
    file_name: Callable[[int], str] = lambda k: f"1-{k + 1:03d}.dcm",
) -> list[str]:
    """Write a volume as one CT Image Storage file per slice.

    Stored pixel values are ``round((hu - intercept) / slope)``, clipped to the
    16-bit range chosen to fit them (unsigned with BitsStored 12 or 16 when all
    values are >= 0, else signed 16-bit). SOPInstanceUIDs are derived from
    ``series_uid`` and the slice index.

    Args:
        hu: Hounsfield units, float or int array ``[i, j, k]`` with shape
            ``geometry.shape`` (columns, rows, slices); slice ``k`` is written
            transposed as the DICOM pixel matrix (rows, columns).
        geometry: Grid of ``hu``; voxel ``(0, 0, k)`` gives ImagePositionPatient
            of slice ``k``, direction columns i and j give ImageOrientationPatient.
        out_dir: Folder for the files (created if missing).
        study: Patient/study attributes.
        series_uid: SeriesInstanceUID of the CT series.
        series_number: SeriesNumber.
        image_type: ImageType values.
        rescale_intercept: RescaleIntercept (HU = stored * slope + intercept).
        rescale_slope: RescaleSlope.
        kvp: KVP.
        convolution_kernel: ConvolutionKernel.
        window: (WindowCenter, WindowWidth) in HU.
        series_description: SeriesDescription.
        file_name: Maps slice index ``k`` to the file name inside ``out_dir``.

    Returns:
        The SOPInstanceUIDs of the written slices, in ``k`` order.
    """
    hu = np.asarray(hu)
    if hu.shape != tuple(geometry.shape):
        raise ValueError(f"hu shape {hu.shape} does not match geometry shape {geometry.shape}")
    if rescale_slope == 0:
        raise ValueError("rescale_slope must not be 0")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    stored = np.rint((hu.astype(np.float64) - rescale_intercept) / rescale_slope)
    bits, pixel_rep, dtype, lo, hi = _pixel_format(stored)
    stored = np.clip(stored, lo, hi).astype(dtype)

    d = geometry.direction_matrix
    n_i, n_j, n_k = geometry.shape
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    patient_study_series(ds, study, "CT", series_uid, series_number)
    ds.SeriesDescription = series_description
    ds.BodyPartExamined = study.body_part_examined
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ContentDate = study.study_date
    ds.ContentTime = study.study_time
    ds.AcquisitionNumber = 1
    ds.ImageType = list(image_type)
    ds.KVP = _ds(kvp)
    ds.ConvolutionKernel = convolution_kernel
    ds.SliceThickness = _ds(geometry.spacing_mm[2])
    ds.SpacingBetweenSlices = _ds(geometry.spacing_mm[2])
    ds.ImageOrientationPatient = [_ds(v) for v in (*d[:, 0], *d[:, 1])]
    ds.PixelSpacing = [_ds(geometry.spacing_mm[1]), _ds(geometry.spacing_mm[0])]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = n_j
    ds.Columns = n_i
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = pixel_rep
    ds.RescaleIntercept = _ds(rescale_intercept)
    ds.RescaleSlope = _ds(rescale_slope)
    ds.RescaleType = "HU"
    ds.WindowCenter = _ds(window[0])
    ds.WindowWidth = _ds(window[1])

    uids = []
    for k in range(n_k):
        sop_uid = make_uid(series_uid, "slice", str(k))
        ipp = geometry.voxel_to_lps(np.array([0.0, 0.0, float(k)]))
        ds.file_meta = file_meta(CTImageStorage, sop_uid)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in ipp]
        ds.SliceLocation = _ds(ipp[2])
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        save_dataset(ds, out_dir / file_name(k))
        uids.append(sop_uid)
    logger.debug("wrote %d CT slices to %s", n_k, out_dir)
    return uids
