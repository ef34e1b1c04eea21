"""Helpers shared by the DICOM tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1


def set_dicom_attrs(path: Path, **attrs) -> None:
    """Rewrite a DICOM file with some attributes changed (to build bad inputs)."""
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, v in attrs.items():
            setattr(ds, k, v)
        ds.save_as(path)


def encode_jpeg_lossless(image: np.ndarray, precision: int) -> bytes:
    """Encode one grey image as a JPEG Lossless codestream (process 14, selection value 1).

    pydicom has no encoder for this transfer syntax, so the tests carry this small one:
    predictor 1 (the left neighbour; the row above in column 0; ``2**(precision-1)`` for
    the first pixel), point transform 0, one Huffman table giving each of the 17
    difference categories a 5-bit code.

    Args:
        image: Unsigned sample values ``(rows, columns)`` below ``2**precision``.
        precision: Bits per sample (2..16), the DICOM BitsStored.
    """
    img = np.asarray(image, dtype=np.int64)
    rows, cols = img.shape
    pred = np.empty_like(img)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = img[0, :-1]
    pred[1:, 0] = img[:-1, 0]
    pred[1:, 1:] = img[1:, :-1]
    diff = (img - pred) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff)  # -32767..32768, as T.81 H.1.2.1 defines it
    bits = []
    for d in diff.ravel().tolist():
        ssss = 16 if d == 32768 else abs(d).bit_length()
        bits.append(format(ssss, "05b"))  # canonical Huffman code of symbol s (all length 5) is s
        if 0 < ssss < 16:
            bits.append(format((d if d > 0 else d - 1) & ((1 << ssss) - 1), f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    scan = bytearray()
    for n in range(0, len(stream), 8):
        scan.append(int(stream[n : n + 8], 2))
        if scan[-1] == 0xFF:
            scan.append(0x00)  # byte stuffing

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    sof3 = bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    dht = bytes([0x00]) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # one component, table 0, Ss=predictor 1, Se=0, Ah/Al=0
    header = segment(0xC3, sof3) + segment(0xC4, dht) + segment(0xDA, sos)
    return b"\xff\xd8" + header + bytes(scan) + b"\xff\xd9"  # SOI ... EOI


def compress_series(folder: Path, transfer_syntax: str) -> None:
    """Rewrite every DICOM file in ``folder`` with its pixel data compressed losslessly.

    RLE, JPEG-LS and JPEG 2000 go through pydicom's own encoders
    (:meth:`pydicom.dataset.Dataset.compress`); JPEG Lossless SV1 through
    :func:`encode_jpeg_lossless`. SOP Instance UIDs are kept.
    """
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        ds = pydicom.dcmread(path)
        if transfer_syntax == JPEGLosslessSV1:
            stored = ds.pixel_array.astype(np.int64) & ((1 << ds.BitsStored) - 1)  # two's complement bits
            ds.PixelData = encapsulate([encode_jpeg_lossless(stored, int(ds.BitsStored))])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        else:
            ds.compress(transfer_syntax, generate_instance_uid=False)
        ds.save_as(path, enforce_file_format=True)
