"""Reading and writing scans and masks: voxel grids and world geometry, NIfTI, DICOM series
selection and reading, RTSTRUCT reading, DICOM SEG / RTSTRUCT / CT writing, ingest of raw
cohorts into canonical NIfTI cases, and the train/validation/test split.

Imports no other lungseg package except the shared basics (config, errors, fileio, morphology).
"""
