"""Helpers shared by the DICOM tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom


def set_dicom_attrs(path: Path, **attrs) -> None:
    """Rewrite a DICOM file with some attributes changed (to build bad inputs)."""
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, v in attrs.items():
            setattr(ds, k, v)
        ds.save_as(path)
