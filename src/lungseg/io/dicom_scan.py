"""Finding DICOM files in a folder tree and grouping them by patient.

:func:`scan_dicom_tree` reads headers only (any layout, any file names, with or
without ``.dcm``). PatientName and other identifiers are never logged or
returned; PatientID is used only to group files into cases.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    MediaStorageDirectoryStorage,
    RTStructureSetStorage,
)

logger = logging.getLogger(__name__)

#: Multi-frame CT SOP classes, which lungseg does not read.
MULTIFRAME_CT = {
    EnhancedCTImageStorage: "Enhanced CT",
    LegacyConvertedEnhancedCTImageStorage: "Legacy Converted Enhanced CT",
}


def multiframe_ct_reason(sop_class: str) -> str:
    """The ``PatientFiles.ignored`` reason recorded for a multi-frame CT file."""
    return (
        f"{MULTIFRAME_CT[sop_class]} (multi-frame, SOP class {sop_class}; not supported: "
        "export the series as single-frame CT Image Storage)"
    )


@dataclass(frozen=True)
class DicomFile:
    """One DICOM file found by :func:`scan_dicom_tree`.

    Attributes:
        path: Absolute path of the file.
        rel: Path relative to the scanned root (POSIX form), used in messages.
        header: Dataset read with ``stop_before_pixels=True``.
    """

    path: Path
    rel: str
    header: Dataset


@dataclass
class PatientFiles:
    """The DICOM files of one patient (one case).

    Attributes:
        patient_id: PatientID as found in the files (may be empty).
        ct: CT Image Storage files with Modality CT.
        rtstructs: RT Structure Set Storage files.
        ignored: Reason -> number of other files of this patient that were ignored.
        errors: Problems with files that claim to be DICOM but cannot be read.
    """

    patient_id: str
    ct: list[DicomFile] = field(default_factory=list)
    rtstructs: list[DicomFile] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)




def _claims_dicom(path: Path) -> bool:
    """True when the file has the "DICM" marker after a 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def sop_class_uid(ds: Dataset) -> str:
    """SOPClassUID, else the file meta's MediaStorageSOPClassUID (``""`` when neither is set)."""
    uid = ds.get("SOPClassUID")
    if not uid and getattr(ds, "file_meta", None) is not None:  # absent, or present but empty (seen in real exports)
        uid = ds.file_meta.get("MediaStorageSOPClassUID")
    return str(uid) if uid is not None else ""


def sop_instance_uid(ds: Dataset) -> str:
    """SOPInstanceUID, else the file meta's MediaStorageSOPInstanceUID (anonymised exports blank the former)."""
    uid = ds.get("SOPInstanceUID")
    if not uid and getattr(ds, "file_meta", None) is not None:
        uid = ds.file_meta.get("MediaStorageSOPInstanceUID")
    return str(uid) if uid else ""


def _patient_id_only(path: Path) -> str | None:
    """Best-effort PatientID of a file whose full header cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"], force=True)
        pid = ds.get("PatientID")
    except Exception:  # noqa: BLE001 - any failure just means "unknown"
        return None
    return str(pid).strip() if pid else None


def scan_dicom_tree(root: Path, exclude: Sequence[Path] = ()) -> dict[str, PatientFiles]:
    """Find the DICOM files under ``root`` and group them by PatientID.

    Files that are not DICOM (no "DICM" marker and pydicom cannot parse a
    SOPClassUID) are ignored with a debug message. A file with the "DICM"
    marker that cannot be read is recorded in ``errors`` of its patient (found
    from a partial read, else from the other files in its folder; failing both
    it becomes its own entry keyed by its relative path).

    Args:
        root: Folder to scan recursively.
        exclude: Folders below ``root`` to leave out (e.g. an output folder).

    Returns:
        PatientID -> files, in sorted PatientID order; a missing PatientID is ``""``.
    """
    root = Path(root)
    excluded = [Path(p).resolve() for p in exclude]
    patients: dict[str, PatientFiles] = {}
    unattributed: list[tuple[Path, str, str]] = []  # (path, rel, problem)
    folder_patients: dict[Path, set[str]] = {}

    def patient(pid: str) -> PatientFiles:
        return patients.setdefault(pid, PatientFiles(patient_id=pid))

    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        resolved = path.resolve()
        if any(resolved.is_relative_to(e) for e in excluded):
            continue
        rel = path.relative_to(root).as_posix()
        claims = _claims_dicom(path)
        problem = None
        try:
            with warnings.catch_warnings():
                if not claims:
                    warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=not claims)
        except Exception as e:  # noqa: BLE001 - pydicom raises many types for bad files
            ds, problem = None, f"unreadable DICOM file {rel} ({type(e).__name__}: {e})"
        if ds is not None and sop_class_uid(ds) == MediaStorageDirectoryStorage:
            logger.debug("ignoring %s: DICOMDIR", rel)
            continue
        if ds is not None and ("SOPClassUID" not in ds or "SOPInstanceUID" not in ds):
            problem = f"incomplete DICOM file {rel} (no SOPClassUID/SOPInstanceUID; truncated?)"
        if problem is not None:
            if not claims:
                logger.debug("ignoring %s: not a DICOM file", rel)
                continue
            pid = _patient_id_only(path)
            if pid is None:
                unattributed.append((path, rel, problem))
            else:
                patient(pid).errors.append(problem)
            continue
        assert ds is not None
        sop_class = sop_class_uid(ds)
        pid = str(ds.get("PatientID", "") or "").strip()
        folder_patients.setdefault(path.parent, set()).add(pid)
        entry = patient(pid)
        modality = str(ds.get("Modality", "")).upper()
        item = DicomFile(path=path, rel=rel, header=ds)
        if sop_class == CTImageStorage and modality == "CT":
            entry.ct.append(item)
        elif sop_class == RTStructureSetStorage:
            entry.rtstructs.append(item)
        elif sop_class in MULTIFRAME_CT:
            entry.ignored[multiframe_ct_reason(sop_class)] += 1
            logger.debug("ignoring %s: %s (multi-frame) is not supported", rel, MULTIFRAME_CT[sop_class])
        else:
            entry.ignored[f"{modality or 'unknown modality'} (SOP class {sop_class})"] += 1
            logger.debug("ignoring %s: modality %s, SOP class %s", rel, modality, sop_class)

    for path, rel, problem in unattributed:
        owners = folder_patients.get(path.parent, set())
        if len(owners) == 1:
            patient(next(iter(owners))).errors.append(problem)
        else:
            patient(rel).errors.append(problem)
    return dict(sorted(patients.items()))


def folder_state(folder: Path) -> tuple | None:
    """Path, size, modification time and inode of every file under ``folder`` (None: not a folder, or a
    file vanished while listing): equal states mean an unchanged folder."""
    state: list[tuple] = []
    try:
        for root, _, names in os.walk(folder):
            for name in names:
                st = os.stat(os.path.join(root, name))
                state.append((root, name, st.st_size, st.st_mtime_ns, st.st_ino))
        return (str(folder.resolve()), *sorted(state)) if folder.is_dir() else None
    except OSError:
        return None
